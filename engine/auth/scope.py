"""Roles and record scope: which operations a user may call, and which records they may see.

Operations (what a role may call at all) are a table, ``PERMISSIONS``; records (which customers,
instances and tasks) are SQL conditions, so lists are filtered in the query and a single record
outside the scope is reported as not found.

Record scope:

* ``admin`` sees everything.
* A customer is *managed* by its owner (``customer.owner``) and, for a ``team_lead``, by the
  lead when the owner is in the lead's team (users with the same ``team``).
* A task is *own* for its assignee, whoever completed it, every holder of its role while it is
  open and unclaimed, and for a ``team_lead`` or ``service_lead`` when the assignee (or
  completer) is in their team. A task is *visible* when it is own or its instance's customer is managed.
* An instance is visible to whoever started it, when its customer is managed, or when one of its
  tasks is own.
* A customer is visible when managed, or when one of its instances has a task that is own (a
  service agent sees the customer of the complaint they handle). Only managed customers can be
  changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import false, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from engine.store.models import Customer, Instance, Task, User

ADMIN = "admin"
DESIGNER = "designer"
#: Roles that serve customers: they enter forms, start flows and keep customer records.
STAFF = frozenset({"admin", "account_manager", "team_lead", "service_agent", "service_lead"})
LEADS = frozenset({"team_lead", "service_lead"})
ANY = frozenset({"*"})

#: operation -> (token scope it needs, roles that may call it; "*" = any active user).
PERMISSIONS: dict[str, tuple[str, frozenset[str]]] = {
    "me.read": ("read", ANY),
    "flows.read": ("read", ANY),
    "flows.deploy": ("write", frozenset({ADMIN, DESIGNER})),
    "forms.read": ("read", ANY),
    "forms.submit": ("write", STAFF),
    "instances.read": ("read", ANY),
    "instances.start": ("write", STAFF | {DESIGNER}),
    "instances.cancel": ("write", STAFF | {DESIGNER}),
    "instances.event": ("write", STAFF | {DESIGNER}),
    "instances.link": ("write", STAFF | {DESIGNER}),
    "tasks.read": ("read", ANY),
    "tasks.work": ("write", ANY),
    "tasks.comment": ("write", ANY),
    "customers.read": ("read", STAFF),
    "customers.create": ("write", STAFF),
    "customers.update": ("write", STAFF),
    "customers.delete": ("write", frozenset({ADMIN})),
    "customers.import": ("write", frozenset({ADMIN})),  # an import may merge into any customer
    "customers.imports": ("read", frozenset({ADMIN})),
    "users.admin": ("admin", frozenset({ADMIN})),
    "tokens.admin": ("admin", frozenset({ADMIN})),
    "audit.read": ("admin", frozenset({ADMIN})),
    "incidents.admin": ("admin", frozenset({ADMIN})),
    "webhooks.admin": ("admin", frozenset({ADMIN})),
    "connectors.admin": ("admin", frozenset({ADMIN})),
    "segments.read": ("read", STAFF | {DESIGNER}),
    "segments.manage": ("write", frozenset({ADMIN, DESIGNER})),
    "segments.recompute": ("write", frozenset({ADMIN})),
    "reports.read": ("read", STAFF | {DESIGNER}),
}


@dataclass(frozen=True)
class Principal:
    """The acting user as the API sees them: roles, team, and the scopes of the token used."""

    username: str
    roles: frozenset[str]
    team: str | None = None
    region: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"read", "write", "admin"}))
    token_id: int | None = None

    @classmethod
    def of(cls, user: User, scopes: Iterable[str] | None = None, token_id: int | None = None) -> Principal:
        return cls(
            username=user.username,
            roles=frozenset(user.roles or []),
            team=user.team,
            region=user.region,
            scopes=frozenset(scopes) if scopes is not None else frozenset({"read", "write", "admin"}),
            token_id=token_id,
        )

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    @property
    def leads_team(self) -> bool:
        return bool(self.team) and bool(self.roles & LEADS)

    @property
    def manages_team(self) -> bool:
        return bool(self.team) and "team_lead" in self.roles


def role_allows(principal: Principal, operation: str) -> bool:
    _scope, roles = PERMISSIONS[operation]
    return "*" in roles or bool(principal.roles & roles)


def scope_allows(principal: Principal, operation: str) -> bool:
    return PERMISSIONS[operation][0] in principal.scopes


def _team(principal: Principal) -> Any:
    return select(User.username).where(User.team == principal.team).scalar_subquery()


def managed_customers(principal: Principal) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    conds = [Customer.owner == principal.username]
    if principal.manages_team:
        conds.append(Customer.owner.in_(_team(principal)))
    return or_(*conds)


def own_tasks(principal: Principal) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    conds: list[ColumnElement[bool]] = [Task.assignee == principal.username, Task.completed_by == principal.username]
    if principal.roles:
        conds.append((Task.status == "open") & Task.assignee.is_(None) & Task.role.in_(sorted(principal.roles)))
    if principal.leads_team:
        team = _team(principal)
        conds += [Task.assignee.in_(team), Task.completed_by.in_(team)]
    return or_(*conds)


def visible_tasks(principal: Principal) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    managed = select(Customer.id).where(managed_customers(principal))
    on_managed = select(Instance.id).where(Instance.customer_id.in_(managed))
    return or_(own_tasks(principal), Task.instance_id.in_(on_managed))


def visible_instances(principal: Principal) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    managed = select(Customer.id).where(managed_customers(principal))
    with_own_task = select(Task.instance_id).where(own_tasks(principal))
    return or_(Instance.started_by == principal.username, Instance.customer_id.in_(managed), Instance.id.in_(with_own_task))


def visible_customers(principal: Principal) -> ColumnElement[bool]:
    if principal.is_admin:
        return true()
    if not principal.roles & STAFF:
        return false()
    served = (
        select(Instance.customer_id)
        .join(Task, Task.instance_id == Instance.id)
        .where(Instance.customer_id.is_not(None), own_tasks(principal))
    )
    return or_(managed_customers(principal), Customer.id.in_(served))


def may_own(principal: Principal, owner: str | None, team_of_owner: str | None) -> bool:
    """Whether principal may make owner the customer's account manager."""
    if principal.is_admin or owner is None or owner == principal.username:
        return True
    return principal.manages_team and team_of_owner == principal.team

"""Customers: create, list and search, read, change, delete, timeline."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g
from sqlalchemy import or_, select

from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import ApiError, forbidden
from engine.api.present import customer_out, page, paged, timeline_dict, visible_customer
from engine.api.schemas import (
    EXAMPLES,
    CustomerIn,
    CustomerOut,
    CustomerPatch,
    CustomerQuery,
    DeletedOut,
    PageQuery,
    TimelineOut,
    page_of,
)
from engine.auth.scope import Principal, managed_customers, may_own, visible_customers
from engine.core import DELETED
from engine.store.models import Customer, TimelineEntry, User

bp = APIBlueprint("customers", __name__, url_prefix="/api/customers", tag="Customers")


def _engine_values(body: dict[str, Any]) -> dict[str, Any]:
    """The API body as the engine takes it: custom attributes alongside the profile fields."""
    values = {k: v for k, v in body.items() if k != "attributes"}
    values.update(body.get("attributes") or {})
    return values


def _check_owner(s: Any, who: Principal, owner: str | None) -> None:
    if owner is None:
        return
    user = s.scalars(select(User).where(User.username == owner)).first()
    if user is None:
        raise ApiError(422, "validation_failed", details=[
            {"path": "$.owner", "field": "owner", "message": f"no user named {owner!r}", "code": "unknown_user"}])
    if not may_own(who, owner, user.team):
        raise forbidden("owner_not_allowed")


def _read(customer_id: int) -> dict[str, Any]:
    with careflow().session() as s:
        customer = s.get(Customer, customer_id)
        assert customer is not None
        return customer_out(customer)


def _managed(s: Any, who: Principal, customer_id: int) -> Customer:
    customer = visible_customer(s, who, customer_id)
    if s.scalars(select(Customer.id).where(Customer.id == customer_id, managed_customers(who))).first() is None:
        raise forbidden()
    return customer


@bp.post("")
@bp.auth_required(token_auth)
@bp.input(CustomerIn, arg_name="body", example=EXAMPLES[CustomerIn])
@bp.output(CustomerOut, status_code=201)
@bp.doc(responses={409: "Another customer has this phone or e-mail"})
@requires("customers.create")
def create_customer(body: dict[str, Any]) -> Any:
    """Create a customer; an account manager becomes its owner unless another is given."""
    who: Principal = g.principal
    values = _engine_values(body)
    if values.get("owner") is None and "account_manager" in who.roles and not who.is_admin:
        values["owner"] = who.username
    with careflow().session() as s:
        _check_owner(s, who, values.get("owner"))
    customer_id = careflow().create_customer(values, actor=who.username)
    return _read(customer_id), 201


@bp.get("")
@bp.auth_required(token_auth)
@bp.input(CustomerQuery, location="query", arg_name="query")
@bp.output(page_of(CustomerOut))
@requires("customers.read")
def list_customers(query: dict[str, Any]) -> Any:
    """Customers you may see; search by name, phone or e-mail and filter by grade, region, owner."""
    q = select(Customer).where(Customer.status != DELETED, visible_customers(g.principal))
    if query.get("q"):
        term = query["q"].strip()
        q = q.where(or_(Customer.name.icontains(term, autoescape=True), Customer.phone.icontains(term, autoescape=True),
                        Customer.email.icontains(term, autoescape=True)))
    for key in ("grade", "region", "owner", "status"):
        if query.get(key):
            q = q.where(getattr(Customer, key) == query[key])
    with careflow().session() as s:
        rows, total = page(s, q.order_by(Customer.id), query["page"], query["per_page"])
        items = [customer_out(c) for c in rows]
    return paged(items, total, query["page"], query["per_page"])


@bp.get("/<id:customer_id>")
@bp.auth_required(token_auth)
@bp.output(CustomerOut)
@requires("customers.read")
def get_customer(customer_id: int) -> Any:
    """One customer."""
    with careflow().session() as s:
        return customer_out(visible_customer(s, g.principal, customer_id))


@bp.patch("/<id:customer_id>")
@bp.auth_required(token_auth)
@bp.input(CustomerPatch, arg_name="body", example=EXAMPLES[CustomerPatch])
@bp.output(CustomerOut)
@bp.doc(responses={409: "Another customer has this phone or e-mail"})
@requires("customers.update")
def update_customer(customer_id: int, body: dict[str, Any]) -> Any:
    """Change some fields; flows triggered by a changed field start."""
    who: Principal = g.principal
    with careflow().session() as s:
        _managed(s, who, customer_id)
        if "owner" in body:
            _check_owner(s, who, body["owner"])
    careflow().update_customer(customer_id, _engine_values(body), actor=who.username)
    return _read(customer_id)


@bp.delete("/<id:customer_id>")
@bp.auth_required(token_auth)
@bp.output(DeletedOut)
@requires("customers.delete")
def delete_customer(customer_id: int) -> Any:
    """Erase the customer's personal data, cancel their running instances, keep the history."""
    with careflow().session() as s:
        visible_customer(s, g.principal, customer_id)
    return careflow().delete_customer(customer_id, actor=g.principal.username)


@bp.get("/<id:customer_id>/timeline")
@bp.auth_required(token_auth)
@bp.input(PageQuery, location="query", arg_name="query")
@bp.output(page_of(TimelineOut))
@requires("customers.read")
def timeline(customer_id: int, query: dict[str, Any]) -> Any:
    """Every interaction with the customer, newest first."""
    with careflow().session() as s:
        visible_customer(s, g.principal, customer_id)
        q = select(TimelineEntry).where(TimelineEntry.customer_id == customer_id).order_by(TimelineEntry.id.desc())
        rows, total = page(s, q, query["page"], query["per_page"])
        items = [timeline_dict(t) for t in rows]
    return paged(items, total, query["page"], query["per_page"])




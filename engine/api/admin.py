"""Administration: users, API tokens, the audit log, incidents, inbound webhook configuration."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from apiflask import APIBlueprint
from flask import g
from sqlalchemy import select

from engine.api.auth import careflow, requires, token_auth
from engine.api.errors import ApiError, references, text
from engine.auth.users import UserLookupError
from engine.api.present import incident_dict, page, paged
from engine.api.schemas import (
    EXAMPLES,
    AuditOut,
    AuditQuery,
    IncidentOut,
    IncidentQuery,
    TokenCreatedOut,
    TokenIn,
    TokenOut,
    TokenQuery,
    UserIn,
    UserOut,
    UserPatch,
    WebhookCreatedOut,
    WebhookIn,
    WebhookOut,
    page_of,
)
from engine.store.models import Incident

users = APIBlueprint("users", __name__, url_prefix="/api/users", tag="Users")
tokens = APIBlueprint("tokens", __name__, url_prefix="/api/tokens", tag="Tokens")
audit = APIBlueprint("audit", __name__, url_prefix="/api/audit", tag="Audit")
incidents = APIBlueprint("incidents", __name__, url_prefix="/api/incidents", tag="Incidents")
webhooks = APIBlueprint("webhooks", __name__, url_prefix="/api/webhooks", tag="Webhooks")

BLUEPRINTS = (users, tokens, audit, incidents, webhooks)


# ----- users ----------------------------------------------------------------------------------------


@users.get("")
@users.auth_required(token_auth)
@users.output(UserOut(many=True))
@requires("users.admin")
def list_users() -> Any:
    """Every user, active or not."""
    return careflow().users()


@users.post("")
@users.auth_required(token_auth)
@users.input(UserIn, arg_name="body", example=EXAMPLES[UserIn])
@users.output(UserOut, status_code=201)
@users.doc(responses={409: "The user name is taken"})
@requires("users.admin")
def create_user(body: dict[str, Any]) -> Any:
    """Create a user with roles (built-in or custom), team and region; a password enables web sign-in."""
    return careflow().create_user(body, actor=g.principal.username), 201


@users.get("/<username:username>")
@users.auth_required(token_auth)
@users.output(UserOut)
@requires("users.admin")
def get_user(username: str) -> Any:
    """One user."""
    return careflow().user(username)


@users.patch("/<username:username>")
@users.auth_required(token_auth)
@users.input(UserPatch, arg_name="body", example=EXAMPLES[UserPatch])
@users.output(UserOut)
@users.doc(responses={409: "You cannot deactivate yourself or drop your own admin role"})
@requires("users.admin")
def update_user(username: str, body: dict[str, Any]) -> Any:
    """Change roles, team, region, language or password; ``active: false`` deactivates."""
    return careflow().update_user(username, body, actor=g.principal.username)


# ----- tokens ---------------------------------------------------------------------------------------


@tokens.get("")
@tokens.auth_required(token_auth)
@tokens.input(TokenQuery, location="query", arg_name="query")
@tokens.output(TokenOut(many=True))
@requires("tokens.admin")
def list_tokens(query: dict[str, Any]) -> Any:
    """Tokens (never their secret), optionally of one user."""
    return careflow().list_tokens(query.get("user"), include_revoked=query["include_revoked"])


@tokens.post("")
@tokens.auth_required(token_auth)
@tokens.input(TokenIn, arg_name="body", example=EXAMPLES[TokenIn])
@tokens.output(TokenCreatedOut, status_code=201)
@tokens.doc(responses={409: "The user is deactivated", 422: "Invalid body, or no such user"})
@requires("tokens.admin")
def create_token(body: dict[str, Any]) -> Any:
    """A new token for a user; the token text is in this response only."""
    days = body.get("expires_in_days")
    expires = careflow().clock.now() + timedelta(days=days) if days else None
    with references(user=UserLookupError):
        info, secret = careflow().create_token(body["user"], body["scopes"], name=body["name"],
                                               actor=g.principal.username, expires_at=expires)
    return {**info, "token": secret}, 201


@tokens.delete("/<id:token_id>")
@tokens.auth_required(token_auth)
@tokens.output(TokenOut)
@tokens.doc(responses={409: "The token authenticating this request cannot revoke itself"})
@requires("tokens.admin")
def revoke_token(token_id: int) -> Any:
    """Revoke a token; it stops working at once."""
    if token_id == g.principal.token_id:
        raise ApiError(409, "conflict", text("self_revoke"))
    return careflow().revoke_token(token_id, actor=g.principal.username)


# ----- audit ----------------------------------------------------------------------------------------


@audit.get("")
@audit.auth_required(token_auth)
@audit.input(AuditQuery, location="query", arg_name="query")
@audit.output(page_of(AuditOut))
@requires("audit.read")
def list_audit(query: dict[str, Any]) -> Any:
    """The audit log, newest first, filtered by actor, action (or ``area.`` prefix), target and time."""
    per_page, page_no = query["per_page"], query["page"]
    filters = {k: query[k] for k in ("actor", "action", "target_type", "target_id", "since", "until") if k in query}
    items, total = careflow().audit_entries(**filters, offset=(page_no - 1) * per_page, limit=per_page)
    return paged(items, total, page_no, per_page)


# ----- incidents ------------------------------------------------------------------------------------


@incidents.get("")
@incidents.auth_required(token_auth)
@incidents.input(IncidentQuery, location="query", arg_name="query")
@incidents.output(page_of(IncidentOut))
@requires("incidents.admin")
def list_incidents(query: dict[str, Any]) -> Any:
    """Failed steps and deliveries, newest first."""
    q = select(Incident).order_by(Incident.id.desc())
    if query["status"] != "all":
        q = q.where(Incident.status == query["status"])
    with careflow().session() as s:
        rows, total = page(s, q, query["page"], query["per_page"])
        items = [incident_dict(i) for i in rows]
    return paged(items, total, query["page"], query["per_page"])


def _resolve(incident_id: int, action: str) -> dict[str, Any]:
    with careflow().session() as s:
        incident = s.get(Incident, incident_id)
        if incident is None:
            from engine.api.errors import not_found

            raise not_found("incident", incident_id)
        if incident.status != "open":
            raise ApiError(409, "conflict", f"incident {incident_id} is {incident.status}")
    careflow().resolve_incident(incident_id, action, g.principal.username)
    with careflow().session() as s:
        row = s.get(Incident, incident_id)
        assert row is not None
        return incident_dict(row)


@incidents.post("/<id:incident_id>/retry")
@incidents.auth_required(token_auth)
@incidents.output(IncidentOut)
@incidents.doc(responses={409: "The incident is already resolved"})
@requires("incidents.admin")
def retry_incident(incident_id: int) -> Any:
    """Run the failed step again (a failed delivery is re-sent)."""
    return _resolve(incident_id, "retry")


@incidents.post("/<id:incident_id>/skip")
@incidents.auth_required(token_auth)
@incidents.output(IncidentOut)
@incidents.doc(responses={409: "The incident is already resolved"})
@requires("incidents.admin")
def skip_incident(incident_id: int) -> Any:
    """Give up on the failed step and continue after it."""
    return _resolve(incident_id, "skip")


# ----- webhooks (configuration) -------------------------------------------------------------------


@webhooks.get("")
@webhooks.auth_required(token_auth)
@webhooks.output(WebhookOut(many=True))
@requires("webhooks.admin")
def list_webhooks() -> Any:
    """Configured inbound webhooks (never their secret)."""
    return careflow().webhooks()


@webhooks.post("")
@webhooks.auth_required(token_auth)
@webhooks.input(WebhookIn, arg_name="body", example=EXAMPLES[WebhookIn])
@webhooks.output(WebhookCreatedOut, status_code=201)
@webhooks.doc(responses={409: "The name is taken"})
@requires("webhooks.admin")
def create_webhook(body: dict[str, Any]) -> Any:
    """A new inbound webhook at ``/api/hooks/<name>``; the signing secret is in this response only."""
    info, secret = careflow().create_webhook(body["name"], flows=body["flows"], events=body["events"],
                                             actor=g.principal.username)
    return {**info, "secret": secret}, 201


@webhooks.get("/<username:name>")
@webhooks.auth_required(token_auth)
@webhooks.output(WebhookOut)
@requires("webhooks.admin")
def get_webhook(name: str) -> Any:
    """One inbound webhook."""
    return careflow().webhook(name)


@webhooks.delete("/<username:name>")
@webhooks.auth_required(token_auth)
@webhooks.output({}, status_code=204)
@requires("webhooks.admin")
def delete_webhook(name: str) -> Any:
    """Remove a webhook; deliveries to it get 404 from then on."""
    careflow().delete_webhook(name, actor=g.principal.username)
    return "", 204

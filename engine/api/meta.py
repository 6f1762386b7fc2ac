"""Health and who-am-I."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import g
from sqlalchemy import select

from engine.api.auth import careflow, requires, token_auth
from engine.api.schemas import HealthOut, MeOut

bp = APIBlueprint("meta", __name__, url_prefix="/api", tag="Health")


@bp.get("/health")
@bp.output(HealthOut)
def health() -> Any:
    """Liveness and database reachability; needs no token."""
    with careflow().session() as s:
        s.execute(select(1))
    return {"status": "ok", "time": careflow().clock.now().isoformat()}


@bp.get("/me")
@bp.auth_required(token_auth)
@bp.output(MeOut)
@requires("me.read")
def me() -> Any:
    """The user behind the token, their roles and the token's scopes."""
    info = careflow().user(g.principal.username)
    return {**{k: info[k] for k in ("username", "display_name", "roles", "team", "region", "language")},
            "scopes": sorted(g.principal.scopes)}

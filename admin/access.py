"""Who may open an admin page: the REST API's operations and record scope, for a web session.

A signed-in user acts with every token scope (a session is not a token), so only their roles
decide, exactly as ``engine.api.auth.check`` decides for a token with all scopes. Records are
filtered with the same SQL conditions as the API (``engine.auth.scope``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import abort, current_app, g
from flask_login import current_user, login_required

from engine.auth.scope import Principal, role_allows
from engine.core import Careflow

F = TypeVar("F", bound=Callable[..., Any])


def careflow() -> Careflow:
    engine: Careflow = current_app.extensions["careflow"]
    return engine


def principal() -> Principal:
    """The signed-in user as a principal (roles, team, region; all scopes)."""
    if "principal" not in g:
        who = careflow().principal(current_user.username)
        if who is None:  # deactivated since the page before
            abort(403)
        g.principal = who
    found: Principal = g.principal
    return found


def allowed(operation: str) -> bool:
    return current_user.is_authenticated and role_allows(principal(), operation)


def requires(*operations: str) -> Callable[[F], F]:
    """Sign-in, then 403 unless the user's roles allow every one of ``operations``."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            who = principal()
            if not all(role_allows(who, op) for op in operations):
                abort(403)
            return view(*args, **kwargs)

        wrapper._careflow_operations = operations  # type: ignore[attr-defined]
        return login_required(wrapper)  # type: ignore[return-value]

    return decorate

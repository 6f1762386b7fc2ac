"""Bearer-token authentication and per-operation permission checks for the API.

Only ``Authorization: Bearer <token>`` authenticates; the web session cookie is never looked
at, which is why the API can be exempt from CSRF protection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from apiflask import HTTPTokenAuth
from flask import current_app, g

from engine.api.errors import ApiError, forbidden
from engine.auth.scope import PERMISSIONS, Principal, role_allows, scope_allows
from engine.core import Careflow

F = TypeVar("F", bound=Callable[..., Any])

token_auth = HTTPTokenAuth(
    scheme="Bearer",
    description="A personal access token (`cf_…`) an administrator created; scopes read, write, admin.",
)


def careflow() -> Careflow:
    engine: Careflow = current_app.extensions["careflow"]
    return engine


@token_auth.verify_token
def _verify(token: str) -> Principal | None:
    if not token:
        return None
    return careflow().authenticate_token(token)


@token_auth.error_handler
def _auth_error(status: int) -> Any:
    raise ApiError(status)


def principal() -> Principal:
    user = token_auth.current_user
    assert isinstance(user, Principal)
    return user


def check(operation: str, who: Principal | None = None) -> Principal:
    """The acting principal, or 403 if their roles or their token's scopes do not allow operation."""
    who = who or principal()
    scope = PERMISSIONS[operation][0]
    if not scope_allows(who, operation):
        raise forbidden("scope_missing", scope=scope)
    if not role_allows(who, operation):
        raise forbidden()
    return who


def requires(operation: str) -> Callable[[F], F]:
    """Check operation before the view runs; the principal is in ``g.principal``."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            g.principal = check(operation)
            return view(*args, **kwargs)

        wrapper._careflow_operation = operation  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate

"""Fixtures for the REST API: the app on the ``cf`` engine (SQLite and PostgreSQL), a token per
demo user, and a small client that sends them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from engine.app import create_app
from engine.core import Careflow
from engine.demo import DEMO_USERS

SECRET = "test-secret-key"


class Api:
    """``api.get("/api/tasks", as_="wang")``: requests with the user's Bearer token."""

    def __init__(self, client: FlaskClient, tokens: dict[str, str]):
        self.client = client
        self.tokens = tokens

    def request(self, method: str, path: str, *, as_: str | None = "admin", headers: dict[str, str] | None = None,
                lang: str = "en", **kwargs: Any) -> Any:
        sent = {"Accept-Language": lang, **(headers or {})}
        if as_ is not None:
            sent["Authorization"] = f"Bearer {self.tokens[as_]}"
        return self.client.open(path, method=method, headers=sent, **kwargs)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.request("DELETE", path, **kw)


def make_tokens(engine: Careflow, scopes: tuple[str, ...] = ("read", "write")) -> dict[str, str]:
    tokens = {}
    for username, _name, roles, _region, _team in DEMO_USERS:
        chosen = [*scopes, "admin"] if "admin" in roles else list(scopes)
        _info, tokens[username] = engine.create_token(username, chosen, name="tests", actor="system")
    return tokens


@pytest.fixture
def app(cf: Careflow) -> Any:
    return create_app({"TESTING": True, "SECRET_KEY": SECRET}, engine=cf)


@pytest.fixture
def client(app: Any) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tokens(cf: Careflow) -> dict[str, str]:
    return make_tokens(cf)


@pytest.fixture
def api(client: FlaskClient, tokens: dict[str, str]) -> Iterator[Api]:
    yield Api(client, tokens)

"""The admin pages through Flask's test client, on SQLite and PostgreSQL (the ``cf`` fixture)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from engine.app import create_app
from engine.core import Careflow
from tests.integration.test_app import PASSWORD


@pytest.fixture
def app(cf: Careflow) -> Flask:
    return create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf)


def token_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html[:2000]
    return match.group(1)


class Browser:
    """A test client signed in as one user, with the CSRF token of the last page it read."""

    def __init__(self, client: FlaskClient, lang: str = "en"):
        self.client = client
        self.headers = {"Accept-Language": lang}
        self.csrf = ""

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, headers=self.headers, **kwargs)
        if response.mimetype == "text/html":
            found = re.search(r'name="csrf_token" value="([^"]+)"', response.get_data(as_text=True))
            if found:
                self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True, **kwargs: Any) -> Any:
        if csrf and not self.csrf:
            self.get("/login")
        form = {**(data or {}), **({"csrf_token": self.csrf} if csrf else {})}
        return self.client.post(path, data=form, headers=self.headers, **kwargs)

    def text(self, path: str, status: int = 200) -> str:
        response = self.get(path)
        assert response.status_code == status, (path, response.status_code, response.get_data(as_text=True)[:3000])
        return str(response.get_data(as_text=True))


@pytest.fixture
def signed_in(app: Flask) -> Callable[..., Browser]:
    def sign(username: str = "admin", lang: str = "en") -> Browser:
        browser = Browser(app.test_client(), lang)
        page = browser.get("/login").get_data(as_text=True)
        response = browser.client.post("/login", data={"username": username, "password": PASSWORD,
                                                       "csrf_token": token_of(page)}, headers=browser.headers)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        browser.get("/")
        return browser

    return sign

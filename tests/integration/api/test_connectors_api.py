"""Connectors over the API: admins only, secrets in but never out, test send and delivery log."""

from __future__ import annotations

import pytest

from tests.integration.api.conftest import Api
from tests.support.fakes import SecretProvider

KEY = "sk-live-0123456789"


@pytest.fixture
def mail(cf):  # type: ignore[no-untyped-def]
    provider = SecretProvider()
    cf.registry.register(provider)
    return provider


def test_attach_a_provider_and_a_channel_then_test_send(api: Api, mail) -> None:  # type: ignore[no-untyped-def]
    put = api.request("PUT", "/api/connectors/mail-main",
                      json={"type": "fakemail", "settings": {"api_key": KEY, "from_address": "care@example.com"}})
    assert put.status_code == 200, put.get_json()
    assert put.get_json()["settings"] == {"from_address": "care@example.com", "api_key": "••••6789"}
    assert KEY not in api.get("/api/connectors").get_data(as_text=True)
    api.request("PUT", "/api/connectors/email", json={"type": "email", "settings": {"provider": "mail-main"}})
    sent = api.post("/api/connectors/email/test", json={"to": "a@example.com", "text": "你好"})
    assert sent.get_json() == {"status": "sent", "error": None, "provider_ref": "fake-1"}
    assert mail.sent[-1]["to"] == "a@example.com"
    [entry] = api.get("/api/deliveries?status=sent").get_json()
    assert (entry["connector"], entry["channel"]) == ("email", "email")
    types = {t["type"]: t for t in api.get("/api/connector-types").get_json()}
    assert types["smtp"]["settings_schema"]["properties"]["password"]["x-secret"] is True
    assert types["sms"]["message_schema"]["anyOf"] == [{"required": ["text"]}, {"required": ["template_params"]}]
    assert types["email"]["message_schema"]["required"] == ["subject", "text"]
    assert types["feishu"]["named_configurations"] is True and types["preferred"]["named_configurations"] is False


def test_bad_settings_are_field_errors(api: Api, mail) -> None:  # type: ignore[no-untyped-def]
    response = api.request("PUT", "/api/connectors/mail-main", json={"type": "fakemail", "settings": {"api_key": "x"}})
    assert response.status_code == 422
    fields = {d["field"] for d in response.get_json()["error"]["details"]}
    assert {"api_key", "from_address"} <= fields
    bad_name = api.request("PUT", "/api/connectors/Mail", json={"type": "fakemail", "settings": {}})
    assert bad_name.status_code == 422
    unknown = api.request("PUT", "/api/connectors/fax", json={"type": "fax", "settings": {}})
    assert unknown.status_code == 422


@pytest.mark.parametrize("user", ["ops", "wang", "zhao", "chen", "liu"])
def test_only_admins_manage_connectors(api: Api, user: str) -> None:
    assert api.get("/api/connectors", as_=user).status_code == 403
    assert api.request("PUT", "/api/connectors/x", as_=user, json={"type": "email", "settings": {"provider": "y"}}).status_code == 403
    assert api.get("/api/connectors", as_=None).status_code == 401

"""Every connector is registered, satisfies the protocol and declares a usable settings schema."""

from __future__ import annotations

import jsonschema
import pytest

from connectors.base import Connector
from connectors.registry import Registry

CONNECTORS = {
    "smtp": ("email", False, {"password"}),
    "sendgrid": ("email", False, {"api_key"}),
    "twilio_sms": ("sms", False, {"auth_token"}),
    "aliyun_sms": ("sms", False, {"access_key_secret"}),
    "webhook": ("webhook", True, {"secret"}),
    "wecom": ("wecom", False, {"webhook_url"}),
    "dingtalk": ("dingtalk", False, {"webhook_url", "secret"}),
    "feishu": ("feishu", False, {"webhook_url", "secret"}),
}


@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_registered_with_a_valid_schema(name):
    connector = Registry().get(name)
    channel, idempotent, secrets = CONNECTORS[name]
    assert isinstance(connector, Connector)
    assert connector.name == name and connector.channel == channel and connector.idempotent is idempotent
    schema = dict(connector.settings_schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    marked = {k for k, v in schema["properties"].items() if v.get("x-secret")}
    assert marked == secrets
    assert all(schema["properties"][k].get("writeOnly") for k in marked)
    assert set(schema.get("required", [])) <= set(schema["properties"])


@pytest.mark.parametrize("name", sorted(set(CONNECTORS) | {"email", "sms", "preferred", "timeline"}))
def test_declares_a_message_schema_whose_required_parameters_it_lists(name):
    schema = dict(Registry().get(name).message_schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    listed = set(schema["properties"])
    assert set(schema.get("required", [])) <= listed
    assert all(set(branch["required"]) <= listed for branch in schema.get("anyOf", []))
    assert "category" in listed  # every message may be marked marketing


def test_a_class_without_a_message_schema_is_not_a_connector():
    class NoMessages:
        name, channel, idempotent, settings_schema = "nomsg", None, False, {"type": "object"}

        def send(self, message, settings):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(TypeError, match="message_schema"):
        Registry().register(NoMessages)

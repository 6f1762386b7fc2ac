"""``careflow connectors types``: the installed connector types, their settings and message parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from connectors.messages import parameter_names
from connectors.registry import Registry
from engine.cli import State, connectors, guarded


def describe_types(registry: Registry) -> list[dict[str, Any]]:
    configurable = registry.configurable()
    out = []
    for name in sorted(registry.names()):
        connector = registry.get(name)
        out.append({"type": name, "channel": connector.channel, "idempotent": bool(connector.idempotent),
                    "named_configurations": name in configurable,
                    "settings_schema": dict(connector.settings_schema), "message_schema": dict(connector.message_schema)})
    return out


def _parameters(schema: Mapping[str, Any]) -> str:
    """``to* subject* text* html category``: * marks a required parameter, a|b one of several."""
    required = set(schema.get("required") or [])
    choices = [branch["required"][0] for branch in schema.get("anyOf") or [] if set(branch) == {"required"}]
    words = []
    for name in parameter_names(schema):
        if name in required:
            words.append(f"{name}*")
        elif name in choices:
            words.append(f"{name}+")
        else:
            words.append(name)
    if schema.get("additionalProperties") is not False:
        words.append("…")
    return " ".join(words)


def _settings(schema: Mapping[str, Any]) -> str:
    required = set(schema.get("required") or [])
    return " ".join(f"{n}*" if n in required else n for n in parameter_names(schema))


@connectors.command("types")
@click.pass_obj
@guarded
def connectors_types(state: State) -> None:
    """Connector types: their settings and the message parameters flows pass them.

    \b
    name*  required      name+  one of the + parameters is required
    …      any other parameter is allowed (a webhook's payload)
    Flows name a type, or TYPE/NAME for an attached configuration (feishu/care-team).
    """
    rows = describe_types(Registry())  # installed types: no database needed

    def text(items: list[dict[str, Any]]) -> str:
        lines = []
        for t in items:
            named = "TYPE/NAME ok" if t["named_configurations"] else "no named configurations"
            lines.append(f"{t['type']}  (channel {t['channel'] or '-'}; {named})")
            lines.append(f"  message:  {_parameters(t['message_schema'])}")
            settings = _settings(t["settings_schema"]) if t["named_configurations"] else ""
            if settings:
                lines.append(f"  settings: {settings}")
        return "\n".join(lines)

    state.emit(rows, text)

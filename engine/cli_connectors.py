"""``careflow connectors types``: the installed connector types, their settings and message parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from connectors.messages import parameter_names
from connectors.registry import Registry
from engine.cli import State, connectors, guarded, parse_json


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


@connectors.command("reminders")
@click.option("--set", "values", default=None,
              help='Change settings as JSON, e.g. {"base_url": "https://care.example.com", "im": "feishu/care-team", '
                   '"teams": {"north": "wecom/north"}}; null clears one.')
@click.option("--by", default=None, help="Who makes the change (recorded in the audit log).")
@click.pass_obj
@guarded
def connectors_reminders(state: State, values: str | None, by: str | None) -> None:
    """How task reminders and escalations reach employees (e-mail, IM robots, the link's base URL)."""
    engine = state.engine()
    result = engine.set_reminder_settings(parse_json(values, "--set"), by=by) if values else engine.reminder_settings()
    state.emit(result)

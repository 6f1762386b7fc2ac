"""Load a flow: safe YAML with positions → the DSL's JSON Schema → dataclasses → meaning checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from engine.errors import FlowInvalid, Problem
from engine.flow.model import (
    Assignee,
    Case,
    Duration,
    Enrollment,
    Escalation,
    Flow,
    Goal,
    Reminder,
    Step,
    Trigger,
)
from engine.flow.validate import Catalog, check_flow
from engine.flow.yaml_loader import Located, json_path, load_yaml
from engine.problem_text import Text, did_you_mean, schema_text, t


@lru_cache(maxsize=1)
def flow_schema() -> dict[str, Any]:
    """The DSL's JSON Schema (draft-07), shipped in the package."""
    text = resources.files("engine").joinpath("schemas/flow.schema.json").read_text("utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def content_hash(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def load_flow(path: str | Path, catalog: Catalog | None = None) -> Flow:
    """Load and check one flow file; raises FlowInvalid with every problem found."""
    p = Path(path)
    return load_flow_text(p.read_bytes(), str(path), catalog, expected_id=p.stem)


def load_flow_text(
    text: str | bytes,
    source: str,
    catalog: Catalog | None = None,
    *,
    expected_id: str | None = None,
) -> Flow:
    """Parse, check against the schema, build and check the meaning of a flow document."""
    located = load_yaml(text, source, error_cls=FlowInvalid)
    data = located.data
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise FlowInvalid([Problem(source, 1, 1, t("flow.not_mapping", kind=kind))])
    problems = schema_problems(located, source)
    if problems:
        raise FlowInvalid(problems)
    flow = build_flow(located, source)
    problems = check_flow(flow, located, catalog or Catalog())
    if expected_id is not None and flow.id != expected_id:
        line, col = located.position(("id",))
        problems.append(
            Problem(source, line, col, t("flow.id_file_name", id=flow.id, expected=expected_id), "$.id")
        )
    if problems:
        raise FlowInvalid(problems)
    return flow


def schema_problems(located: Located, source: str) -> list[Problem]:
    validator = jsonschema.Draft7Validator(flow_schema())
    problems: dict[tuple[str, int, int], Problem] = {}
    for error in validator.iter_errors(located.data):
        for leaf in _leaves(error):
            problem = _schema_problem(leaf, located, source)
            problems.setdefault((problem.message, problem.line, problem.column), problem)
    return list(problems.values())


def _leaves(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # oneOf/anyOf wrap the useful errors in context; report the most specific ones.
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        return [best] if best is not None else [error]
    return [error]


def _schema_problem(error: jsonschema.ValidationError, located: Located, source: str) -> Problem:
    path = tuple(error.absolute_path)
    line, col = located.position(path)
    message: Text = schema_text(error)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        for key in extras:
            pos = located.key_positions.get((*path, key))
            if pos:
                line, col = pos
            message = t("schema.unknown_key", key=key, hint=did_you_mean(key, allowed))
            path = (*path, key)
            break
    elif error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        message = t("schema.required", key=missing)
    elif error.validator == "enum":
        options = [str(v) for v in error.validator_value]
        hint = did_you_mean(error.instance, options) if isinstance(error.instance, str) else t("hint.none")
        message = t("schema.enum", value=error.instance, options=", ".join(options), hint=hint)
    return Problem(source, line, col, message, json_path(path))


def _text(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"zh": value, "en": value}
    return {k: str(v) for k, v in value.items()}


def _duration(value: Mapping[str, Any] | None) -> Duration | None:
    return Duration.from_mapping(value) if value else None


def build_flow(located: Located, source: str) -> Flow:
    """Build the dataclasses from schema-valid data."""
    data = located.data
    steps: dict[str, Step] = {}
    for index, raw in enumerate(data["steps"]):
        line, col = located.position(("steps", index))
        step = _build_step(raw, line, col, located, index)
        # Duplicates are reported by check_flow; keep the first so positions point at the original.
        steps.setdefault(step.id, step)
    triggers = tuple(
        _build_trigger(raw, located.position(("triggers", i))[0])
        for i, raw in enumerate(data.get("triggers") or [])
    )
    enrollment_raw = data.get("enrollment") or {}
    goal_raw = data.get("goal")
    return Flow(
        id=data["id"],
        name=_text(data["name"]),
        description=_text(data.get("description")),
        steps=steps,
        start=data.get("start") or data["steps"][0]["id"],
        timezone=data.get("timezone", "Asia/Shanghai"),
        triggers=triggers,
        enrollment=Enrollment(
            concurrent=enrollment_raw.get("concurrent", "one_per_customer"),
            reenroll=enrollment_raw.get("reenroll", "always"),
            reenroll_after=_duration(enrollment_raw.get("reenroll_after")),
        ),
        goal=Goal(**goal_raw) if goal_raw else None,
        variables=dict(data.get("variables") or {}),
        source=source,
    )


def _build_step(raw: Mapping[str, Any], line: int, col: int, located: Located, index: int) -> Step:
    kw: dict[str, Any] = {"id": raw["id"], "type": raw["type"], "line": line, "column": col}
    kw["name"] = _text(raw.get("name"))
    for key in ("next", "form", "result", "connector", "default", "until", "event", "on_timeout"):
        if key in raw:
            kw[key] = raw[key]
    for key in ("role", "strategy", "flow", "outcome", "approval"):
        if key in raw:
            kw[key] = raw[key]
    if "wait" in raw and isinstance(raw["wait"], bool):
        kw["wait"] = raw["wait"]
    if raw["type"] == "subflow":
        kw["wait"] = raw.get("wait", True)
    kw["title"] = _text(raw.get("title"))
    kw["timeline"] = _text(raw.get("timeline"))
    for key in ("params", "values", "fields", "data"):
        if key in raw:
            kw[key] = dict(raw[key])
    for key in ("send_back_to", "readonly", "hidden", "branches", "add_tags", "remove_tags"):
        if key in raw:
            kw[key] = tuple(raw[key])
    if "assignee" in raw:
        a = raw["assignee"]
        kw["assignee"] = Assignee(
            role=a.get("role"),
            user=a.get("user"),
            users=tuple(a.get("users", ())),
            expr=a.get("expr"),
            strategy=a.get("strategy", "claim"),
        )
    for key in ("due", "duration", "timeout"):
        if key in raw:
            kw[key] = _duration(raw[key])
    kw["reminders"] = tuple(
        Reminder(offset=Duration.from_mapping(next(iter(r.values()))), before="before" in r)
        for r in raw.get("reminders", ())
    )
    kw["escalation"] = tuple(
        Escalation(after=Duration.from_mapping(e["after"]), to_role=e["to_role"]) for e in raw.get("escalation", ())
    )
    if raw["type"] == "task" and "on_timeout" in raw:
        kw.pop("on_timeout", None)
        kw["timeout_after"] = Duration.from_mapping(raw["on_timeout"]["after"])
        kw["timeout_next"] = raw["on_timeout"]["next"]
    if "retry" in raw:
        kw["max_attempts"] = raw["retry"].get("max_attempts", 5)
        kw["backoff"] = _duration(raw["retry"].get("backoff"))
    kw["cases"] = tuple(
        Case(when=c["when"], next=c["next"], line=located.position(("steps", index, "cases", i, "when"))[0])
        for i, c in enumerate(raw.get("cases", ()))
    )
    return Step(**kw)


def _build_trigger(raw: Mapping[str, Any], line: int) -> Trigger:
    kw = {k: v for k, v in raw.items() if k in Trigger.__dataclass_fields__}
    return Trigger(line=line, **kw)

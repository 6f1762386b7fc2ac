"""Validation of designer text, each problem keyed to the node or edge it belongs to.

Text is checked by the loader of record with the same steps as ``careflow validate`` (safe
YAML, the DSL's JSON Schema, the checks of meaning), so a flow the designer accepts is one the
CLI and the deploy accept. A problem's JSON path (``$.steps[3].cases[0].next``) names the step
by position; the page needs the step id (node) and, for a transition, the edge id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.designer.graph import SOURCE, read, split_step
from engine.errors import FlowInvalid, Problem
from engine.flow.loader import load_flow_text
from engine.flow.validate import Catalog

_PATH_PART = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> list[str | int]:
    """``$.steps[3].next`` -> ['steps', 3, 'next'] (the reverse of yaml_loader.json_path)."""
    parts: list[str | int] = []
    for name, index, quoted in _PATH_PART.findall(path.removeprefix("$")):
        parts.append(name if name else int(index) if index else json.loads(quoted))
    return parts


def offline_catalog() -> Catalog:
    """What ``careflow validate`` knows without a database: built-in forms and flows, connectors, roles."""
    from connectors.registry import Registry
    from engine.core import BUILTIN_FLOWS, BUILTIN_FORMS
    from engine.roles import BUILTIN_ROLES
    from engine.store.definitions import FORM_SUFFIX

    registry = Registry()
    return Catalog(
        forms=frozenset(p.name.removesuffix(FORM_SUFFIX) for p in BUILTIN_FORMS.glob(f"*{FORM_SUFFIX}")),
        connectors=registry.names(),
        roles=BUILTIN_ROLES,
        flows=frozenset(p.stem for p in BUILTIN_FLOWS.glob("*.yaml")),
        message_schemas=registry.message_schemas(),
        configurable=registry.configurable(),
    )


def check(text: str | bytes, catalog: Catalog | None = None, lang: str = "en") -> list[dict[str, Any]]:
    """Every problem of the text as the contract's P objects (empty when the flow is valid)."""
    try:
        load_flow_text(text, SOURCE, catalog if catalog is not None else offline_catalog())
    except FlowInvalid as exc:
        return located(exc.problems, text, lang)
    return []


def located(problems: list[Problem], text: str | bytes, lang: str = "en") -> list[dict[str, Any]]:
    """P objects for problems of ``text``, with the node and edge each belongs to; messages in ``lang``."""
    try:
        data: Mapping[str, Any] | None = read(text).data
    except FlowInvalid:
        data = None
    return [as_p(p, data, lang) for p in problems]


def as_p(problem: Problem, data: Mapping[str, Any] | None, lang: str = "en") -> dict[str, Any]:
    node, edge = place(problem.path, data)
    return {"message": problem.text(lang), "line": problem.line, "column": problem.column, "path": problem.path,
            "node": node, "edge": edge}


def place(path: str, data: Mapping[str, Any] | None) -> tuple[str | None, str | None]:
    """(step id, edge id) a problem at ``path`` belongs to; None where it belongs to neither."""
    parts = parse_path(path or "$")
    steps = data.get("steps") if isinstance(data, Mapping) else None
    if len(parts) < 2 or parts[0] != "steps" or not isinstance(parts[1], int) or not isinstance(steps, list):
        return None, None
    if parts[1] >= len(steps) or not isinstance(steps[parts[1]], dict):
        return None, None
    step = steps[parts[1]]
    sid = step.get("id") if isinstance(step.get("id"), str) else None
    if sid is None:
        return None, None
    rest = parts[2:]
    wanted: tuple[str, int | None] | None = None
    if rest[:1] == ["next"]:
        wanted = ("next", None)
    elif rest[:1] == ["default"]:
        wanted = ("default", None)
    elif rest[:1] == ["cases"] and len(rest) > 1 and isinstance(rest[1], int):
        wanted = ("case", rest[1])
    elif rest[:1] == ["branches"] and len(rest) > 1 and isinstance(rest[1], int):
        wanted = ("branch", rest[1])
    elif rest[:1] == ["send_back_to"] and len(rest) > 1 and isinstance(rest[1], int):
        wanted = ("send_back_to", rest[1])
    elif rest[:1] == ["on_timeout"]:
        wanted = ("on_timeout", None) if isinstance(step.get("on_timeout"), str) else (
            ("timeout_next", None) if rest[1:2] == ["next"] else None)
    if wanted is None:
        return sid, None
    # As drawn: a transition to a missing step is no edge, so its problem is the node's.
    ids = {s["id"] for s in steps if isinstance(s, dict) and isinstance(s.get("id"), str)}
    for t in split_step(step, ids)[1]:
        if (t.kind, t.order) == wanted:
            return sid, t.edge_id
    return sid, None

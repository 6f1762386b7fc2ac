"""A flow as a LogicFlow graph: steps as nodes, transitions as edges with their condition labels.

The graph is built here, on the server, from the flow model, so the browser only draws it
(LogicFlow in silent mode, ``static/js/diagram.js``). Positions come from a layered layout:
a step's row is its distance from the start step, its column its place in that row. The steps an
instance is at are highlighted through ``properties.style``, which LogicFlow's nodes honour.
The layout is the designer's (``engine.designer.layout``), so both pages draw a flow alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask_babel import gettext as _

from engine.designer import layout
from engine.flow.model import Flow, Step
from engine.i18n import localized

#: LogicFlow's built-in node shapes by step type
SHAPES = {"decision": "diamond", "parallel": "diamond", "end": "circle", "wait": "ellipse", "timer": "ellipse"}
CURRENT_STYLE = {"stroke": "#d63384", "strokeWidth": 3, "fill": "#fde2ef"}
DONE_STYLE = {"stroke": "#198754", "fill": "#e8f5ee"}


def transitions(step: Step) -> list[tuple[str, str]]:
    """(target step, label) of every way out of a step, labelled as the flow says."""
    out: list[tuple[str, str]] = []
    if step.type == "decision":
        out += [(case.next, case.when) for case in step.cases]
        if step.default:
            out.append((step.default, _("otherwise")))
    elif step.type == "parallel":
        out += [(branch, "") for branch in step.branches]
    if step.next:
        out.append((step.next, ""))
    if step.timeout_next:
        out.append((step.timeout_next, _("overdue")))
    if step.on_timeout:
        out.append((step.on_timeout, _("timeout")))
    seen: dict[str, str] = {}
    for target, label in out:
        seen.setdefault(target, label)
    return list(seen.items())


def layers(flow: Flow) -> dict[str, tuple[int, int]]:
    """(row, column) of every step: rows by shortest distance from the start step."""
    successors = {step_id: [target for target, _label in transitions(step)] for step_id, step in flow.steps.items()}
    return layout.layers(list(flow.steps), flow.start, successors)


def graph(flow: Flow, current: Iterable[str] = (), visited: Iterable[str] = ()) -> dict[str, Any]:
    """LogicFlow graph data for a flow; ``current`` steps highlighted, ``visited`` ones marked done."""
    at = set(current)
    done = set(visited) - at
    where = layout.positions(layers(flow))
    nodes = []
    for step_id, step in flow.steps.items():
        x, y = where[step_id]
        style = CURRENT_STYLE if step_id in at else DONE_STYLE if step_id in done else {}
        nodes.append({
            "id": step_id,
            "type": SHAPES.get(step.type, "rect"),
            "x": x,
            "y": y,
            "text": str(localized(dict(step.name)) or step_id),
            "properties": {"step": step_id, "kind": step.type, "current": step_id in at, "style": style,
                           **({"r": 30} if step.type == "end" else {})},
        })
    edges = []
    for step_id, step in flow.steps.items():
        for target, label in transitions(step):
            if target in flow.steps:
                edge: dict[str, Any] = {"id": f"{step_id}->{target}", "type": "polyline",
                                        "sourceNodeId": step_id, "targetNodeId": target}
                if label:
                    edge["text"] = label
                edges.append(edge)
    return {"nodes": nodes, "edges": edges, "current": sorted(at)}


def visited_steps(history: Iterable[Any]) -> set[str]:
    """Steps an instance has left, read from its history entries."""
    steps: set[str] = set()
    for entry in history:
        for item in entry.entries or []:
            if isinstance(item, dict):
                step = item.get("step") or item.get("from")
                if isinstance(step, str):
                    steps.add(step)
    return steps

"""YAML text → graph JSON ("G"): steps as nodes, transitions as edges, for LogicFlow on the page.

G is ``{"flow": {top-level keys but steps and layout}, "nodes": [{id, type (shape), x, y, text,
properties: {kind, step}}], "edges": [{id, sourceNodeId, targetNodeId, text, properties: {kind,
when?, order?}}]}``; an edge id is ``SOURCE->TARGET:KIND`` plus ``:N`` for a case, branch or
send-back entry. Node order is step order.

The text is read by the loader of record (``engine.flow.yaml_loader``), so the graph shows
exactly what ``careflow validate`` and the engine see. A flow with problems still becomes a
graph (the page shows the problems on their nodes); only text that cannot be read as a list of
steps with distinct ids is refused with :class:`~engine.errors.FlowInvalid`.

Transitions live only on edges, never in ``properties.step``: drawing or deleting an edge is the
one way to change them. A transition value that is not a step id (``next: 5``, or ``next: typo``
naming no step) stays in ``properties.step`` untouched and draws no edge (an edge to a missing node
breaks the canvas), so even broken flows survive the round trip and validation names the problem
on the node.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from engine.errors import FlowInvalid, Problem
from engine.designer.layout import layered
from engine.flow.yaml_loader import Located, json_path, load_yaml
from engine.problem_text import sane_number, t

#: where problems in designer text say they are
SOURCE = "designer"
#: how far from the origin a node may be drawn
COORDINATE_LIMIT = 10**7

#: LogicFlow's built-in node shapes by step type (rect for the rest)
SHAPES = {"decision": "diamond", "parallel": "diamond", "end": "circle", "wait": "ellipse"}

#: every kind of edge, in the order a step's transitions are written
EDGE_KINDS = ("case", "default", "branch", "timeout_next", "on_timeout", "send_back_to", "next")
#: kinds that are one entry of a list in the YAML (their edge ids carry the position)
ORDERED_KINDS = frozenset({"case", "branch", "send_back_to"})
#: the step keys transitions are written under
TRANSITION_KEYS = ("cases", "default", "branches", "on_timeout", "send_back_to", "next")

EDGE_LABELS: dict[str, dict[str, str]] = {
    "default": {"zh": "否则", "en": "otherwise"},
    "timeout_next": {"zh": "逾期", "en": "overdue"},
    "on_timeout": {"zh": "超时", "en": "timeout"},
    "send_back_to": {"zh": "退回", "en": "send back"},
}


@dataclass(frozen=True, slots=True)
class Transition:
    """One way out of a step, as written in the YAML."""

    source: str
    target: str
    kind: str
    order: int | None = None
    when: Any = None

    @property
    def edge_id(self) -> str:
        base = f"{self.source}->{self.target}:{self.kind}"
        return f"{base}:{self.order}" if self.order is not None else base


def edge_id(source: str, target: str, kind: str, order: int | None = None) -> str:
    return Transition(source, target, kind, order).edge_id


def split_step(step: Mapping[str, Any], steps: Collection[str] | None = None) -> tuple[dict[str, Any], list[Transition]]:
    """(the step's keys except ``id`` and its transitions, its transitions) of one YAML step.

    With ``steps`` (the flow's step ids), a transition to anything else is no transition: it stays
    in the keys, like a value that is no string.
    """
    source = step.get("id")
    rest = {k: v for k, v in step.items() if k != "id"}
    out: list[Transition] = []
    if not isinstance(source, str):
        return rest, out

    def target(value: Any) -> bool:
        return isinstance(value, str) and (steps is None or value in steps)

    cases = rest.get("cases")
    if _all(cases, lambda c: isinstance(c, dict) and set(c) <= {"when", "next"} and target(c.get("next"))):
        out += [Transition(source, c["next"], "case", i, c.get("when")) for i, c in enumerate(cases)]
        del rest["cases"]
    for key, kind in (("default", "default"), ("next", "next")):
        if target(rest.get(key)):
            out.append(Transition(source, rest.pop(key), kind))
    for key, kind in (("branches", "branch"), ("send_back_to", "send_back_to")):
        targets = rest.get(key)
        if _all(targets, target):
            out += [Transition(source, t, kind, i) for i, t in enumerate(targets)]
            del rest[key]
    timeout = rest.get("on_timeout")
    if target(timeout):  # a wait step: where to go when it times out
        out.append(Transition(source, rest.pop("on_timeout"), "on_timeout"))
    elif isinstance(timeout, dict) and target(timeout.get("next")):  # a task: {after, next}
        out.append(Transition(source, timeout["next"], "timeout_next"))
        rest["on_timeout"] = {k: v for k, v in timeout.items() if k != "next"}
    out.sort(key=lambda t: EDGE_KINDS.index(t.kind))
    return rest, out


def _all(value: Any, test: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(test(item) for item in value)


def text_of(value: Any, lang: str) -> str:
    """A label in ``lang`` from a ``{zh, en}`` mapping or a plain string ("" when there is none)."""
    if isinstance(value, dict):
        found = value.get(lang) or value.get("zh") or value.get("en")
        return str(found) if found else ""
    return value if isinstance(value, str) else ""


def read(text: str | bytes) -> Located:
    """Load designer text with the loader of record; FlowInvalid when it is no flow-shaped mapping."""
    located = load_yaml(text, SOURCE, error_cls=FlowInvalid)
    data = located.data
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise FlowInvalid([Problem(SOURCE, 1, 1, t("flow.not_mapping", kind=kind))])
    steps = data.get("steps", [])
    if not isinstance(steps, list):
        line, col = located.position(("steps",))
        raise FlowInvalid([Problem(SOURCE, line, col, t("designer.steps_list"), "$.steps")])
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, step in enumerate(steps):
        sid = step.get("id") if isinstance(step, dict) else None
        line, col = located.position(("steps", i))
        if not isinstance(sid, str) or not sid:
            problems.append(Problem(SOURCE, line, col, t("designer.step_id"), f"$.steps[{i}]"))
        elif sid in seen:
            problems.append(Problem(SOURCE, line, col, t("designer.duplicate_step", id=sid),
                                    f"$.steps[{i}].id"))
        else:
            seen[sid] = i
    layout = data.get("layout")
    if isinstance(layout, dict):
        for sid, point in layout.items():
            # A point the canvas cannot place (.inf, .nan, 1e999) is refused; other shapes are ignored.
            if _is_pair(point) and not all(sane_number(v, COORDINATE_LIMIT) for v in point):
                line, col = located.position(("layout", sid))
                problems.append(Problem(SOURCE, line, col, t("designer.layout_point", id=str(sid), value=repr(point)[:60],
                                                             limit=COORDINATE_LIMIT), json_path(("layout", sid))))
    if problems:
        raise FlowInvalid(problems)
    return located


def transitions(data: Mapping[str, Any]) -> Iterator[Transition]:
    """Every transition of a loaded flow, step by step."""
    for step in data.get("steps") or []:
        yield from split_step(step)[1]


def to_graph(text: str | bytes, lang: str = "zh") -> dict[str, Any]:
    """The graph G of a flow's text (raises FlowInvalid when it cannot be drawn at all)."""
    return graph_of(read(text).data, lang)


def graph_of(data: Mapping[str, Any], lang: str = "zh") -> dict[str, Any]:
    """The graph G of a loaded flow mapping."""
    steps: list[dict[str, Any]] = list(data.get("steps") or [])
    ids = {step["id"] for step in steps}
    split = [(step["id"], *split_step(step, ids)) for step in steps]
    order = [sid for sid, _rest, _out in split]
    start = data.get("start") if isinstance(data.get("start"), str) else (order[0] if order else None)
    successors = {sid: [t.target for t in out] for sid, _rest, out in split}
    where = layered(order, start, successors)
    saved = data.get("layout")
    if isinstance(saved, dict):
        for sid, point in saved.items():
            if sid in where and _is_point(point):
                where[sid] = (round(point[0]), round(point[1]))
    nodes = []
    edges = []
    for sid, rest, out in split:
        kind = rest.get("type")
        x, y = where[sid]
        nodes.append({
            "id": sid,
            "type": SHAPES.get(kind, "rect") if isinstance(kind, str) else "rect",
            "x": x,
            "y": y,
            "text": text_of(rest.get("name"), lang) or sid,
            "properties": {"kind": kind, "step": rest},
        })
        for t in out:
            props: dict[str, Any] = {"kind": t.kind}
            if t.kind == "case":
                props["when"] = t.when
            if t.order is not None:
                props["order"] = t.order
            label = str(t.when) if t.kind == "case" and t.when is not None else EDGE_LABELS.get(t.kind, {}).get(lang, "")
            edges.append({"id": t.edge_id, "type": "polyline", "sourceNodeId": sid, "targetNodeId": t.target,
                          "text": label, "properties": props})
    flow = {k: v for k, v in data.items() if k not in ("steps", "layout")}
    return {"flow": flow, "nodes": nodes, "edges": edges}


def _is_pair(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def _is_point(value: Any) -> bool:
    return _is_pair(value) and all(sane_number(v, COORDINATE_LIMIT) for v in value)

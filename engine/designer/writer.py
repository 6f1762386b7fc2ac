"""Graph JSON → YAML, written into the text the graph was opened from.

ruamel.yaml (round-trip mode) is used here only, on the designer's save path: it keeps comments,
key order, quoting, flow-style maps like ``{zh: .., en: ..}`` and keys this module does not know.
Only values that changed are replaced; steps are added, removed and reordered as the graph says;
transitions are rebuilt from the edges; node positions go into the ``layout:`` block. Saving an
unchanged graph gives the original text back, apart from the ``layout:`` block.

The result is plain text for the loader of record: callers validate it with
``engine.designer.problems.check`` (PyYAML, exactly as ``careflow validate``).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.scalarbool import ScalarBoolean
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)
from ruamel.yaml.tokens import CommentToken

from engine.designer.graph import COORDINATE_LIMIT, EDGE_LABELS, ORDERED_KINDS, TRANSITION_KEYS
from engine.problem_text import render, sane_number, t

MODELINE = "yaml-language-server: $schema=../engine/schemas/flow.schema.json"
#: the order of top-level keys in a new flow (others follow, then steps and layout)
TOP_ORDER = ("id", "name", "description", "timezone", "triggers", "enrollment", "goal", "variables", "start")
#: values under these keys are expressions; new ones are double-quoted, as in the built-in flows
EXPRESSION_KEYS = frozenset({"when", "until", "customers", "expr"})


class GraphInvalid(ValueError):
    """The request's graph is not graph JSON at all (not a flow with problems: those are validated).

    Its one argument is a :class:`~engine.problem_text.Text`: ``reason(lang)`` says it in zh or en.
    """

    def reason(self, lang: str) -> str:
        return render(self.args[0], lang) if self.args else ""


@dataclass
class Written:
    """The new YAML text, and what in the graph could not be written (keyed to its edge or node)."""

    text: str
    notes: list[dict[str, Any]] = field(default_factory=list)


NOTES = {
    "second_edge": {"zh": "步骤 {source} 只能有一条“{kind}”连线，多出的这条没有保存",
                    "en": "step {source} can have only one '{kind}' connection; this one was not saved"},
    "no_source": {"zh": "连线的起点 {source} 不是流程中的步骤，没有保存",
                  "en": "the connection starts at {source}, which is not a step of the flow; it was not saved"},
}


def to_yaml(graph: Any, original: str = "", lang: str = "zh") -> Written:
    """Write graph G into ``original`` (the text it was opened from, or "" for a new flow)."""
    flow, nodes, edges = _check_graph(graph)
    windows = "\r\n" in original
    original = original.replace("\r\n", "\n")
    notes: list[dict[str, Any]] = []
    steps = steps_of(nodes, edges, notes, lang)
    layout = {n["id"]: [round(n.get("x") or 0), round(n.get("y") or 0)] for n in nodes}
    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096  # never fold a long line the author wrote on one
    yaml_rt.allow_unicode = True
    mapping, sequence, offset = indentation(original)
    yaml_rt.indent(mapping=mapping, sequence=sequence, offset=offset)
    root: Any = None
    if original.strip():
        try:
            root = yaml_rt.load(original)
        except YAMLError:
            root = None  # the loader of record could read it; a fresh document loses only comments
    if not isinstance(root, CommentedMap):
        root = _fresh_root()
    _update_root(root, flow, steps, layout)
    out = io.StringIO()
    yaml_rt.dump(root, out)
    text = out.getvalue()
    start = _EXPLICIT_START.match(original)
    if start:  # ruamel drops the `---` line and any comment above it: put them back as written
        text = start.group(0) + text
    if windows:  # a file saved on Windows keeps its line ends
        text = text.replace("\n", "\r\n")
    return Written(text, notes)


_EXPLICIT_START = re.compile(r"(?:[ \t]*(?:#[^\n]*)?\n)*---[ \t]*\n")


def _check_graph(graph: Any) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    if not isinstance(graph, dict):
        raise GraphInvalid(t("designer.graph_object"))
    flow = graph.get("flow") or {}
    nodes = graph.get("nodes") or []
    edges = graph.get("edges") or []
    if not isinstance(flow, dict) or not isinstance(nodes, list) or not isinstance(edges, list):
        raise GraphInvalid(t("designer.graph_parts"))
    seen: set[str] = set()
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str) or not node["id"]:
            raise GraphInvalid(t("designer.node_id", i=i))
        if node["id"] in seen:
            raise GraphInvalid(t("designer.node_twice", i=i, id=node["id"]))
        seen.add(node["id"])
        props = node.get("properties") or {}
        if not isinstance(props, dict) or not isinstance(props.get("step") or {}, dict):
            raise GraphInvalid(t("designer.node_step", i=i))
        for key in ("x", "y"):
            value = node.get(key)
            if value is not None and not sane_number(value, COORDINATE_LIMIT):
                raise GraphInvalid(t("designer.node_number", i=i, key=key, limit=COORDINATE_LIMIT,
                                     value=_shown(value)))
    for i, edge in enumerate(edges):
        if not isinstance(edge, dict) or not all(isinstance(edge.get(k), str) for k in ("sourceNodeId", "targetNodeId")):
            raise GraphInvalid(t("designer.edge_ends", i=i))
        props = edge.get("properties") or {}
        if not isinstance(props, dict):
            raise GraphInvalid(t("designer.edge_properties", i=i))
        order = props.get("order")
        if isinstance(order, (int, float)) and not isinstance(order, bool) and not sane_number(order, COORDINATE_LIMIT):
            raise GraphInvalid(t("designer.edge_order", i=i, limit=COORDINATE_LIMIT, value=_shown(order)))
    return flow, nodes, edges


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def steps_of(nodes: list[dict[str, Any]], edges: list[dict[str, Any]], notes: list[dict[str, Any]],
           lang: str) -> list[dict[str, Any]]:
    """The plain steps the graph describes, transitions taken from its edges."""
    kinds = {n["id"]: (n.get("properties") or {}).get("kind") for n in nodes}
    outgoing: dict[str, list[tuple[int, dict[str, Any]]]] = {n["id"]: [] for n in nodes}
    for i, edge in enumerate(edges):
        source = edge["sourceNodeId"]
        if source not in outgoing:
            notes.append(_note("no_source", lang, edge, source=source))
            continue
        outgoing[source].append((i, edge))
    steps = []
    for node in nodes:
        props = node.get("properties") or {}
        rest = dict(props.get("step") or {})
        rest.pop("id", None)
        kind = props.get("kind", rest.get("type"))
        step: dict[str, Any] = {"id": node["id"]}
        if kind is not None:
            step["type"] = kind
        step.update((k, v) for k, v in rest.items() if k != "type")
        _add_transitions(step, kind, outgoing[node["id"]], notes, lang)
        steps.append(step)
    return steps


def _edge_kind(edge: dict[str, Any], step_kind: Any, taken: dict[str, Any]) -> str:
    kind = (edge.get("properties") or {}).get("kind")
    if isinstance(kind, str) and kind:
        return kind
    # An edge drawn on the canvas has no kind yet: infer it from its source.
    if step_kind == "decision":
        return "case" if "default" in taken else "default"
    if step_kind == "parallel":
        return "branch"
    return "next"


def _add_transitions(step: dict[str, Any], step_kind: Any, out: list[tuple[int, dict[str, Any]]],
                     notes: list[dict[str, Any]], lang: str) -> None:
    single: dict[str, Any] = {}
    lists: dict[str, list[tuple[float, int, dict[str, Any]]]] = {}
    for i, edge in out:
        kind = _edge_kind(edge, step_kind, single)
        if kind in ORDERED_KINDS:
            order = (edge.get("properties") or {}).get("order")
            rank = float(order) if isinstance(order, (int, float)) and not isinstance(order, bool) else float("inf")
            lists.setdefault(kind, []).append((rank, i, edge))
        elif kind in single:
            notes.append(_note("second_edge", lang, edge, source=step["id"], kind=kind))
        else:
            single[kind] = edge
    ordered = {kind: [e for _r, _i, e in sorted(items, key=lambda t: (t[0], t[1]))] for kind, items in lists.items()}
    if "case" in ordered:
        cases = []
        for edge in ordered["case"]:
            props = edge.get("properties") or {}
            when = props.get("when")
            if when is None and edge.get("text") not in (None, ""):
                when = _label(edge.get("text"))
            cases.append({"when": when, "next": edge["targetNodeId"]} if when is not None else {"next": edge["targetNodeId"]})
        step["cases"] = cases
    if "default" in single:
        step["default"] = single["default"]["targetNodeId"]
    if "branch" in ordered:
        step["branches"] = [e["targetNodeId"] for e in ordered["branch"]]
    if "timeout_next" in single:
        after = step.get("on_timeout")
        step["on_timeout"] = {**(after if isinstance(after, dict) else {}), "next": single["timeout_next"]["targetNodeId"]}
    elif "on_timeout" in single:
        step["on_timeout"] = single["on_timeout"]["targetNodeId"]
    if "send_back_to" in ordered:
        step["send_back_to"] = [e["targetNodeId"] for e in ordered["send_back_to"]]
    if "next" in single:
        step["next"] = single["next"]["targetNodeId"]
    for kind, edge in single.items():  # a transition key this module does not know: keep it as written
        if kind not in ("default", "timeout_next", "on_timeout", "next") and kind not in ORDERED_KINDS:
            step[kind] = edge["targetNodeId"]


def _label(text: Any) -> Any:
    """LogicFlow sends an edited label as {value: ...}; plain strings pass."""
    if isinstance(text, dict):
        return text.get("value")
    return text


def _note(what: str, lang: str, edge: dict[str, Any], **values: Any) -> dict[str, Any]:
    message = NOTES[what]["en" if lang == "en" else "zh"].format(
        **{k: (EDGE_LABELS.get(v, {}).get(lang, v) if k == "kind" else v) for k, v in values.items()})
    return {"message": message, "line": 0, "column": 0, "path": "$", "node": edge.get("sourceNodeId"),
            "edge": edge.get("id")}


# --- indentation of the original -------------------------------------------------------------------

_KEY_LINE = re.compile(r"^( *)[^\s#-][^#]*:\s*(#.*)?$")


def indentation(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) the text uses; the built-in flows' by default."""
    mapping = offset = None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    for line, following in zip(lines, lines[1:]):
        found = _KEY_LINE.match(line)
        if not found:
            continue
        parent = len(found.group(1))
        child = len(following) - len(following.lstrip(" "))
        if child <= parent and not following.lstrip().startswith("- "):
            continue
        if following.lstrip().startswith("- "):
            offset = child - parent if offset is None else offset
        elif mapping is None:
            mapping = child - parent
        if mapping is not None and offset is not None:
            break
    mapping = mapping or 2
    offset = 2 if offset is None else offset
    return mapping, offset + 2, offset


# --- updating the round-trip document in place -------------------------------------------------------


def _fresh_root() -> CommentedMap:
    root = CommentedMap()
    root.yaml_set_start_comment(MODELINE)
    return root


def _update_root(root: CommentedMap, flow: dict[str, Any], steps: list[dict[str, Any]],
                 layout: dict[str, list[int]]) -> None:
    for key in [k for k in root if k not in flow and k not in ("steps", "layout")]:
        del root[key]
    for key, value in flow.items():
        if key in ("steps", "layout"):
            continue
        if key in root:
            _assign(root, key, value)
        else:
            root.insert(_top_position(root, key), key, _fresh(value, key))
    if isinstance(root.get("steps"), CommentedSeq):
        _update_steps(root["steps"], steps)
    else:
        root["steps"] = _fresh(steps, "steps")
    if "layout" in root:
        _assign(root, "layout", layout)
        return
    # A blank line before the new block, as between the steps.
    _set_blank_tail(root, "\n\n")
    block = CommentedMap()
    for sid, point in layout.items():
        block[sid] = _fresh(point, "layout")
    root["layout"] = block


def _top_position(root: CommentedMap, key: str) -> int:
    keys = list(root)
    if key in TOP_ORDER:
        rank = TOP_ORDER.index(key)
        for i, existing in enumerate(keys):
            if existing in ("steps", "layout") or (existing in TOP_ORDER and TOP_ORDER.index(existing) > rank):
                return i
    elif "steps" in keys:
        return keys.index("steps")
    return len(keys)


def _update_steps(seq: CommentedSeq, steps: list[dict[str, Any]]) -> None:
    old = list(seq)
    by_id: dict[str, CommentedMap] = {}
    for item in old:
        if isinstance(item, CommentedMap) and isinstance(item.get("id"), str):
            by_id.setdefault(item["id"], item)
    # Blank lines between steps belong to positions, not to steps: the i-th step gets what the
    # i-th had, so moving the last step up does not move the end of the file with it. Comment
    # lines above a step belong to that step (ruamel keeps them on the step before it); those of
    # a deleted step go to the next step that stays.
    tails = [_take_tail(item) for item in old]
    blanks: list[str | None] = []
    above: dict[int, str] = {}
    for i, lines in enumerate(tails):
        if i == len(tails) - 1 or lines is None:
            blanks.append(lines)
            continue
        blank = lines[:len(lines) - len(lines.lstrip("\n"))]
        blanks.append(blank or None)
        if lines[len(blank):]:
            above[id(old[i + 1])] = lines[len(blank):]
    separator = next((b for b in blanks[:-1] if b is not None), None)
    items: list[Any] = []
    for step in steps:
        found = by_id.pop(step["id"], None)
        if found is not None:
            _update_map(found, step, step_map=True)
            items.append(found)
        else:
            items.append(_fresh_step(step))
    kept = {id(i) for i in items}
    carried = ""
    for item in old:
        if id(item) in kept:
            if carried:
                above[id(item)] = carried + above.get(id(item), "")
            carried = ""
        else:
            carried += above.pop(id(item), "")
    if [id(i) for i in items] != [id(i) for i in old]:
        seq.clear()
        seq.ca.items.clear()
        seq.extend(items)
    for i, item in enumerate(items):
        if i == len(items) - 1:
            lines = (blanks[-1] if blanks else None) or ""
            lines += carried  # (comments of deleted steps at the end)
        else:
            lines = (blanks[i] if i < len(blanks) - 1 else separator) or ""
            lines += above.get(id(items[i + 1]), "")
        if lines:
            _put_tail(item, lines)
    if items and above.get(id(items[0])):
        # A step that is now first keeps its comment above it, under `steps:`.
        text = above[id(items[0])]
        first = [CommentToken(text.lstrip(" "), CommentMark(len(text) - len(text.lstrip(" "))), None)]
        before = seq.ca.comment[1] if seq.ca.comment and len(seq.ca.comment) > 1 and seq.ca.comment[1] else []
        seq.ca.comment = [None, [*before, *first]]


def _fresh_step(step: dict[str, Any]) -> CommentedMap:
    """A new step: id, type and name first, the transitions last (next at the very end)."""
    out = CommentedMap()
    first = [k for k in ("id", "type", "name") if k in step]
    middle = [k for k in step if k not in first and k not in TRANSITION_KEYS]
    last = [k for k in TRANSITION_KEYS if k in step]
    for key in [*first, *middle, *last]:
        out[key] = _fresh(step[key], key)
    return out


def _assign(parent: Any, key: Any, value: Any) -> None:
    """Store ``value`` at ``parent[key]``, keeping the old node (and its style) where it can."""
    old = parent[key]
    if _same(old, value):
        return
    if _anchored(old):
        # Other places may alias this node (*name): changing it in place would change them too.
        parent[key] = _fresh(value, key if isinstance(key, str) else "", like=old, item=isinstance(parent, CommentedSeq))
    elif isinstance(old, CommentedMap) and isinstance(value, dict):
        _update_map(old, value)
    elif isinstance(old, CommentedSeq) and isinstance(value, list):
        _update_seq(old, value, key)
    else:
        parent[key] = _fresh(value, key if isinstance(key, str) else "", like=old, item=isinstance(parent, CommentedSeq))


def _anchored(node: Any) -> bool:
    anchor = getattr(node, "anchor", None)
    return isinstance(node, (CommentedMap, CommentedSeq)) and getattr(anchor, "value", None) is not None


def _update_map(old: CommentedMap, new: Mapping[str, Any], step_map: bool = False) -> None:
    tail = _take_tail(old)
    for key in [k for k in old if k not in new]:
        del old[key]
    for key, value in new.items():
        if key in old:
            _assign(old, key, value)
            continue
        keys = list(old)
        position = len(keys)
        if step_map and keys and keys[-1] == "next" and key != "next":
            position -= 1  # new keys of a step go before its `next`, as steps are written
        old.insert(position, key, _fresh(value, key))
    if tail is not None:
        _put_tail(old, tail)


def _update_seq(old: CommentedSeq, new: list[Any], key: Any) -> None:
    tail = _take_tail(old)
    for i in range(min(len(old), len(new))):
        _assign(old, i, new[i])  # (an item replaced by a fresh map keeps the old one's style)
    while len(old) > len(new):
        del old[len(old) - 1]
    for value in new[len(old):]:
        old.append(_fresh(value, key if isinstance(key, str) else "", item=True))
    if tail is not None:
        _put_tail(old, tail)


# --- values ----------------------------------------------------------------------------------------------


def _category(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, ScalarBoolean)):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """Equal as the loader of record would see them (1 and True differ; 1 and 1.0 do not)."""
    kind = _category(a)
    if kind != _category(b):
        return False
    if kind == "map":
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if kind == "list":
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if kind == "bool":
        return bool(a) == bool(b)
    if kind == "str":
        return str(a) == str(b)
    return bool(a == b)


_PYYAML_RESOLVER = yaml.resolver.Resolver()


def _needs_quotes(text: str) -> bool:
    """Would a plain scalar be read as something other than this text (by PyYAML 1.1 or YAML 1.2)?"""
    if text == "" or text != text.strip() or "\n" in text:
        return True
    tag = _PYYAML_RESOLVER.resolve(yaml.ScalarNode, text, (True, False))
    return tag != "tag:yaml.org,2002:str" or text.lower() in ("on", "off", "yes", "no", "y", "n")


def _fresh(value: Any, key: str, like: Any = None, item: bool = False) -> Any:
    """A round-trip node for a new value, styled like the value it replaces or like the built-in flows."""
    if isinstance(value, str):
        if isinstance(like, (DoubleQuotedScalarString, SingleQuotedScalarString)):
            return type(like)(value)
        if isinstance(like, LiteralScalarString) and "\n" in value:
            return LiteralScalarString(value)
        if isinstance(like, FoldedScalarString) and "\n" not in value:
            return DoubleQuotedScalarString(value)
        if "\n" in value:
            return LiteralScalarString(value) if value.endswith("\n") else DoubleQuotedScalarString(value)
        if key in EXPRESSION_KEYS or "{{" in value or "{%" in value or _needs_quotes(value):
            return DoubleQuotedScalarString(value)
        return value
    if isinstance(value, dict):
        node = CommentedMap()
        for k, v in value.items():
            node[k] = _fresh(v, k)
        # Maps in a list (steps, triggers, cases) are written as blocks, like the built-in flows.
        flow = like.fa.flow_style() if isinstance(like, CommentedMap) else (not item and _short(value))
        if flow:
            node.fa.set_flow_style()
        else:
            node.fa.set_block_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(_fresh(v, key, item=True) for v in value)
        flow = like.fa.flow_style() if isinstance(like, CommentedSeq) else all(_category(v) not in ("map", "list") for v in value)
        if flow and value:
            seq.fa.set_flow_style()
        else:
            seq.fa.set_block_style()
        return seq
    return value


def _short(value: dict[str, Any]) -> bool:
    """Small maps of plain values are written inline, like {zh: 问候, en: Hello} or {days: 3}."""
    if not value or any(_category(v) in ("map", "list") for v in value.values()):
        return False
    return len(json.dumps(value, ensure_ascii=False)) <= 72 and not any(isinstance(v, str) and "\n" in v for v in value.values())


# --- blank lines at the end of a block ------------------------------------------------------------------


def _tail_slot(node: Any) -> tuple[Any, Any] | None:
    """The (collection, key) after whose value ruamel keeps what follows a block collection."""
    while True:
        if isinstance(node, CommentedMap) and len(node):
            key = list(node)[-1]
        elif isinstance(node, CommentedSeq) and len(node):
            key = len(node) - 1
        else:
            return None
        value = node[key]
        if isinstance(value, (CommentedMap, CommentedSeq)) and len(value) and not value.fa.flow_style():
            node = value
            continue
        return node, key


def _tail_token(node: Any, key: Any) -> Any:
    entry = node.ca.items.get(key)
    if not entry:
        return None
    return entry[2] if isinstance(node, CommentedMap) else entry[0]


def _take_tail(node: Any) -> str | None:
    """Remove and return the lines after a block collection: blank lines and whole-line comments.

    ruamel keeps them on the collection's last key, so they would go with that key (or stay
    behind it when it moves); an end-of-line comment belongs to its key and stays.
    """
    slot = _tail_slot(node)
    if slot is None:
        return None
    parent, key = slot
    token = _tail_token(parent, key)
    if token is None or not isinstance(getattr(token, "value", None), str) or "\n" not in token.value:
        return None
    head, _nl, lines = token.value.partition("\n")
    if head.strip():
        token.value = head + "\n"
    else:
        entry = parent.ca.items[key]
        entry[2 if isinstance(parent, CommentedMap) else 0] = None
        if not any(entry):
            del parent.ca.items[key]
    return lines or None


def _put_tail(node: Any, lines: str) -> None:
    """Put lines taken with :func:`_take_tail` after a block collection (after what is there)."""
    slot = _tail_slot(node)
    if slot is None or not lines:
        return
    parent, key = slot
    token = _tail_token(parent, key)
    if token is not None and isinstance(getattr(token, "value", None), str) and token.value.endswith("\n"):
        token.value += lines
        return
    if token is not None:
        return  # something ruamel keeps otherwise: leave it
    token = CommentToken("\n" + lines, CommentMark(0), None)
    if isinstance(parent, CommentedMap):
        parent.ca.items.setdefault(key, [None, None, None, None])[2] = token
    else:
        parent.ca.items.setdefault(key, [None, None])[0] = token


def _set_blank_tail(node: Any, blank: str) -> None:
    slot = _tail_slot(node)
    if slot is None:
        return
    token = _tail_token(*slot)
    if token is None:
        _put_tail(node, blank[1:])
    elif isinstance(token.value, str) and token.value.endswith("\n") and not token.value.endswith("\n\n"):
        token.value += "\n"  # a comment ends the file: keep it, then a blank line

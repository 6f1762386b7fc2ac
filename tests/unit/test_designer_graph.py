"""The designer's YAML ⇄ graph conversion: round trips over every shipped flow and doc example, edits, problems."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine.designer.graph import to_graph
from engine.designer.problems import check, offline_catalog, parse_path
from engine.designer.writer import GraphInvalid, indentation, to_yaml
from engine.errors import FlowInvalid
from engine.flow.loader import load_flow_text
from engine.flow.yaml_loader import load_yaml

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^( *)```ya?ml\n(.*?)^\1```", re.M | re.S)


def _doc_blocks() -> list[tuple[str, str]]:
    """Every YAML block in docs/ that is a whole flow, and every list of steps wrapped into one."""
    found = []
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        text = doc.read_text("utf-8")
        for match in FENCE.finditer(text):
            body = "\n".join(line[len(match.group(1)):] for line in match.group(2).split("\n"))
            where = f"{doc.name}:{text[:match.start()].count(chr(10)) + 1}"
            try:
                data = load_yaml(body, where).data
            except FlowInvalid:
                continue
            if isinstance(data, dict) and "steps" in data and "id" in data:
                found.append((where, body))
            elif isinstance(data, list) and data and all(isinstance(s, dict) and "id" in s for s in data):
                steps = "".join(f"  {line}\n" if line else "\n" for line in body.rstrip("\n").split("\n"))
                found.append((where + " (steps)", f"id: example\nname: Example\nsteps:\n{steps}"))
    return found


FLOWS = [(p.name, p.read_text("utf-8")) for p in sorted((ROOT / "workflows").glob("*.yaml"))]
DOCS = _doc_blocks()


def _without_layout(text: str) -> str:
    """The text with its top-level layout: block (and the blank lines before it) taken out."""
    return re.sub(r"\n*^layout:\n(?:[ ].*\n|\n)*", "\n", text, flags=re.M).rstrip("\n") + "\n"


def _plain(text: str) -> Any:
    data = load_yaml(text, "x").data
    data.pop("layout", None)
    return data


def _save(graph: dict[str, Any], original: str) -> str:
    # Through JSON, as the page sends it.
    return to_yaml(json.loads(json.dumps(graph)), original).text


def _node(graph: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(n for n in graph["nodes"] if n["id"] == step_id)


def test_the_corpus_is_complete() -> None:
    assert len(FLOWS) >= 6
    assert any(name.startswith("flow-reference.md") and "(steps)" not in name for name, _t in DOCS)
    assert sum("(steps)" in name for name, _t in DOCS) >= 10


@pytest.mark.parametrize(("name", "text"), FLOWS + DOCS, ids=[n for n, _t in FLOWS + DOCS])
def test_round_trip_keeps_text_and_meaning(name: str, text: str) -> None:
    saved = _save(to_graph(text), text)
    assert _without_layout(saved) == _without_layout(text)
    assert _plain(saved) == _plain(text)
    assert "layout:" in saved and "layout:" not in text
    if name.endswith(".yaml"):
        # The Flow model the engine runs is the same (layout: is appended, so even lines agree).
        assert load_flow_text(saved, name, offline_catalog()) == load_flow_text(text, name, offline_catalog())
    # Problems are the same too (the connectors doc shows a flow with mistakes on purpose).
    assert [(p["message"], p["path"]) for p in check(saved)] == [(p["message"], p["path"]) for p in check(text)]
    # Opening the saved text again reads its layout back, and saving again changes nothing.
    again = to_graph(saved)
    assert [(n["x"], n["y"]) for n in again["nodes"]] == [(n["x"], n["y"]) for n in to_graph(text)["nodes"]]
    assert _save(again, saved) == saved


def test_problems_match_careflow_validate(tmp_path: Path) -> None:
    from engine.validation import validate_paths

    text = (ROOT / "workflows" / "complaint.yaml").read_text("utf-8")
    broken = text.replace("next: lead_review", "next: lead_reviw").replace("to_role: admin", "to_role: boss")
    path = tmp_path / "complaint.yaml"
    path.write_text(broken, "utf-8")
    cli, _checked = validate_paths([path])
    assert cli
    ours = check(broken)
    assert [(p["line"], p["column"], p["message"], p["path"]) for p in ours] == [
        (p.line, p.column, p.message, p.path) for p in cli]
    by_path = {p["path"]: p for p in ours}
    case = by_path["$.steps[4].cases[0].next"]
    # A case to a missing step is no edge (the canvas cannot draw it): the problem is the node's.
    assert (case["node"], case["edge"]) == ("severity", None)
    role = by_path["$.steps[5].escalation[0].to_role"]
    assert (role["node"], role["edge"]) == ("lead_review", None)


def test_graph_of_a_flow() -> None:
    graph = to_graph((ROOT / "workflows" / "complaint.yaml").read_text("utf-8"), "en")
    assert graph["flow"]["id"] == "complaint" and "steps" not in graph["flow"]
    assert [n["id"] for n in graph["nodes"]][:3] == ["ticket", "has_customer", "acknowledge"]
    triage = _node(graph, "triage")
    assert triage["text"] == "Triage" and triage["type"] == "rect"
    assert triage["properties"]["kind"] == "task"
    assert "next" not in triage["properties"]["step"] and triage["properties"]["step"]["form"] == "complaint_triage"
    assert _node(graph, "severity")["type"] == "diamond"
    assert _node(graph, "resolved")["type"] == "circle"
    assert _node(graph, "wait_confirmation")["type"] == "ellipse"
    edges = {e["id"]: e for e in graph["edges"]}
    assert edges["severity->lead_review:case:0"]["properties"] == {
        "kind": "case", "when": "vars.triage.severity == 'high'", "order": 0}
    assert edges["severity->resolve:default"]["text"] == "otherwise"
    assert edges["wait_confirmation->close_unconfirmed:on_timeout"]["text"] == "timeout"
    assert edges["resolve->triage:send_back_to:0"]["properties"]["kind"] == "send_back_to"
    assert "cases" not in _node(graph, "severity")["properties"]["step"]
    # The layered layout: the start on the first row, a step's row its distance from it.
    assert _node(graph, "ticket")["y"] < _node(graph, "has_customer")["y"] < _node(graph, "triage")["y"]
    assert to_graph((ROOT / "workflows" / "complaint.yaml").read_text("utf-8"), "zh")["edges"][3]["text"] in ("", "否则")


TASK_TIMEOUT = """\
id: callback
name: Callback
steps:
  - id: call
    type: task
    form: welcome_call
    assignee: {role: service_agent}
    on_timeout: {after: {days: 2}, next: gave_up}  # cancel the call after two days
    next: done
  - id: done
    type: end
  - id: gave_up
    type: end
    outcome: gave_up
"""


def test_task_timeout_keeps_after_on_the_node_and_next_on_the_edge() -> None:
    graph = to_graph(TASK_TIMEOUT)
    assert _node(graph, "call")["properties"]["step"]["on_timeout"] == {"after": {"days": 2}}
    edge = next(e for e in graph["edges"] if e["properties"]["kind"] == "timeout_next")
    assert edge["id"] == "call->gave_up:timeout_next" and edge["text"] == "逾期"
    edge["targetNodeId"] = "done"
    saved = _save(graph, TASK_TIMEOUT)
    # The comment keeps its column.
    assert re.search(r"\n    on_timeout: \{after: \{days: 2\}, next: done\} +# cancel the call after two days\n", saved)
    graph["edges"].remove(edge)
    problems = check(_save(graph, TASK_TIMEOUT))
    assert ("call", None) in [(p["node"], p["edge"]) for p in problems]


COMPLAINT = (ROOT / "workflows" / "complaint.yaml").read_text("utf-8")
BIRTHDAY = (ROOT / "workflows" / "birthday.yaml").read_text("utf-8")


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    import difflib

    diff = list(difflib.ndiff(_without_layout(before).splitlines(), _without_layout(after).splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


def test_rename_a_step_touches_one_line() -> None:
    graph = to_graph(COMPLAINT)
    _node(graph, "triage")["properties"]["step"]["name"]["zh"] = "投诉分诊"
    saved = _save(graph, COMPLAINT)
    removed, added = _changed_lines(COMPLAINT, saved)
    assert removed == ["    name: {zh: 分诊, en: Triage}"]
    assert added == ["    name: {zh: 投诉分诊, en: Triage}"]
    assert check(saved) == []


def test_change_a_case_condition_keeps_the_quotes() -> None:
    graph = to_graph(COMPLAINT)
    edge = next(e for e in graph["edges"] if e["id"] == "satisfied->close:case:0")
    edge["properties"]["when"] = "vars.complaint_confirmation.satisfied == true"
    saved = _save(graph, COMPLAINT)
    removed, added = _changed_lines(COMPLAINT, saved)
    assert removed == ['      - when: "vars.complaint_confirmation.satisfied"']
    assert added == ['      - when: "vars.complaint_confirmation.satisfied == true"']
    assert load_flow_text(saved, "x").steps["satisfied"].cases[0].when == "vars.complaint_confirmation.satisfied == true"


def test_add_a_step_and_an_edge() -> None:
    graph = to_graph(COMPLAINT)
    graph["nodes"].append({"id": "note_closed", "type": "rect", "x": 500, "y": 1300, "text": "",
                           "properties": {"kind": "action", "step": {
                               "name": {"zh": "记录结案", "en": "Note the closing"}, "connector": "timeline",
                               "params": {"text": "{{ vars.ticket_no }} closed"}}}})
    close = next(e for e in graph["edges"] if e["id"] == "close->resolved:next")
    close["targetNodeId"] = "note_closed"
    graph["edges"].append({"id": "new-edge-1", "sourceNodeId": "note_closed", "targetNodeId": "resolved",
                           "properties": {}})
    saved = _save(graph, COMPLAINT)
    assert check(saved) == []
    removed, added = _changed_lines(COMPLAINT, saved)
    assert removed == ["    next: resolved"] or removed == []
    flow = load_flow_text(saved, "x")
    assert flow.steps["close"].next == "note_closed" and flow.steps["note_closed"].next == "resolved"
    assert saved.split("  - id: note_closed\n")[1].startswith(
        "    type: action\n"
        "    name: {zh: 记录结案, en: Note the closing}\n"
        "    connector: timeline\n"
        "    params: {text: \"{{ vars.ticket_no }} closed\"}\n"
        "    next: resolved\n")
    # The new step is set off by a blank line, as the others are, and the comments stay.
    assert "    outcome: closed_unconfirmed\n\n  - id: note_closed\n" in saved
    assert saved.startswith("# yaml-language-server: $schema=../engine/schemas/flow.schema.json\n# 投诉处理 · Complaint handling\n")
    assert "note_closed: [500, 1300]" in saved


def test_delete_an_edge_puts_the_problem_on_the_node() -> None:
    graph = to_graph(COMPLAINT)
    graph["edges"] = [e for e in graph["edges"] if e["id"] != "wait_confirmation->close_unconfirmed:on_timeout"]
    saved = _save(graph, COMPLAINT)
    removed, added = _changed_lines(COMPLAINT, saved)
    assert removed == ["    on_timeout: close_unconfirmed"] and added == []
    problems = check(saved)
    places = {p["message"]: (p["node"], p["edge"]) for p in problems}
    assert places == {"'timeout' and 'on_timeout' go together": ("wait_confirmation", None),
                      "step 'close_unconfirmed' can never be reached from 'ticket'": ("close_unconfirmed", None)}


def test_move_a_node_changes_only_the_layout() -> None:
    first = _save(to_graph(BIRTHDAY), BIRTHDAY)
    graph = to_graph(first)
    _node(graph, "coupon")["x"] = 999
    _node(graph, "coupon")["y"] = 77.4
    moved = _save(graph, first)
    assert [line for line in moved.splitlines() if line not in first.splitlines()] == ["  coupon: [999, 77]"]
    assert _without_layout(moved) == BIRTHDAY


def test_remove_and_reorder_steps_keeps_comments_and_blank_lines() -> None:
    graph = to_graph(BIRTHDAY)
    # Drop the call branch: send_coupon ends the flow at done, birthday_call and done_with_call go.
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] not in ("birthday_call", "done_with_call")]
    graph["edges"] = [e for e in graph["edges"] if e["sourceNodeId"] != "birthday_call"]
    for edge in graph["edges"]:
        if edge["id"] == "send_coupon->birthday_call:next":
            edge["targetNodeId"] = "done"
    # ... and put the end step first in the list (order in the file follows the nodes).
    graph["nodes"].insert(0, graph["nodes"].pop([n["id"] for n in graph["nodes"]].index("done")))
    graph["flow"]["start"] = "greet"
    saved = _save(graph, BIRTHDAY)
    assert check(saved) == []
    assert saved.count("# counts against the channel's weekly cap") == 2
    assert "steps:\n  - id: done\n    type: end\n    outcome: greeted\n\n  - id: greet\n" in saved
    assert "    next: done\n\nlayout:\n" in saved
    assert "birthday_call" not in saved
    assert "start: greet\nsteps:" in saved


def test_a_new_flow_from_an_empty_canvas() -> None:
    graph = {"flow": {"id": "hello", "name": {"zh": "问候", "en": "Hello"}, "triggers": [{"type": "manual"}]},
             "nodes": [{"id": "note", "x": 100, "y": 60, "properties": {"kind": "action", "step": {
                 "connector": "timeline", "params": {"text": "hi {{ customer.name }}"}}}},
                       {"id": "done", "x": 100, "y": 180, "properties": {"kind": "end", "step": {}}}],
             "edges": [{"sourceNodeId": "note", "targetNodeId": "done"}]}
    saved = to_yaml(graph, "").text
    assert saved == (
        "# yaml-language-server: $schema=../engine/schemas/flow.schema.json\n"
        "id: hello\n"
        "name: {zh: 问候, en: Hello}\n"
        "triggers:\n"
        "  - type: manual\n"
        "steps:\n"
        "  - id: note\n"
        "    type: action\n"
        "    connector: timeline\n"
        "    params: {text: \"hi {{ customer.name }}\"}\n"
        "    next: done\n"
        "  - id: done\n"
        "    type: end\n"
        "\n"
        "layout:\n"
        "  note: [100, 60]\n"
        "  done: [100, 180]\n")
    assert check(saved) == []


def test_values_that_yaml_would_misread_are_quoted() -> None:
    graph = to_graph(BIRTHDAY)
    step = _node(graph, "coupon")["properties"]["step"]
    step["values"] = {"code": "010", "at": "9:30", "flag": "yes", "empty": "", "on": "on", "n": 3, "f": 1.5, "b": True}
    saved = _save(graph, BIRTHDAY)
    values = load_flow_text(saved, "x").steps["coupon"].values
    assert values == {"code": "010", "at": "9:30", "flag": "yes", "empty": "", "on": "on", "n": 3, "f": 1.5, "b": True}


def test_second_edges_are_reported_not_written() -> None:
    graph = to_graph(BIRTHDAY)
    graph["edges"].append({"id": "extra", "sourceNodeId": "greet", "targetNodeId": "done", "properties": {"kind": "next"}})
    written = to_yaml(graph, BIRTHDAY, "en")
    assert [(n["node"], n["edge"]) for n in written.notes] == [("greet", "extra")]
    assert "only one" in written.notes[0]["message"]
    assert load_flow_text(written.text, "x").steps["greet"].next == "is_grade_a"


@pytest.mark.parametrize("bad", ["id: [", "- a\n- b\n", "id: x\nsteps:\n  - type: end\n",
                                 "id: x\nsteps:\n  - {id: a, type: end}\n  - {id: a, type: end}\n"])
def test_text_that_cannot_be_drawn_is_refused_with_located_problems(bad: str) -> None:
    with pytest.raises(FlowInvalid) as caught:
        to_graph(bad)
    assert all(p.line >= 1 for p in caught.value.problems)


@pytest.mark.parametrize("bad", [[], {"nodes": "x"}, {"nodes": [{"id": 3}]}, {"nodes": [{"id": "a"}, {"id": "a"}]},
                                 {"nodes": [], "edges": [{"sourceNodeId": "a"}]}])
def test_malformed_graphs_are_refused(bad: Any) -> None:
    with pytest.raises(GraphInvalid):
        to_yaml(bad, "")


def test_indentation_follows_the_original() -> None:
    assert indentation("") == (2, 4, 2)
    assert indentation(COMPLAINT) == (2, 4, 2)
    assert indentation("a:\n    b: 1\nsteps:\n- id: x\n") == (4, 2, 0)


def test_parse_path() -> None:
    assert parse_path("$.steps[3].cases[0].next") == ["steps", 3, "cases", 0, "next"]
    assert parse_path('$.variables["a b"]') == ["variables", "a b"]
    assert parse_path("$") == []


def test_graph_is_not_changed_by_saving() -> None:
    graph = to_graph(COMPLAINT)
    kept = copy.deepcopy(graph)
    _save(graph, COMPLAINT)
    assert graph == kept


@pytest.mark.parametrize(("name", "text"), FLOWS, ids=[n for n, _t in FLOWS])
def test_the_designer_lays_out_a_flow_as_its_diagram_does(name: str, text: str) -> None:
    from flask import Flask
    from flask_babel import Babel

    from admin.diagram import graph

    app = Flask(__name__)
    Babel(app)
    with app.test_request_context("/"):
        diagram = graph(load_flow_text(text, name))
    assert [(n["id"], n["x"], n["y"]) for n in to_graph(text)["nodes"]] == [
        (n["id"], n["x"], n["y"]) for n in diagram["nodes"]]


@pytest.mark.parametrize(("text", "start"), [("---\n", "---\nid: x\n"), ("# note\n---\n", "# note\n---\nid: x\n")])
def test_a_document_start_marker_is_kept(text: str, start: str) -> None:
    source = text + "id: x\nname: X\nsteps:\n  - id: a\n    type: end\n"
    saved = _save(to_graph(source), source)
    assert saved.startswith(start) and _without_layout(saved) == source


def test_windows_line_ends_are_kept() -> None:
    source = BIRTHDAY.replace("\n", "\r\n")
    saved = _save(to_graph(source), source)
    assert saved.replace("\r\n", "\n").startswith(BIRTHDAY) and "\n" not in saved.replace("\r\n", "")


UNKNOWN = """\
id: odd  # the id
name: 'Odd flow'
x-owner: {team: care, since: 2026}   # a key Careflow does not know
steps:
  # the only real work
  - id: note
    type: action
    connector: timeline
    x-note: keep me
    params:
      text: 'single quoted'
    next: done
  - id: done
    type: end
"""


def test_unknown_keys_comments_and_quoting_survive_an_edit() -> None:
    graph = to_graph(UNKNOWN)
    assert graph["flow"]["x-owner"] == {"team": "care", "since": 2026}
    assert _node(graph, "note")["properties"]["step"]["x-note"] == "keep me"
    _node(graph, "note")["properties"]["step"]["params"]["text"] = "still single quoted"
    saved = _save(graph, UNKNOWN)
    assert _without_layout(saved) == UNKNOWN.replace("'single quoted'", "'still single quoted'")
    problems = check(saved)
    assert {(p["path"], p["node"]) for p in problems} == {('$["x-owner"]', None), ('$.steps[0]["x-note"]', "note")}


def _edge_set(graph: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted((e["sourceNodeId"], e["targetNodeId"], e["properties"]["kind"], e["properties"].get("when"))
                  for e in graph["edges"])


def test_what_is_saved_is_what_opens_again_edge_by_edge() -> None:
    """Deleting any one edge of a flow and saving gives a text whose graph lacks exactly that edge."""
    graph = to_graph(COMPLAINT)
    for edge in graph["edges"]:
        edited = copy.deepcopy(graph)
        edited["edges"] = [e for e in edited["edges"] if e["id"] != edge["id"]]
        reopened = to_graph(_save(edited, COMPLAINT))
        assert _edge_set(reopened) == _edge_set(edited), edge["id"]
        assert [n["properties"] for n in reopened["nodes"]] == [n["properties"] for n in edited["nodes"]]


def test_a_comment_at_the_end_stays_above_the_new_layout() -> None:
    source = "id: x\nname: X\nsteps:\n  - id: a\n    type: end\n# the end\n"
    saved = _save(to_graph(source), source)
    assert saved == source + "\nlayout:\n  a: [120, 60]\n"


def test_random_edits_are_written_exactly_as_the_graph_says() -> None:
    """Seeded random edit sequences: the loader of record reads back exactly the graph's flow."""
    import random

    from engine.designer.writer import steps_of

    rnd = random.Random(6)
    values: list[Any] = ["x", "010", "9:30", "yes", "on", "", " lead", "a: b", "- x", "{{ x }}", "#c", 3, 1.5, True,
                         None, {"zh": "中", "en": "E"}, [1, "a"], {"a": {"b": [1, {"c": "d"}]}}, "multi\nline", "end\n"]
    kinds = ["next", "case", "default", "branch", "timeout_next", "on_timeout", "send_back_to"]
    for round_ in range(25):
        original = rnd.choice(FLOWS)[1]
        graph = to_graph(original)
        nodes, edges = graph["nodes"], graph["edges"]
        for _ in range(rnd.randint(1, 5)):
            op = rnd.randint(0, 5)
            if op == 0 and len(nodes) > 1:
                nodes.pop(rnd.randrange(len(nodes)))
            elif op == 1:
                nodes.insert(rnd.randrange(len(nodes) + 1), {"id": f"n{round_}_{rnd.randint(0, 999)}", "x": 1, "y": 2,
                             "properties": {"kind": rnd.choice(["action", "end"]), "step": {"params": {"k": rnd.choice(values)}}}})
            elif op == 2:
                kind = rnd.choice(kinds)
                props: dict[str, Any] = {"kind": kind, "order": rnd.randint(0, 3), "when": rnd.choice(["x > 1", "a: b"])}
                edges.append({"sourceNodeId": rnd.choice(nodes)["id"], "targetNodeId": rnd.choice(nodes)["id"],
                              "properties": props})
            elif op == 3 and edges:
                edges.pop(rnd.randrange(len(edges)))
            elif op == 4:
                step = rnd.choice(nodes)["properties"]["step"]
                step[rnd.choice([*step, "extra", "name", "values"])] = rnd.choice(values)
            else:
                rnd.shuffle(nodes)
        graph = json.loads(json.dumps(graph))
        saved = to_yaml(graph, original).text
        expected = {**graph["flow"], "steps": steps_of(graph["nodes"], graph["edges"], [], "zh"),
                    "layout": {n["id"]: [round(n["x"]), round(n["y"])] for n in graph["nodes"]}}
        assert load_yaml(saved, "x").data == expected, saved


def test_changing_an_anchored_map_does_not_change_its_aliases() -> None:
    source = ("id: x\nname: X\nsteps:\n  - id: a\n    type: action\n    connector: timeline\n"
              "    params: &note {text: hi}\n    next: b\n  - id: b\n    type: action\n    connector: timeline\n"
              "    params: *note\n    next: c\n  - id: c\n    type: end\n")
    graph = to_graph(source)
    _node(graph, "a")["properties"]["step"]["params"] = {"text": "hello"}
    saved = load_yaml(_save(graph, source), "x").data
    assert [s.get("params") for s in saved["steps"]] == [{"text": "hello"}, {"text": "hi"}, None]


TYPO = """id: typo
name: Typo
steps:
  - id: a
    type: set
    values: {x: 1}
    next: typo

  - id: b
    type: end
"""


def test_a_transition_to_a_missing_step_is_no_edge_and_survives_a_canvas_edit() -> None:
    graph = to_graph(TYPO)
    # An edge to a node that is not there breaks the canvas: the target stays on the step.
    assert graph["edges"] == []
    assert _node(graph, "a")["properties"]["step"]["next"] == "typo"
    _node(graph, "b")["x"] = 700  # any canvas edit
    saved = _save(graph, TYPO)
    assert _without_layout(saved) == TYPO
    places = {(p["node"], p["edge"]) for p in check(saved) if "typo" in p["message"]}
    assert places == {("a", None)}


def test_lists_and_timeouts_to_missing_steps_stay_on_the_step() -> None:
    text = ("id: x\nsteps:\n  - id: d\n    type: decision\n    cases:\n      - when: \"true\"\n        next: nowhere\n"
            "    default: e\n  - id: e\n    type: end\n")
    graph = to_graph(text)
    assert [e["id"] for e in graph["edges"]] == ["d->e:default"]
    assert _node(graph, "d")["properties"]["step"]["cases"] == [{"when": "true", "next": "nowhere"}]
    assert _without_layout(_save(graph, text)) == text


SECTIONS = """id: sections
name: Sections
steps:
  - id: a
    type: set
    values: {x: 1}
    next: b

  # section two
  - id: b
    type: set
    values: {y: 2}
    next: c

  # section three
  - id: c
    type: end
"""


def test_a_comment_above_a_step_stays_when_the_connection_before_it_goes() -> None:
    graph = to_graph(SECTIONS)
    graph["edges"] = [e for e in graph["edges"] if e["id"] != "a->b:next"]
    saved = _without_layout(_save(graph, SECTIONS))
    assert saved == SECTIONS.replace("    next: b\n", "")


def test_a_comment_above_a_step_stays_when_a_step_is_deleted() -> None:
    graph = to_graph(SECTIONS)
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "b"]
    graph["edges"] = [e for e in graph["edges"] if "b" not in (e["sourceNodeId"], e["targetNodeId"])]
    saved = _without_layout(_save(graph, SECTIONS))
    # a loses its next; the comment above c stays above c
    assert "  # section three\n  - id: c\n" in saved
    graph = to_graph(SECTIONS)
    graph["nodes"] = [n for n in graph["nodes"] if n["id"] != "a"]
    graph["edges"] = [e for e in graph["edges"] if "a" not in (e["sourceNodeId"], e["targetNodeId"])]
    saved = _without_layout(_save(graph, SECTIONS))
    assert "steps:\n  # section two\n  - id: b\n" in saved
    assert "  # section three\n  - id: c\n" in saved


def test_a_comment_above_a_step_moves_with_it() -> None:
    graph = to_graph(SECTIONS)
    graph["nodes"] = [_node(graph, "a"), _node(graph, "c"), _node(graph, "b")]
    saved = _without_layout(_save(graph, SECTIONS))
    assert "  # section three\n  - id: c\n" in saved
    assert "  # section two\n  - id: b\n" in saved
    assert saved.count("# section") == 2

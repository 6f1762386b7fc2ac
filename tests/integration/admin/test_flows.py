"""Flow pages: list, versions, the diagram's graph, deploying (with located problems), roles."""

from __future__ import annotations

import re
from io import BytesIO

from admin.diagram import graph, transitions
from engine.core import Careflow
from engine.store.definitions import flow_of, latest_flow_version

SIMPLE = """\
id: web_simple
name: {zh: 简单流程, en: Simple flow}
triggers:
  - type: manual
steps:
  - id: check
    type: decision
    cases:
      - when: "vars.amount > 100"
        next: big
    default: small
  - id: big
    type: end
    outcome: big
  - id: small
    type: end
    outcome: small
"""


def test_graph_has_steps_as_nodes_and_labelled_transitions(cf: Careflow) -> None:
    with cf.session() as s:
        flow = flow_of(latest_flow_version(s, "complaint"))
    data = graph(flow, current=["triage"] if "triage" in flow.steps else [])
    assert {n["id"] for n in data["nodes"]} == set(flow.steps)
    expected_edges = {(sid, target) for sid, step in flow.steps.items() for target, _l in transitions(step)}
    assert {(e["sourceNodeId"], e["targetNodeId"]) for e in data["edges"]} == expected_edges
    decisions = [s for s in flow.steps.values() if s.type == "decision"]
    assert decisions, "the complaint flow branches"
    labels = {e.get("text") for e in data["edges"]}
    assert all(case.when in labels for d in decisions for case in d.cases)
    # rows follow the distance from the start step: the start is on top
    start = next(n for n in data["nodes"] if n["id"] == flow.start)
    assert start["y"] == min(n["y"] for n in data["nodes"])


def test_flow_list_versions_and_graph(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    ops = signed_in("ops")
    html = ops.text("/admin/flows")
    for flow_id in ("complaint", "onboarding", "birthday"):
        assert f'href="/admin/flows/{flow_id}"' in html
    page = ops.text("/admin/flows/complaint")
    assert 'data-graph-url="/admin/flows/complaint/graph.json?version=1"' in page
    assert "Running instances of v1" in page
    body = ops.get("/admin/flows/complaint/graph.json?version=1").get_json()
    assert body["nodes"] and body["edges"] and body["current"] == []
    assert ops.get("/admin/flows/nope").status_code == 404


def test_deploy_from_the_editor_creates_a_version_and_shows_it(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    ops = signed_in("ops")
    ops.text("/admin/flows/deploy")
    response = ops.post("/admin/flows/deploy", {"source": SIMPLE})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/flows/web_simple"
    page = ops.text("/admin/flows/web_simple")
    assert "Deployed web_simple as version 1." in page
    edges = ops.get("/admin/flows/web_simple/graph.json").get_json()["edges"]
    assert {(e["sourceNodeId"], e["targetNodeId"], e.get("text")) for e in edges} == {
        ("check", "big", "vars.amount > 100"), ("check", "small", "otherwise")}
    # the same text again changes nothing
    ops.text("/admin/flows/deploy")
    ops.post("/admin/flows/deploy", {"source": SIMPLE})
    assert "Nothing changed" in ops.text("/admin/flows/web_simple")
    entries, _total = cf.audit_entries(action="flow.deploy", actor="ops")
    assert [e["target_id"] for e in entries] == ["web_simple"]


def test_deploy_with_problems_shows_them_by_line_and_deploys_nothing(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    ops = signed_in("ops")
    ops.text("/admin/flows/deploy")
    broken = SIMPLE.replace("default: small", "default: smal")
    response = ops.post("/admin/flows/deploy", {"source": broken})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    line = broken.splitlines().index("    default: smal") + 1
    assert f'href="#line-{line}"' in html and f'<li id="line-{line}" class="cf-bad-line">' in html
    assert "smal" in html and "Problems found: 1. Nothing was deployed." in html
    # the text stays in the editor for fixing
    assert "default: smal</textarea>" not in html and "default: smal\n" in html
    assert ops.get("/admin/flows/web_simple").status_code == 404
    assert "unknown step &#39;smal&#39;; did you mean &#39;small&#39;?" in html


def test_deploy_problems_are_shown_in_chinese_on_the_chinese_page(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    ops = signed_in("ops", "zh")
    ops.text("/admin/flows/deploy")
    response = ops.post("/admin/flows/deploy", {"source": SIMPLE.replace("default: small", "default: smal")})
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and "未知的步骤 &#39;smal&#39;；是不是想写 &#39;small&#39;？" in html
    assert "unknown step" not in html


def test_deploy_by_upload_checks_the_file_name(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    ops = signed_in("ops")
    ops.text("/admin/flows/deploy")
    wrong = ops.post("/admin/flows/deploy", {"source": "", "file": (BytesIO(SIMPLE.encode()), "other.yaml")},
                     content_type="multipart/form-data")
    assert wrong.status_code == 422 and "must equal the file name" in wrong.get_data(as_text=True)
    right = ops.post("/admin/flows/deploy", {"source": "", "file": (BytesIO(SIMPLE.encode()), "web_simple.yaml")},
                     content_type="multipart/form-data")
    assert right.status_code == 302
    empty = ops.post("/admin/flows/deploy", {"source": "  "})
    assert empty.status_code == 422 and "Paste a flow or choose a YAML file." in empty.get_data(as_text=True)


def test_deploy_needs_its_role_and_csrf(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    wang = signed_in("wang")
    assert wang.get("/admin/flows/deploy").status_code == 403
    wang.text("/admin/flows")
    assert wang.post("/admin/flows/deploy", {"source": SIMPLE}).status_code == 403
    ops = signed_in("ops")
    assert ops.post("/admin/flows/deploy", {"source": SIMPLE}, csrf=False).status_code == 400
    assert ops.get("/admin/flows/web_simple").status_code == 404
    assert re.search(r"Deploy a flow", wang.text("/admin/flows")) is None

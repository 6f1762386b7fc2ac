"""The designer's JSON endpoints through the Flask test client: a designer, a read-only role, nobody."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from engine.app import create_app
from engine.core import Careflow
from engine.store.definitions import latest_flow_version, latest_flow_versions
from tests.integration.admin.conftest import Browser, token_of
from tests.integration.test_app import PASSWORD

NEW_FLOW = """\
# a flow made in the designer
id: designer_hello
name: {zh: 问候, en: Hello}
triggers:
  - type: manual
steps:
  - id: note
    type: action
    connector: timeline
    params:
      text: "hello {{ customer.name }}"
    next: done
  - id: done
    type: end
"""


@pytest.fixture
def app(cf: Careflow) -> Flask:
    return create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf)


@pytest.fixture
def signed_in(app: Flask) -> Callable[..., Browser]:
    def sign(username: str, lang: str = "en") -> Browser:
        browser = Browser(app.test_client(), lang)
        page = browser.get("/login").get_data(as_text=True)
        response = browser.client.post("/login", data={"username": username, "password": PASSWORD,
                                                       "csrf_token": token_of(page)}, headers=browser.headers)
        assert response.status_code == 302
        browser.get("/")
        assert browser.csrf
        return browser

    return sign


def post(browser: Browser, path: str, body: Any, csrf: bool = True) -> Any:
    # As the page's JS does: a JSON body and the CSRF token in the X-CSRFToken header.
    headers = {**browser.headers, **({"X-CSRFToken": browser.csrf} if csrf else {})}
    return browser.client.post(f"/admin/designer/api/{path}", json=body, headers=headers)


def test_open_edit_check_and_publish(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    ops = signed_in("ops")
    palette = ops.get("/admin/designer/api/palette").get_json()
    task = next(s for s in palette["steps"] if s["kind"] == "task")
    assert task["label"] == "Task" and task["shape"] == "rect" and "form" in task["schema"]["properties"]
    assert {"kind": "decision", "shape": "diamond"}.items() <= next(s for s in palette["steps"] if s["kind"] == "decision").items()
    assert {t["kind"] for t in palette["triggers"]} >= {"manual", "form", "schedule", "date", "segment"}
    assert {"id": "service_agent", "name": "Service agent"} in palette["roles"]
    assert "complaint_intake" in {f["id"] for f in palette["forms"]}
    assert {"name": "timeline", "type": "timeline"} in palette["connectors"]

    opened = ops.get("/admin/designer/api/flows/complaint/source").get_json()
    assert opened["flow"] == "complaint" and opened["version"] == 1
    assert opened["source"].startswith("# yaml-language-server")
    assert ops.get("/admin/designer/api/flows/complaint/source?version=9").status_code == 404

    drawn = post(ops, "graph", {"source": opened["source"]})
    assert drawn.status_code == 200, drawn.get_data(as_text=True)
    body = drawn.get_json()
    assert body["problems"] == []
    graph = body["graph"]
    triage = next(n for n in graph["nodes"] if n["id"] == "triage")
    # Keys come in the file's order (the page shows them so, and new ones are appended).
    assert list(triage["properties"]["step"]) == ["type", "name", "form", "title", "assignee", "due", "reminders"]
    triage["properties"]["step"]["due"] = {"hours": 2}

    saved = post(ops, "yaml", {"graph": graph, "source": opened["source"]}).get_json()
    assert saved["problems"] == []
    assert "    due: {hours: 2}\n" in saved["source"] and "# 投诉处理 · Complaint handling" in saved["source"]
    assert "\nlayout:\n  ticket: [" in saved["source"]

    cf.start("complaint", customer_id=None)
    changes = post(ops, "changes", {"source": saved["source"]}).get_json()
    assert changes["flow"] == "complaint" and changes["running_version"] == 1
    assert changes["running_instances"] == 1 and changes["unchanged"] is False
    assert [(c["change"], c["what"], c["id"]) for c in changes["changes"]] == [("changed", "step", "triage")]
    assert changes["changes"][0]["summary"] == "Step “Triage” (triage) changed: due"

    published = post(ops, "publish", {"source": saved["source"]})
    assert published.get_json() == {"flow": "complaint", "version": 2, "changed": True}
    again = post(ops, "publish", {"source": saved["source"]}).get_json()
    assert again == {"flow": "complaint", "version": 2, "changed": False}
    assert post(ops, "changes", {"source": saved["source"]}).get_json()["unchanged"] is True
    with cf.session() as s:
        assert latest_flow_version(s, "complaint").deployed_by == "ops"
    entries, _total = cf.audit_entries(action="flow.deploy", actor="ops")
    assert len(entries) == 1

    # A flow drawn from scratch: no running version yet, every step is new.
    new = post(ops, "changes", {"source": NEW_FLOW}).get_json()
    assert new["running_version"] is None and new["running_instances"] == 0
    assert {("added", "step", "note"), ("added", "edge", "note->done:next")} <= {
        (c["change"], c["what"], c["id"]) for c in new["changes"]}
    assert post(ops, "publish", {"source": NEW_FLOW}).get_json() == {"flow": "designer_hello", "version": 1, "changed": True}


# Only publishing touches the database in ways that differ between backends.
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
def test_problems_and_unreadable_text(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    ops = signed_in("ops", "zh")
    unreadable = post(ops, "graph", {"source": "id: [oops\n"})
    assert unreadable.status_code == 422
    problem = unreadable.get_json()["problems"][0]
    assert problem["line"] >= 1 and problem["node"] is None
    assert post(ops, "graph", {"source": ""}).status_code == 422
    assert post(ops, "graph", {}).status_code == 422
    assert post(ops, "changes", {"source": "- a\n"}).status_code == 422
    assert post(ops, "yaml", {"graph": {"nodes": "x"}, "source": ""}).status_code == 422

    broken = NEW_FLOW.replace("next: done", "next: don")
    drawn = post(ops, "graph", {"source": broken}).get_json()
    # A transition to a missing step is no edge (the canvas cannot draw one): it stays on the step.
    assert [(p["node"], p["edge"]) for p in drawn["problems"]] == [("note", None)]
    assert drawn["graph"]["edges"] == [] and drawn["graph"]["nodes"][0]["properties"]["step"]["next"] == "don"
    assert drawn["graph"]["nodes"][0]["properties"]["kind"] == "action"

    refused = post(ops, "publish", {"source": broken})
    assert refused.status_code == 422
    assert [(p["node"], p["edge"]) for p in refused.get_json()["problems"]] == [("note", None)]
    with cf.session() as s:
        assert "designer_hello" not in {v.flow_id for v in latest_flow_versions(s)}

    # Summaries follow the page's language.
    changes = post(ops, "changes", {"source": NEW_FLOW}).get_json()
    assert "新增动作步骤 note" in [c["summary"] for c in changes["changes"]]
    assert next(s for s in ops.get("/admin/designer/api/palette").get_json()["steps"] if s["kind"] == "task")["label"] == "人工任务"


@SQLITE_ONLY
def test_roles_and_csrf(cf: Careflow, signed_in: Callable[..., Browser], app: Flask) -> None:
    wang = signed_in("wang")  # an account manager: may read flows, may not deploy them
    assert post(wang, "graph", {"source": NEW_FLOW}).status_code == 200
    refused = post(wang, "publish", {"source": NEW_FLOW})
    assert refused.status_code == 403 and refused.get_json()["problems"]
    assert post(signed_in("wang", "zh"), "publish", {"source": NEW_FLOW}).get_json()["error"] == "您的角色无权执行此操作。"
    ops = signed_in("ops")
    forged = post(ops, "publish", {"source": NEW_FLOW}, csrf=False)
    assert forged.status_code == 400 and "reload the page" in forged.get_json()["error"]
    with cf.session() as s:
        assert "designer_hello" not in {v.flow_id for v in latest_flow_versions(s)}
    nobody = app.test_client()
    assert nobody.get("/admin/designer/api/palette").status_code == 401
    assert nobody.get("/admin/designer/api/flows/complaint/source").status_code == 401


MISTAKES = """\
id: designer_mistakes
name: {zh: 错误示例, en: Mistakes}
triggers:
  - type: schedule
    cron: "0 9 * *"
  - type: form
    form: complaint_intak
steps:
  - id: note
    type: action
    connector: timeline
    params:
      text: hello
    next: dnoe
  - id: done
    type: end
"""
MISSING_KEY = MISTAKES + "  - id: ask\n    type: task\n"
TAB = MISTAKES.replace("    next: dnoe", "\tnext: dnoe")


@SQLITE_ONLY
def test_problems_in_the_signed_in_users_language(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    from sqlalchemy import update

    from engine.store.models import User

    # The user's own choice wins over the browser's Accept-Language, as for the pages.
    with cf.sessions.begin() as s:
        s.execute(update(User).where(User.username == "ops").values(language="zh"))
        s.execute(update(User).where(User.username == "admin").values(language="en"))
    chinese, english = signed_in("ops", "en"), signed_in("admin", "zh")

    def messages(browser: Browser, endpoint: str, source: str) -> list[tuple[str, int, str]]:
        response = post(browser, endpoint, {"source": source})
        return [(p["path"], p["line"], p["message"]) for p in response.get_json()["problems"]]

    assert messages(chinese, "graph", MISTAKES) == [
        ("$.triggers[0].cron", 5, "cron 表达式 '0 9 * *' 有误：应有 5 个字段（分 时 日 月 星期），实际有 4 个"),
        ("$.triggers[1].form", 7, "未知的表单 'complaint_intak'；是不是想写 'complaint_intake'？"),
        ("$.steps[0].next", 14, "未知的步骤 'dnoe'；是不是想写 'note'？"),
    ]
    assert messages(english, "graph", MISTAKES) == [
        ("$.triggers[0].cron", 5, "bad cron expression '0 9 * *': expected 5 fields (minute hour day month weekday), got 4"),
        ("$.triggers[1].form", 7, "unknown form 'complaint_intak'; did you mean 'complaint_intake'?"),
        ("$.steps[0].next", 14, "unknown step 'dnoe'; did you mean 'note'?"),
    ]
    assert ("$.steps[2]", 17, "缺少必需的键 'form'") in messages(chinese, "publish", MISSING_KEY)
    assert ("$.steps[2]", 17, "missing required key 'form'") in messages(english, "publish", MISSING_KEY)
    # Text the designer cannot even draw is refused in the same language.
    assert messages(chinese, "graph", TAB) == [("$.steps[0].params.text", 14, "缩进不能使用制表符（Tab）；请使用空格")]
    assert messages(english, "graph", TAB) == [
        ("$.steps[0].params.text", 14, "tab characters are not allowed for indentation; use spaces")]


@SQLITE_ONLY
def test_numbers_and_lists_out_of_range_are_refused_by_field(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    ops = signed_in("ops")

    def refused(response: Any) -> dict[str, Any]:
        assert response.status_code == 422, response.get_data(as_text=True)
        return response.get_json()["problems"][0]

    problem = refused(post(ops, "changes", {"source": NEW_FLOW.replace("triggers:\n  - type: manual", "triggers: 5")}))
    assert problem["path"] == "$.triggers" and "'triggers' must be a list" in problem["message"] and problem["line"] == 4
    problem = refused(post(ops, "graph", {"source": NEW_FLOW + "layout: {note: [.inf, 0]}\n"}))
    assert problem["path"] == "$.layout.note" and "inf" in problem["message"]
    assert post(ops, "graph", {"source": NEW_FLOW + "layout: {note: [10, 20]}\n"}).status_code == 200

    graph = post(ops, "graph", {"source": NEW_FLOW}).get_json()["graph"]
    for bad in ("Infinity", "1e999", "NaN", "-Infinity"):
        # JSON as a page could send it: the app's JSON refuses these, naming the value
        body = json.dumps({"source": NEW_FLOW, "graph": {**graph, "nodes": [{**graph["nodes"][0], "x": "X"}]}})
        response = ops.client.post("/admin/designer/api/yaml", data=body.replace('"x": "X"', f'"x": {bad}'),
                                   content_type="application/json", headers={**ops.headers, "X-CSRFToken": ops.csrf})
        assert bad.lstrip("-") in refused(response)["message"]
    # ... and numbers too large to draw, which JSON can carry as integers
    huge = {**graph, "nodes": [{**graph["nodes"][0], "x": 10**30}, *graph["nodes"][1:]]}
    problem = refused(post(ops, "yaml", {"source": NEW_FLOW, "graph": huge}))
    assert "nodes[0].x must be a number" in problem["message"] and str(10**30) in problem["message"]
    ordered = copy.deepcopy(graph)
    ordered["nodes"][0]["properties"]["kind"] = "parallel"
    ordered["edges"][0]["properties"] = {"kind": "branch", "order": 10**400}
    assert "edges[0].properties.order" in refused(post(ops, "yaml", {"source": NEW_FLOW, "graph": ordered}))["message"]

    for version in (str(10**30), "0", "-1", "x"):
        response = ops.get(f"/admin/designer/api/flows/complaint/source?version={version}")
        assert response.status_code == 422 and response.get_json()["problems"][0]["path"] == "version"
    assert ops.get("/admin/designer/api/flows/complaint/source?version=1").status_code == 200


@SQLITE_ONLY
def test_the_designers_own_problems_in_chinese(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    zh = signed_in("ops", "zh")

    def message(endpoint: str, body: Any) -> str:
        response = post(zh, endpoint, body)
        assert response.status_code == 422, response.get_data(as_text=True)
        return response.get_json()["problems"][0]["message"]

    assert message("graph", {"source": "id: x\nsteps:\n  - type: end\n"}) == "每个步骤都需要 'id' 才能画出来"
    assert message("graph", {"source": "id: x\nsteps:\n  - {id: a, type: end}\n  - {id: a, type: end}\n"}) == (
        "重复的步骤 id 'a'：请重命名其中一个，才能画出流程")
    assert message("graph", {"source": "id: x\nsteps: 5\n"}) == "'steps' 必须是步骤的列表"
    assert message("yaml", {"source": "", "graph": {"nodes": [{"id": "a"}, {"id": "a"}]}}) == (
        "无法读取流程图：nodes[1]：id 'a' 用了两次")
    assert message("changes", {"source": "id: x\ntriggers: {a: 1}\nsteps: []\n"}).startswith("'triggers' 必须是触发器的列表")
    assert zh.get("/admin/designer/api/flows/complaint/source?version=0").get_json()["problems"][0]["message"] == (
        "'version' 必须是 1 到 2147483647 之间的整数，而不是 '0'")

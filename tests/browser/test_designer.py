"""The flow designer in chromium: building the birthday flow from an empty canvas and publishing
it, opening every built-in flow and saving it unchanged, and a problem shown on its node.

Set CAREFLOW_SCREENSHOTS=1 to refresh the pictures of docs/designer.*.md in docs/images
(otherwise they go to a temporary folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select

from engine.flow.yaml_loader import load_yaml
from engine.store.models import FlowVersion, Instance, Task
from tests.browser.conftest import Site, open_page, sign_in
from tests.support.pagetext import untranslated

ROOT = Path(__file__).resolve().parents[2]
DOCS_IMAGES = ROOT / "docs" / "images"
BUILTIN = sorted(p.stem for p in (ROOT / "workflows").glob("*.yaml"))


def images(tmp_path: Path) -> Path:
    return DOCS_IMAGES if os.environ.get("CAREFLOW_SCREENSHOTS") == "1" else tmp_path


def open_designer(page: Any, site: Site, flow_id: str | None = None) -> None:
    page.goto(site.url + "/admin/designer" + (f"/{flow_id}" if flow_id else ""))
    page.locator("#designer[data-ready]").wait_for()


def settle(page: Any) -> None:
    """Waits until the canvas and the YAML agree (the page's own pre-publish step)."""
    page.evaluate("() => window.careflowDesigner.settled()")


def panel(page: Any) -> Any:
    return page.locator("#panel")


def add(page: Any, kind: str) -> str:
    """Adds a step by clicking its palette item; returns the new step's id."""
    page.locator(f".lf-dnd-item[data-kind='{kind}']").click()
    page.wait_for_function("k => (document.querySelector('#panel').dataset.step || '').startsWith(k)", arg=kind)
    return str(panel(page).get_attribute("data-step"))


def drag(page: Any, kind: str, dx: int, dy: int) -> str:
    """Drags a step from the palette onto the canvas, (dx, dy) from the canvas' top-left corner."""
    page.locator(f".lf-dnd-item[data-kind='{kind}']").hover()
    page.mouse.down()
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + dx - 20, box["y"] + dy - 20, steps=4)
    page.mouse.move(box["x"] + dx, box["y"] + dy, steps=2)
    page.mouse.up()
    page.wait_for_function("k => (document.querySelector('#panel').dataset.step || '').startsWith(k)", arg=kind)
    return str(panel(page).get_attribute("data-step"))


def rename(page: Any, step_id: str) -> None:
    box = panel(page).get_by_label("步骤编号")
    box.fill(step_id)
    box.press("Tab")
    page.wait_for_function("id => document.querySelector('#panel').dataset.step === id", arg=step_id)


def field(page: Any, label: str) -> Any:
    return panel(page).get_by_label(label, exact=True)


def without_layout(text: str) -> str:
    """The YAML text minus a top-level ``layout:`` block (the designer's node positions) and the
    blank lines that set it apart."""
    return re.sub(r"(?m)^layout:.*\n(?:(?:[ \t]+.*|[ \t]*)\n)*", "", text.rstrip("\n") + "\n").rstrip("\n")


def semantics(text: str) -> Any:
    """The flow as the engine's loader of record reads it, without the layout block."""
    data = dict(load_yaml(text, "test").data)
    data.pop("layout", None)
    return data


def test_build_the_birthday_flow_from_an_empty_canvas_publish_and_run_it(page: Any, site: Site, tmp_path: Path) -> None:
    shots = images(tmp_path)
    cid = site.cf.create_customer({"name": "郑欣", "phone": "+8613900005555", "grade": "A", "owner": "wang",
                                   "preferred_channel": "sms"}, fire_triggers=False)
    sign_in(page, site, "ops")
    page.goto(site.url + "/admin/flows")
    page.locator("#new-in-designer").click()
    page.locator("#designer[data-ready]").wait_for()

    # the flow's own settings: shown while no step is selected
    field(page, "流程编号").fill("birthday_designer")
    field(page, "流程编号").press("Tab")
    field(page, "名称（中文）").fill("生日关怀（设计器）")
    field(page, "名称（英文）").fill("Birthday care (designer)")
    field(page, "触发方式").select_option("date")
    field(page, "时间（HH:MM）").fill("09:00")
    field(page, "时间（HH:MM）").press("Tab")

    # greet: an action on the customer's preferred channel, with templated zh/en text
    add(page, "action")
    rename(page, "greet")
    # a new action has no connector yet: the problem shows on its node and in the list
    page.locator("#problems [data-node='greet']").first.wait_for()
    page.screenshot(path=str(shots / "designer-problem.zh.png"), full_page=False)
    field(page, "名称（中文）").fill("生日祝福")
    field(page, "名称（英文）").fill("Birthday greeting")
    field(page, "连接器").select_option("preferred")
    for n, (key, zh, en) in enumerate([("subject", "生日快乐", "Happy birthday"),
                                       ("text", "{{ customer.name }}，祝您生日快乐！", "Happy birthday, {{ customer.name }}!")]):
        panel(page).get_by_role("button", name="添加取值").click()
        panel(page).get_by_label("参数", exact=True).nth(n).fill(key)
        panel(page).get_by_label("参数", exact=True).nth(n).press("Tab")
        panel(page).get_by_label("取值（中文）", exact=True).nth(n).fill(zh)
        panel(page).get_by_label("取值（英文，可不填）", exact=True).nth(n).fill(en)
        panel(page).get_by_label("取值（英文，可不填）", exact=True).nth(n).press("Tab")
    # with greet selected, a new decision is joined to it as its next step
    add(page, "decision")
    rename(page, "is_grade_a")
    # the task is dragged onto the canvas; a decision's ways out are its cases, so no edge yet
    drag(page, "task", 300, 420)
    rename(page, "birthday_call")
    field(page, "名称（中文）").fill("生日致电")
    field(page, "表单").select_option("birthday_call")
    field(page, "处理人").select_option("expr")
    field(page, "按表达式").fill("customer.owner")
    field(page, "按表达式").press("Tab")
    page.get_by_label("截止时间 · 数量").fill("1")
    page.get_by_label("截止时间 · 单位").select_option("business_days")
    add(page, "end")
    rename(page, "done_with_call")
    field(page, "结果").fill("greeted_and_called")
    field(page, "结果").press("Tab")
    # the other end, added by keyboard from the palette while the decision is selected
    panel(page).get_by_label("要编辑的步骤").select_option("is_grade_a")
    page.locator(".lf-dnd-item[data-kind='end']").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelector('#panel').dataset.step === 'end'")
    rename(page, "done")
    field(page, "结果").fill("greeted")
    field(page, "结果").press("Tab")

    # the decision: one case to the call, otherwise the end, chosen in the panel (no dragging)
    panel(page).get_by_label("要编辑的步骤").select_option("is_grade_a")
    panel(page).get_by_role("button", name="添加条件").click()
    field(page, "条件 1").fill("customer.grade == 'A'")
    field(page, "条件 1").press("Tab")
    field(page, "转到").select_option("birthday_call")
    field(page, "否则").select_option("done")
    # auto-layout: rows by distance from the first step (the positions go into the layout block)
    page.get_by_role("button", name="自动布局").click()
    settle(page)
    # the canvas controls stay keyboard buttons after the graph is drawn again
    assert page.locator("#canvas .lf-control-item[role=button][tabindex='0']").count() == 5

    source = page.evaluate("() => window.careflowDesigner.source()")
    assert page.locator("#yaml").input_value() == source
    flow = load_yaml(source, "test").data
    steps = {s["id"]: s for s in flow["steps"]}
    assert [s["id"] for s in flow["steps"]] == ["greet", "is_grade_a", "birthday_call", "done_with_call", "done"]
    assert steps["greet"]["next"] == "is_grade_a" and steps["birthday_call"]["next"] == "done_with_call"
    assert steps["is_grade_a"]["cases"] == [{"when": "customer.grade == 'A'", "next": "birthday_call"}]
    assert steps["is_grade_a"]["default"] == "done"
    assert steps["birthday_call"]["assignee"] == {"expr": "customer.owner"}
    assert steps["birthday_call"]["due"] == {"business_days": 1}
    assert flow["triggers"] == [{"type": "date", "field": "birthday", "at": "09:00"}]
    assert set(flow["layout"]) == set(steps)
    rows = {step_id: y for step_id, (_x, y) in flow["layout"].items()}
    assert rows["greet"] < rows["is_grade_a"] < rows["birthday_call"] == rows["done"] < rows["done_with_call"]
    assert page.evaluate("() => window.careflowDesigner.problems()") == []
    page.locator("#canvas .lf-node").first.wait_for()
    page.screenshot(path=str(shots / "designer-build.zh.png"), full_page=False)

    # a dry run for the grade-A customer: the greeting, then the call task, nothing sent for real
    page.get_by_role("button", name="试运行").click()
    page.get_by_label("客户", exact=True).select_option(str(cid))
    page.get_by_role("button", name="运行", exact=True).click()
    summary = page.locator("#dry-run-summary")
    summary.wait_for()
    # the task is answered with its form's defaults, so the run reaches the end after the call
    assert summary.get_attribute("data-outcome") == "greeted_and_called"
    result = page.locator("#dry-run-result").inner_text()
    assert "greet" in result and "birthday_call" in result and "生日快乐" in result
    page.locator("#dry-run").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "designer-dry-run.zh.png"), full_page=False)
    assert untranslated(page.content(), "zh") == []

    # publish: first the changes (a new flow, no running instances), then the deployment
    page.locator("#publish").click()
    dialog = page.locator("#publish-dialog")
    dialog.wait_for()
    assert "版本 1" in dialog.inner_text() or "尚未发布" in dialog.inner_text()
    page.screenshot(path=str(shots / "designer-publish.zh.png"), full_page=False)
    page.locator("#publish-confirm").click()
    page.wait_for_function("() => document.querySelector('#designer').dataset.published === 'birthday_designer:1'")

    # the published flow runs: a grade-A customer gets the greeting and a call task for the owner
    iid = site.cf.start("birthday_designer", customer_id=cid)
    site.cf.tick()
    with site.cf.session() as s:
        version = s.scalars(select(FlowVersion).where(FlowVersion.flow_id == "birthday_designer")).one()
        assert version.deployed_by == "ops"
        instance = s.get(Instance, iid)
        assert instance is not None and instance.status == "running"
        task = s.scalars(select(Task).where(Task.instance_id == iid)).one()
        assert task.step_id == "birthday_call" and task.status == "open"


def test_every_builtin_flow_saves_unchanged_apart_from_its_layout(page: Any, site: Site, tmp_path: Path) -> None:
    sign_in(page, site, "ops")
    for flow_id in BUILTIN:
        open_designer(page, site, flow_id)
        page.locator("#canvas .lf-node").first.wait_for()
        if flow_id == "birthday":
            page.screenshot(path=str(images(tmp_path) / "designer-open.zh.png"), full_page=False)
        settle(page)  # what Publish does first: the canvas written back to YAML
        saved = page.evaluate("() => window.careflowDesigner.source()")
        with site.cf.session() as s:
            original = s.scalars(select(FlowVersion.source).where(FlowVersion.flow_id == flow_id)
                                 .order_by(FlowVersion.version.desc()).limit(1)).one()
        assert "\nlayout:" in saved, flow_id
        assert semantics(saved) == semantics(original), flow_id
        assert without_layout(saved) == without_layout(original), flow_id
        assert page.evaluate("() => window.careflowDesigner.problems()") == [], flow_id


def test_an_invalid_edit_shows_its_problem_on_the_node(browser: Any, site: Site, tmp_path: Path) -> None:
    context, page, watch = open_page(browser, "en")
    try:
        sign_in(page, site, "ops")
        page.goto(site.url + "/admin/flows/birthday")
        page.locator("#open-in-designer").click()
        page.locator("#designer[data-ready]").wait_for()
        page.locator("#canvas .lf-node").first.wait_for()
        page.screenshot(path=str(images(tmp_path) / "designer-open.en.png"), full_page=False)
        panel(page).get_by_label("Step to edit").select_option("birthday_call")
        field(page, "Form").select_option("")
        page.locator("#problems [data-node='birthday_call']").wait_for()
        problem = page.evaluate("() => window.careflowDesigner.lf().getNodeModelById('birthday_call').problem")
        assert "form" in problem
        assert page.locator("#canvas .lf-node rect[stroke='#dc3545']").count() == 1  # the red frame
        assert page.locator("#panel [role=alert]").count() >= 1
        assert page.locator("#designer").get_attribute("data-problems") != "0"
        page.screenshot(path=str(images(tmp_path) / "designer-problem.en.png"), full_page=False)
        assert untranslated(page.content(), "en") == []
        # Undo takes the edit back (not just its red frame), Redo makes it again
        undo = page.locator("#canvas .lf-control-item[role=button]", has_text="Undo")
        undo.click()
        page.wait_for_function("() => document.querySelector('#designer').dataset.problems === '0'")
        assert page.evaluate("() => window.careflowDesigner.lf().getProperties('birthday_call').step.form") == "birthday_call"
        page.locator("#canvas .lf-control-item[role=button]", has_text="Redo").click()
        page.locator("#problems [data-node='birthday_call']").wait_for()
        # the same edit in the YAML shows on the canvas too: the step comes back with its form
        text = page.locator("#yaml").input_value()
        assert "form: birthday_call" not in text
        page.locator("#yaml").fill(text.replace("    type: task\n", "    type: task\n    form: birthday_call\n", 1))
        page.wait_for_function("() => document.querySelector('#designer').dataset.problems === '0'")
        assert page.locator("#canvas [stroke='#dc3545']").count() == 0
        assert page.evaluate("() => window.careflowDesigner.lf().getProperties('birthday_call').step.form") == "birthday_call"
        # back to the deployed flow (plus a layout block): Publish names the running version, no changes
        page.locator("#publish").click()
        page.locator("#publish-dialog").wait_for()
        summary = page.locator("#publish-summary").inner_text()
        assert "Running version v1 has 0 running instances" in summary
        assert "No change to steps" in summary and page.locator("#publish-changes li").count() == 0
        page.screenshot(path=str(images(tmp_path) / "designer-publish.en.png"), full_page=False)
        page.get_by_role("button", name="Cancel").click()
        # a dry run for some customer, in English
        page.get_by_role("button", name="Dry run").click()
        page.get_by_label("Customer", exact=True).select_option(index=1)
        page.get_by_role("button", name="Run", exact=True).click()
        page.locator("#dry-run-summary").wait_for()
        assert "greet" in page.locator("#dry-run-result").inner_text()
        page.locator("#dry-run").scroll_into_view_if_needed()
        page.screenshot(path=str(images(tmp_path) / "designer-dry-run.en.png"), full_page=False)
        # a `next:` to a step that does not exist: shown on its node; a later canvas edit keeps it
        text = page.locator("#yaml").input_value()
        page.locator("#yaml").fill(text.replace("next: is_grade_a", "next: is_grade_b", 1))
        page.locator("#problems [data-node='greet']").wait_for()
        assert "is_grade_b" in page.evaluate("() => window.careflowDesigner.lf().getNodeModelById('greet').problem")
        assert page.locator("#yaml-error").inner_text() == ""
        panel(page).get_by_label("Step to edit").select_option("birthday_call")
        field(page, "Form").select_option("")
        page.locator("#problems [data-node='birthday_call']").wait_for()
        settle(page)
        text = page.locator("#yaml").input_value()
        assert "next: is_grade_b" in text and "form: birthday_call" not in text
        # ... and Publish and Dry run still answer (they wait for the last request)
        page.locator("#publish").click()
        page.wait_for_function("() => document.querySelector('#designer-status').textContent.includes('Fix the problems')")
        page.evaluate("() => { document.querySelector('#dry-run-result').textContent = ''; }")
        page.get_by_role("button", name="Run", exact=True).click()
        page.wait_for_function("() => document.querySelector('#dry-run-result').textContent.includes('Fix the problems')")
        # the edits are not published (the text now has a layout block): leaving asks first
        asked: list[str] = []
        page.on("dialog", lambda dialog: (asked.append(dialog.type), dialog.accept()))
        response = page.goto(site.url + "/admin/designer/no_such_flow")
        assert asked == ["beforeunload"]
        assert response is not None and response.status == 404
        # (the dry run of the flow with a problem is refused: 422, which chromium logs)
        refused = "status of 422 (UNPROCESSABLE ENTITY) at " + site.url + "/admin/designer/api/dry-run"
        assert [e for e in watch.errors if not e.endswith(refused)] == [], watch.errors
    finally:
        context.close()

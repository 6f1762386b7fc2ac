"""The form designer in chromium: build a form with a conditional field, reorder it by dragging,
watch the preview follow, save it; then use it in a task and answer it in the inbox.

Set CAREFLOW_SCREENSHOTS=1 (``make screenshots``) to refresh the designer's screenshots in docs/images.
"""

from __future__ import annotations

import json
from typing import Any

from playwright.sync_api import expect
from sqlalchemy import select

from engine.store.models import FormVersion, Task
from tests.browser.conftest import Site, open_page, screenshot_folder, sign_in

FLOW = """
id: contact_again_flow
name: {zh: 再次联系, en: Contact again}
triggers: [{type: manual}]
steps:
  - id: call
    type: task
    form: contact_again
    title: {zh: 回访客户, en: Call the customer}
    assignee: {user: chen}
    next: done
  - id: done
    type: end
"""


def shot(page: Any, name: str) -> None:
    folder = screenshot_folder()
    if folder:
        page.screenshot(path=str(folder / name), full_page=True)


def add_field(page: Any, key: str, type_: str, zh: str, en: str, required: bool = False) -> None:
    page.click("#fd-add")
    page.fill("#fd-key", key)
    page.select_option("#fd-type", type_)
    page.fill("#fd-label-zh", zh)
    page.fill("#fd-label-en", en)
    if required:
        page.check("#fd-required")


def drag(page: Any, source: Any, target: Any) -> None:
    """Drag with the mouse in small steps, as a person does (SortableJS follows pointer moves)."""
    box, goal = source.bounding_box(), target.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(goal["x"] + goal["width"] / 2, goal["y"] + 2, steps=12)
    page.mouse.move(goal["x"] + goal["width"] / 2, goal["y"] + 1, steps=3)
    page.mouse.up()


def test_build_a_conditional_form_save_it_and_answer_it_in_the_inbox(page: Any, site: Site, browser: Any) -> None:
    sign_in(page, site, "ops")
    page.goto(site.url + "/admin/forms")
    page.click("#new-form")
    page.wait_for_url("**/admin/forms/new")
    page.fill("#fd-id", "contact_again")
    page.fill("#fd-title-zh", "回访结果")
    page.fill("#fd-title-en", "Follow-up result")

    add_field(page, "contact", "yesno", "需要再次联系？", "Contact again?", required=True)
    page.fill("#fd-option-zh-0", "需要")
    page.fill("#fd-option-en-0", "Yes")
    add_field(page, "when", "date", "联系日期", "When", required=True)
    page.check("#fd-conditional")
    page.select_option("#fd-cond-field", "contact")
    page.select_option("#fd-cond-value", "true")
    page.locator("#fd-field-list .fd-select").first.click()
    page.fill("#fd-key", "again")  # renaming keeps the condition that names the field
    add_field(page, "note", "text", "备注", "Note")
    page.fill("#fd-maxlength", "200")

    preview = page.locator("#fd-preview-fields")
    expect(preview.locator("#f-note")).to_be_visible()
    expect(page.locator("#fd-problems")).to_be_hidden()
    assert preview.locator("#f-when").count() == 0  # not shown until "again" is yes
    labels = preview.locator("label.form-label, legend")
    expect(labels.first).to_contain_text("需要再次联系？")

    # drag "note" to the top of the list: the list and the preview follow
    items = page.locator("#fd-field-list .fd-field")
    drag(page, items.nth(2).locator(".fd-handle"), items.nth(0))
    expect(items.nth(0)).to_have_attribute("data-key", "note")
    expect(labels.first).to_contain_text("备注")
    # and back down one place from the keyboard
    items.nth(0).locator(".fd-down").focus()
    page.keyboard.press("Enter")
    expect(items.nth(1)).to_have_attribute("data-key", "note")
    expect(page.locator("#fd-field-list .fd-field .fd-down").nth(1)).to_be_focused()

    # the condition works in the preview, through the server's renderer
    preview.get_by_label("需要", exact=True).check()
    expect(preview.locator("#f-when")).to_be_visible()
    page.click("#fd-check")
    expect(preview.locator("#err-when")).to_be_visible()
    shot(page, "form-designer.zh.png")

    # the raw JSON tab shows what is saved
    page.click("#fd-tab-json")
    saved_json = json.loads(page.input_value("#fd-raw"))
    assert saved_json["x-order"] == ["again", "note", "when"]
    assert saved_json["then"] == {"required": ["when"]}
    page.click("#fd-tab-fields")

    page.click("#fd-save")
    expect(page.locator("#fd-saved")).to_be_visible()
    page.wait_for_url("**/admin/forms/contact_again/design")
    with site.cf.session() as s:
        versions = list(s.scalars(select(FormVersion).where(FormVersion.form_id == "contact_again")))
    assert [v.version for v in versions] == [1]
    if screenshot_folder():  # the English page for docs/designer.en.md
        context, english, _watch = open_page(browser, "en")
        sign_in(english, site, "ops")
        english.goto(site.url + "/admin/forms/contact_again/design")
        english.locator("#fd-field-list .fd-select").nth(2).click()
        english.locator("#fd-preview-fields").get_by_label("Yes", exact=True).check()
        expect(english.locator("#fd-preview-fields #f-when")).to_be_visible()
        shot(english, "form-designer.en.png")
        context.close()

    # a flow uses it in a task for chen
    site.cf.deploy_flow_text(FLOW, "contact_again_flow.yaml", by="ops")
    instance = site.cf.start("contact_again_flow")
    with site.cf.session() as s:
        task_id = s.scalars(select(Task.id).where(Task.instance_id == instance)).one()

    context, employee, watch = open_page(browser, "zh")
    try:
        sign_in(employee, site, "chen")
        employee.goto(f"{site.url}/tasks/{task_id}")
        fields = employee.locator("#form-fields")
        expect(fields.locator("#f-note")).to_be_visible()
        assert fields.locator("#f-when").count() == 0
        fields.get_by_label("需要", exact=True).check()
        expect(fields.locator("#f-when")).to_be_visible()
        shot(employee, "form-designer-task.zh.png")
        employee.locator("#task-form button[type=submit]").click()
        expect(employee.locator("#err-when")).to_contain_text("联系日期")
        employee.locator("#f-when").fill("2026-12-01")
        employee.locator("#task-form button[type=submit]").click()
        employee.wait_for_url("**/inbox")
        with site.cf.session() as s:
            task = s.get(Task, task_id)
            assert task is not None and task.status == "completed"
            assert task.data == {"again": True, "when": "2026-12-01"}
        assert not watch.errors, watch.errors
    finally:
        context.close()

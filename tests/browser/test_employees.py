"""An employee's day in chromium: the complaint triage (an error first, then right), the public survey link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from engine.store.models import Task
from tests.browser.conftest import Site, open_page, sign_in

import os

#: ``make screenshots`` (CAREFLOW_SCREENSHOTS=1) refreshes the user guides' pictures; otherwise
#: they go to a temporary folder, so a test run leaves the work tree as it was.
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def triage_task(site: Site, instance_id: int) -> int:
    with site.cf.session() as s:
        return s.scalars(select(Task.id).where(Task.instance_id == instance_id, Task.status == "open")).one()


def test_employee_triages_a_complaint_with_a_validation_error_first(page: Any, site: Site) -> None:
    task_id = triage_task(site, site.complaint_ids[0])
    sign_in(page, site, "chen")
    page.goto(site.url + "/inbox")
    row = page.locator(f"tr[data-task='{task_id}']")
    row.get_by_role("button", name="认领").click()
    page.wait_for_url(f"**/tasks/{task_id}")
    assert "您已认领此任务" in page.locator(".alert-success").inner_text()
    page.get_by_label("高", exact=True).check()
    page.get_by_label("备注", exact=True).fill("客户情绪激动")
    page.get_by_role("button", name="完成任务").click()
    error = page.locator("#err-category")
    error.wait_for()
    assert "投诉类别" in error.inner_text()
    assert page.locator("#f-category").get_attribute("aria-invalid") == "true"
    assert page.get_by_label("高", exact=True).is_checked() and page.get_by_label("备注", exact=True).input_value() == "客户情绪激动"
    page.get_by_label("投诉类别").select_option("delivery")
    page.get_by_role("button", name="完成任务").click()
    page.wait_for_url("**/inbox")
    assert "任务已完成" in page.locator(".alert-success").inner_text()
    with site.cf.session() as s:
        done = s.get(Task, task_id)
        assert done is not None and done.status == "completed" and done.data["category"] == "delivery"
        assert done.completed_by == "chen"


def test_public_survey_link_works_once(browser: Any, site: Site) -> None:
    context, page, watch = open_page(browser, "zh", mobile=True)
    try:
        page.goto(site.url + site.survey_path)
        assert page.locator("#nav-main").count() == 0  # no sign-in, no staff navigation
        page.locator("label[for='f-score-5']").click()
        page.get_by_role("button", name="提交").click()
        page.wait_for_load_state()
        assert page.locator("h1").inner_text() == "谢谢！"
        response = page.goto(site.url + site.survey_path)
        assert response is not None and response.status == 410
        assert page.locator("h1").inner_text() == "链接已失效"
        assert not watch.errors, watch.errors
    finally:
        context.close()


def test_screenshots_of_the_main_pages(browser: Any, site: Site, tmp_path: Path) -> None:
    """Pictures for the user guides (docs/images), in both languages, desktop and phone sizes."""
    IMAGES = DOCS_IMAGES if os.environ.get("CAREFLOW_SCREENSHOTS") == "1" else tmp_path
    IMAGES.mkdir(parents=True, exist_ok=True)
    task_id = triage_task(site, site.complaint_ids[1])
    with site.cf.session() as s:
        from engine.store.models import Customer

        # by phone: the admin import test may merge a row into 周杰 and rename him
        customer_id = s.scalars(select(Customer.id).where(Customer.phone == "+8613900001111")).one()
    for lang in ("zh", "en"):
        context, page, watch = open_page(browser, lang)
        try:
            for name, user, path in (("inbox", "liu", "/inbox"), ("task", "liu", f"/tasks/{task_id}"),
                                     ("customer", "wang", f"/customers/{customer_id}"), ("customers", "wang", "/customers")):
                if name in ("inbox", "customer"):
                    context.clear_cookies()
                    sign_in(page, site, user)
                response = page.goto(site.url + path)
                assert response is not None and response.status == 200, path
                page.screenshot(path=str(IMAGES / f"{name}.{lang}.png"), full_page=False)
            assert not watch.errors, watch.errors
        finally:
            context.close()
    context, page, watch = open_page(browser, "zh", mobile=True)
    try:
        sign_in(page, site, "liu")
        page.goto(site.url + f"/tasks/{task_id}")
        page.screenshot(path=str(IMAGES / "task.phone.zh.png"), full_page=False)
        page.goto(site.url + "/inbox")
        cell = page.locator("tr[data-task] td").first.bounding_box()
        assert cell is not None and cell["width"] > 300  # rows become cards on a phone
        page.screenshot(path=str(IMAGES / "inbox.phone.zh.png"), full_page=False)
        assert not watch.errors, watch.errors
    finally:
        context.close()
    assert len(list(IMAGES.glob("*.png"))) >= 10


def new_complaint_at_resolve(site: Site) -> int:
    result = site.cf.submit_form("complaint_intake", {"subject": "少发了配件", "description": "包裹里缺少充电器",
                                                      "channel": "phone", "contact_phone": "13900002222"}, user="chen")
    iid = result["instances"][0]
    triage = triage_task(site, iid)
    site.cf.claim(triage, "chen")
    site.cf.complete(triage, {"severity": "low", "category": "product"}, "chen")
    return triage_task(site, iid)


def test_conditional_field_appears_when_its_condition_is_chosen(page: Any, site: Site) -> None:
    task_id = new_complaint_at_resolve(site)
    sign_in(page, site, "chen")
    page.goto(site.url + f"/tasks/{task_id}")
    assert page.locator("#f-amount").count() == 0
    sent: list[dict[str, str]] = []
    page.on("request", lambda request: sent.append(request.headers) if request.url.endswith("/fields") else None)
    page.get_by_label("退款", exact=True).check()
    page.locator("#f-amount").wait_for()  # htmx re-rendered the fields for "refund"
    assert page.get_by_label("退款", exact=True).is_checked()
    assert sent and sent[0].get("x-csrftoken"), "htmx did not send the CSRF header"
    page.locator("#f-resolution").fill("已退款给客户")
    page.locator("#f-amount").fill("-5")
    page.get_by_role("button", name="完成任务").click()
    page.locator("#err-amount").wait_for()
    page.locator("#f-amount").fill("120")
    page.get_by_role("button", name="完成任务").click()
    page.wait_for_url("**/inbox")
    with site.cf.session() as s:
        done = s.get(Task, task_id)
        assert done is not None and done.status == "completed"
        assert done.data["compensation"] == "refund" and done.data["amount"] == 120


def test_the_form_works_without_javascript_on_a_phone(browser: Any, site: Site) -> None:
    task_id = new_complaint_at_resolve(site)
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844}, locale="zh-CN",
                                  extra_http_headers={"Accept-Language": "zh-CN"})
    page = context.new_page()
    try:
        sign_in(page, site, "chen")
        page.goto(site.url + f"/tasks/{task_id}")
        box = page.locator("#f-resolution").bounding_box()
        assert box is not None and box["width"] <= 390  # fits the phone's width
        page.get_by_label("退款", exact=True).check()
        page.locator("#f-resolution").fill("已退款")
        page.get_by_role("button", name="完成任务").click()
        # without JavaScript the amount field shows after the submit, with its error
        page.locator("#err-amount").wait_for()
        page.locator("#f-amount").fill("80")
        page.get_by_role("button", name="完成任务").click()
        page.wait_for_url("**/inbox")
        with site.cf.session() as s:
            done = s.get(Task, task_id)
            assert done is not None and done.status == "completed" and done.data["amount"] == 80
    finally:
        context.close()


def test_inbox_filters_update_the_list_in_place(page: Any, site: Site) -> None:
    sign_in(page, site, "liu")
    page.goto(site.url + "/inbox")
    assert page.locator("tr[data-task]").count() >= 1
    page.get_by_label("截止").select_option("none")
    page.locator("#inbox-empty").wait_for()
    assert "due=none" in page.url  # the filtered view has its own address
    page.get_by_label("截止").select_option("")
    page.locator("tr[data-task]").first.wait_for()

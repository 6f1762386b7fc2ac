"""An employee's day in chromium: the complaint triage (an error first, then right), the public survey link."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from engine.store.models import Task
from tests.browser.conftest import Site, open_page, sign_in

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


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


def test_screenshots_of_the_main_pages(browser: Any, site: Site) -> None:
    """Pictures for the user guides (docs/images), in both languages, desktop and phone sizes."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    task_id = triage_task(site, site.complaint_ids[1])
    with site.cf.session() as s:
        from engine.store.models import Customer

        customer_id = s.scalars(select(Customer.id).where(Customer.name == "周杰")).one()
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
        assert not watch.errors, watch.errors
    finally:
        context.close()

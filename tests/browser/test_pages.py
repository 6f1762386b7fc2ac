"""Every page in both languages, in chromium: no console error, no untranslated text."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Site, open_page, sign_in
from tests.support.pagetext import untranslated

#: (user, path) of every signed-in page a walk covers; {task}, {customer} are filled in.
PAGES = [
    ("wang", "/"),
    ("wang", "/inbox"),
    ("wang", "/inbox?due=overdue&show=mine"),
    ("wang", "/customers"),
    ("wang", "/customers/{customer}"),
    ("chen", "/inbox"),
    ("chen", "/tasks/{task}"),
    ("chen", "/profile"),
    ("liu", "/tasks/{task}"),
    ("admin", "/"),
    ("admin", "/customers?grade=A"),
    ("admin", "/tasks/{task}"),
]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_page_loads_in_both_languages_without_errors(browser: Any, site: Site, lang: str) -> None:
    context, page, watch = open_page(browser, lang)
    try:
        page.goto(site.url + "/login")
        assert untranslated(page.content(), lang) == [], "/login"
        from sqlalchemy import select

        from engine.store.models import Customer, Task

        with site.cf.session() as s:
            task = s.scalars(select(Task.id).where(Task.instance_id == site.complaint_ids[-1])).first()
            customer = s.scalars(select(Customer.id).where(Customer.owner == "wang").order_by(Customer.id.desc())).first()
        page.goto(site.url + site.survey_path.replace("/l/", "/l/x"))
        assert untranslated(page.content(), lang) == [], "invalid link"
        survey = page.goto(site.url + site.survey_path)  # the form, or "no longer valid" once answered
        assert survey is not None and survey.status in (200, 410)
        assert untranslated(page.content(), lang) == [], "survey link"
        signed_in_as = None
        for user, template in PAGES:
            path = template.format(task=task, customer=customer)
            if user != signed_in_as:
                context.clear_cookies()
                sign_in(page, site, user)
                signed_in_as = user
            response = page.goto(site.url + path)
            assert response is not None and response.status == 200, path
            assert page.locator("h1").count() >= 1, path
            assert untranslated(page.content(), lang) == [], path
        assert not watch.errors, watch.errors
    finally:
        context.close()


def test_language_switch_in_the_navigation(page: Any, site: Site) -> None:
    sign_in(page, site, "wang")
    page.goto(site.url + "/inbox")
    assert page.locator("h1").inner_text() == "待办"
    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()
    assert page.url.endswith("/inbox")
    assert page.locator("h1").inner_text() == "Inbox"
    page.goto(site.url + "/")
    assert page.locator("html").get_attribute("lang") == "en"
    # The switch is remembered as wang's own language: a new sign-in in this Chinese browser is English.
    page.context.clear_cookies()
    sign_in(page, site, "wang")
    assert page.locator("html").get_attribute("lang") == "en"
    page.get_by_role("button", name="中文").click()
    page.wait_for_load_state()
    assert page.locator("h1").inner_text() == "概览"
    assert site.cf.user("wang")["language"] == "zh"
    site.cf.update_user("wang", {"language": None})  # the other tests expect the browser's language


def test_phone_sized_navigation_collapses_and_opens(browser: Any, site: Site) -> None:
    context, page, watch = open_page(browser, "zh", mobile=True)
    try:
        sign_in(page, site, "wang")
        link = page.locator("#nav-main a[href='/inbox']")
        assert not link.is_visible()
        page.locator(".navbar-toggler").click()
        link.wait_for(state="visible")
        link.click()
        page.wait_for_url("**/inbox")
        assert not watch.errors, watch.errors
    finally:
        context.close()

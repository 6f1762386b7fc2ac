"""The admin pages in chromium: attaching an SMTP connector whose test mail reaches a real
aiosmtpd server, an instance moving on its diagram, and every admin page in both languages.

Set CAREFLOW_SCREENSHOTS=1 (``make screenshots``) to refresh the screenshots of the main admin pages in docs/images
(docs/images holds the committed ones).
"""

from __future__ import annotations

import socket
from email import message_from_bytes
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from playwright.sync_api import expect

from tests.browser.conftest import Site, open_page, screenshot_folder, sign_in
from tests.support.pagetext import untranslated


class Inbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.original_content or envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def new_complaint(site: Site, subject: str) -> int:
    result = site.cf.submit_form("complaint_intake", {"subject": subject, "description": "客户来电反映：" + subject,
                                                      "channel": "phone", "contact_phone": "13800138000"}, user="chen")
    return int(result["instances"][0])


def test_admin_attaches_smtp_and_the_test_mail_arrives(page: Any, site: Site) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    try:
        sign_in(page, site, "admin")
        page.goto(site.url + "/admin/connectors")
        page.get_by_role("link", name="接入 smtp").click()
        page.get_by_label("名称").fill("smtp-browser")
        page.get_by_label("host").fill("127.0.0.1")
        page.get_by_label("port").fill(str(port))
        page.get_by_label("security").select_option("none")
        page.get_by_label("from_address").fill("care@example.com")
        page.get_by_label("from_name").fill("客户关怀")
        page.get_by_role("button", name="保存").click()
        page.wait_for_url("**/admin/connectors/smtp-browser")
        assert "连接器 smtp-browser 已保存。" in page.locator("main").inner_text()
        # the test form by keyboard: type the address, tab to the text, submit with Enter on the button
        page.get_by_label("发送到（邮箱或手机号）").fill("zhou@example.com")
        page.keyboard.press("Tab")
        page.keyboard.press("Control+A")
        page.keyboard.type("您好，这是一封测试邮件。")
        page.keyboard.press("Tab")
        # wait for the answer page itself: the current page is already "loaded" before it arrives
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "测试消息已发送到 zhou@example.com。" in page.locator("main").inner_text()
        assert len(inbox.messages) == 1
        recipients, mail = inbox.messages[0]
        assert recipients == ["zhou@example.com"]
        assert "care@example.com" in mail["From"] and "客户关怀" in str(make_header(decode_header(mail["From"])))
        body = mail.get_payload(decode=True) if not mail.is_multipart() else mail.get_payload(0).get_payload(decode=True)
        assert "您好，这是一封测试邮件。" in body.decode("utf-8")
        page.goto(site.url + "/admin/connectors?status=sent")
        assert page.locator("#deliveries-table td", has_text="smtp-browser").count() >= 1
    finally:
        controller.stop()


def test_admin_sees_the_instance_move_on_its_diagram(page: Any, site: Site) -> None:
    instance_id = new_complaint(site, "包装破损")
    before = site.cf.describe(instance_id)["current_steps"]
    sign_in(page, site, "admin")
    page.goto(f"{site.url}/admin/instances/{instance_id}")
    diagram = page.locator("#diagram")
    diagram.locator(".lf-node").first.wait_for()
    expect(diagram).to_have_attribute("data-current", " ".join(before))
    with site.cf.session() as s:
        from engine.store.definitions import flow_of, latest_flow_version

        steps = len(flow_of(latest_flow_version(s, "complaint")).steps)
    assert diagram.locator(".lf-node").count() == steps
    assert diagram.locator('[fill="#fde2ef"]').count() == len(before)  # the current step is drawn highlighted
    task = next(t for t in site.cf.tasks(instance_id=instance_id) if t["status"] == "open")
    site.cf.claim(task["id"], "chen")
    site.cf.complete(task["id"], {"category": "delivery", "severity": "high"}, "chen")
    after = site.cf.describe(instance_id)["current_steps"]
    assert after != before
    # no reload: the page polls the graph and redraws it
    expect(diagram).to_have_attribute("data-current", " ".join(after), timeout=15_000)
    assert page.locator("#current-steps").inner_text() == " ".join(after)
    assert diagram.locator('[fill="#fde2ef"]').count() == len(after)
    assert diagram.locator('[fill="#e8f5ee"]').count() >= 1  # the triage step is now marked as passed


ADMIN_PAGES = ["/admin/", "/admin/flows", "/admin/flows/complaint", "/admin/flows/deploy", "/admin/instances",
               "/admin/instances/{instance}", "/admin/connectors", "/admin/connectors/new/smtp", "/admin/users",
               "/admin/users/wang", "/admin/tokens", "/admin/audit", "/admin/imports/new", "/admin/imports/{import_id}",
               "/admin/merges", "/admin/forms", "/admin/forms/new", "/admin/forms/follow_up/design"]
MESSY = Path(__file__).parents[1] / "data" / "import" / "customers_messy.csv"
SCREENSHOTS = {"/admin/": "admin-dashboard", "/admin/flows/complaint": "admin-flow", "/admin/instances/{instance}": "admin-instance",
               "/admin/connectors/new/smtp": "admin-connector", "/admin/flows/deploy": "admin-deploy",
               "/admin/instances": "admin-instances", "/admin/users": "admin-users", "/admin/audit": "admin-audit"}


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_admin_page_loads_in_both_languages_without_errors(browser: Any, site: Site, lang: str) -> None:
    from engine.imports import Importer

    instance_id = site.complaint_ids[-1]
    import_id = Importer(site.cf).plan(MESSY.read_bytes(), MESSY.name, by="admin")["id"]
    shots = screenshot_folder()
    context, page, watch = open_page(browser, lang)
    try:
        sign_in(page, site, "admin")
        for template in ADMIN_PAGES:
            path = template.format(instance=instance_id, import_id=import_id)
            response = page.goto(site.url + path)
            assert response is not None and response.status == 200, path
            if "{instance}" in template or path == "/admin/flows/complaint":
                page.locator("#diagram .lf-node").first.wait_for()
            assert page.locator("h1").count() == 1, path
            assert untranslated(page.content(), lang) == [], path
            if shots and template in SCREENSHOTS:
                page.screenshot(path=str(shots / f"{SCREENSHOTS[template]}.{lang}.png"), full_page=True)
        assert not watch.errors, watch.errors
    finally:
        context.close()


def test_the_admin_navigation_follows_the_roles(browser: Any, site: Site) -> None:
    context, page, watch = open_page(browser, "en")
    try:
        sign_in(page, site, "ops")
        nav = page.locator("#nav-main")
        assert nav.get_by_role("link", name="Flows").count() == 1
        assert nav.get_by_role("link", name="Users").count() == 0
        response = page.goto(site.url + "/admin/users")
        assert response is not None and response.status == 403
        assert page.locator("h1").inner_text() == "Not allowed"
    finally:
        context.close()


def test_admin_imports_a_file_and_commits_it(browser: Any, site: Site) -> None:
    context, page, watch = open_page(browser, "en")
    try:
        sign_in(page, site, "admin")
        page.goto(site.url + "/admin/imports/new")
        page.get_by_label("File (CSV or XLSX)").set_input_files(str(MESSY))
        page.get_by_role("button", name="Check the file").click()
        page.wait_for_url("**/admin/imports/*")
        assert page.locator("#import-status").inner_text() == "dry run"
        assert page.locator('#import-rows tr[data-action="reject"]').count() >= 1
        page.get_by_role("button", name="Commit").click()
        # the progress fragment is polled until the import is written, then the result page loads
        expect(page.locator("#import-status")).to_have_text("committed", timeout=30_000)
        expect(page.locator(".progress-bar")).to_have_text("100.0%")
        assert int(page.locator('[data-committed="created"]').inner_text()) >= 1
        assert not watch.errors, watch.errors
    finally:
        context.close()

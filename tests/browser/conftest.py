"""Pages in a real browser: Playwright driving Debian's chromium against a live threaded server.

The server runs the real app on a SQLite file seeded like the demo (users, customers) plus a few
running flows, so the inbox has tasks. Every test page fails its test on a console error or an
uncaught page error (a CSP violation, a broken vendored bundle, a 404 asset all show up there).

Without chromium these tests skip, except when CAREFLOW_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from engine.app import create_app
from engine.clock import FixedClock
from engine.core import Careflow
from engine.demo import DEMO_PASSWORD, seed
from tests.conftest import START, make_careflow
from tests.support.fakes import RecordingProvider

#: ``make screenshots`` sets CAREFLOW_SCREENSHOTS=1 to refresh the pictures the docs show.
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def screenshot_folder() -> Path | None:
    """Where the docs' screenshots go: docs/images under ``make screenshots``, nowhere otherwise."""
    return DOCS_IMAGES if os.environ.get("CAREFLOW_SCREENSHOTS") == "1" else None


LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    found = os.environ.get("CAREFLOW_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return found if os.path.exists(found) else None


@dataclass
class Site:
    url: str
    cf: Careflow
    clock: FixedClock
    secret: str
    complaint_ids: list[int] = field(default_factory=list)
    survey_path: str = ""


WELCOME = {"reached": True, "call_notes": "客户想了解培训安排", "needs": ["training"], "preferred_channel": "sms"}


def populate(cf: Careflow, clock: FixedClock, secret: str) -> tuple[list[int], str]:
    """Demo users and customers; one onboarding waiting for its survey (with a customer link),
    another at its welcome call, and two complaints to triage."""
    from datetime import timedelta

    from sqlalchemy import select

    from engine.store.models import Instance, Task

    seed(cf, customers=20)
    cid = cf.create_customer({"name": "周杰", "phone": "+8613900001111", "region": "上海", "owner": "wang",
                              "email": "zhoujie@example.com", "expected_value": 80000.0})
    with cf.session() as s:
        iid = s.scalars(select(Instance.id).where(Instance.customer_id == cid)).one()
        task_id = s.scalars(select(Task.id).where(Task.instance_id == iid, Task.status == "open")).one()
    cf.complete(task_id, WELCOME, "wang")
    clock.set(clock.now() + timedelta(days=7, hours=1))
    cf.tick()
    link = cf.customer_link(iid, "satisfaction_survey", "satisfaction_survey", timedelta(days=7), secret=secret)
    cf.create_customer({"name": "吴芳", "phone": "+8613900002222", "region": "北京", "owner": "li"})
    complaints = []
    for subject in ("快递破损", "发票开错了"):
        result = cf.submit_form("complaint_intake", {"subject": subject, "description": "客户来电反映：" + subject,
                                                     "channel": "phone", "contact_phone": "13900002222"}, user="chen")
        complaints.append(result["instances"][0])
    return complaints, "/l/" + link["token"]


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    path = tmp_path_factory.mktemp("browser") / "careflow.db"
    clock = FixedClock(START)
    cf = make_careflow(f"sqlite:///{path}", clock, RecordingProvider())
    secret = "browser-test-secret"
    complaints, survey = populate(cf, clock, secret)
    app = create_app({"TESTING": False, "SECRET_KEY": secret, "SESSION_COOKIE_SECURE": False,
                      "UPLOAD_FOLDER": str(path.parent / "uploads")}, engine=cf)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(f"http://127.0.0.1:{server.server_port}", cf, clock, secret, complaints, survey)
    finally:
        server.shutdown()
        thread.join(timeout=5)
        cf.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module: Playwright's event loop is gone before other tests' asyncio runs."""
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CAREFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium fonts-noto-cjk)")
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS, headless=True)
        yield browser
        browser.close()


class ConsoleWatch:
    """Collects console errors and uncaught page errors.

    A page answered with an error status on purpose (422 with field errors, 410 for a used link)
    makes chromium log "Failed to load resource" for the document itself: that one is expected.
    The same message for a stylesheet, script or image is a real error and is kept.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.documents: set[str] = set()

    def attach(self, page: Any) -> None:
        page.on("response", self._response)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))

    def _response(self, response: Any) -> None:
        if response.request.resource_type == "document" and response.status >= 400:
            self.documents.add(response.url)

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        if msg.text.startswith("Failed to load resource") and (msg.location or {}).get("url") in self.documents:
            return
        self.errors.append(f"console {msg.type}: {msg.text} at {(msg.location or {}).get('url')}")


def open_page(browser: Any, lang: str = "zh", mobile: bool = False) -> tuple[Any, Any, ConsoleWatch]:
    viewport = {"width": 390, "height": 844} if mobile else {"width": 1280, "height": 860}
    context = browser.new_context(locale="zh-CN" if lang == "zh" else "en-US", viewport=viewport,
                                  extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9" if lang == "zh" else "en-US,en;q=0.9"},
                                  timezone_id="Asia/Shanghai")
    page = context.new_page()
    page.set_default_timeout(15_000)
    watch = ConsoleWatch()
    watch.attach(page)
    return context, page, watch


@pytest.fixture
def console() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def page(browser: Any, console: ConsoleWatch) -> Iterator[Any]:
    """A fresh Chinese browser context; the test fails if the page logs an error."""
    context, page, watch = open_page(browser, "zh")
    console.errors = watch.errors
    yield page
    context.close()
    assert not watch.errors, "errors in the browser console:\n" + "\n".join(watch.errors)


def sign_in(page: Any, site: Site, username: str) -> None:
    page.goto(site.url + "/login")
    page.fill("#username", username)
    page.fill("#password", DEMO_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)

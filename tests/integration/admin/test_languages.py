"""Every admin page in Chinese and English: no untranslated text, labels on every input."""

from __future__ import annotations

import re

import pytest

from engine.core import Careflow
from tests.support.pagetext import untranslated


def admin_pages(cf: Careflow) -> list[str]:
    from engine.imports import Importer
    from tests.integration.admin.test_imports import MESSY

    import_id = Importer(cf).plan(MESSY.read_bytes(), MESSY.name, by="admin")["id"]
    cf.save_connector("fake-main", "fake", {}, by="admin")
    instance_id = cf.submit_form("complaint_intake", {"subject": "破损", "description": "客户来电", "channel": "phone",
                                                      "contact_phone": "13800138000"}, user="chen")["instances"][0]
    return ["/admin/", "/admin/flows", "/admin/flows/complaint", "/admin/flows/deploy", "/admin/instances",
            f"/admin/instances/{instance_id}", "/admin/connectors", "/admin/connectors/fake-main",
            "/admin/connectors/new/smtp", "/admin/users", "/admin/users/wang", "/admin/tokens", "/admin/audit",
            "/admin/imports/new", f"/admin/imports/{import_id}", "/admin/merges",
            "/admin/forms", "/admin/forms/new", "/admin/forms/follow_up/design"]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_every_admin_page_is_in_its_language(cf_sqlite: Careflow, lang: str) -> None:
    from engine.app import create_app
    from tests.integration.admin.conftest import Browser, token_of
    from tests.integration.test_app import PASSWORD

    app = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf_sqlite)
    browser = Browser(app.test_client(), "zh-CN,zh;q=0.9" if lang == "zh" else "en-US")
    page = browser.get("/login").get_data(as_text=True)
    browser.client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token_of(page)},
                        headers=browser.headers)
    for path in admin_pages(cf_sqlite):
        html = browser.text(path)
        assert untranslated(html, lang) == [], path
        # every visible input, select and textarea has a label (or an aria-label)
        for match in re.finditer(r"<(input|select|textarea)\b([^>]*)>", html):
            attrs = match.group(2)
            if re.search(r'type="(hidden|submit|button)"', attrs) or "aria-label=" in attrs:
                continue
            ident = re.search(r'\bid="([^"]+)"', attrs)
            assert ident and f'for="{ident.group(1)}"' in html, (path, match.group(0))
    nav = browser.text("/admin/")
    for endpoint in ("/admin/flows", "/admin/instances", "/admin/connectors", "/admin/users", "/admin/tokens", "/admin/audit",
                     "/admin/imports/new"):
        assert f'href="{endpoint}"' in nav

"""The import page: upload a messy file, read the dry-run report in zh and en, commit, watch the
progress and find the customers; the merge log; only admins (SQLite and PostgreSQL)."""

from __future__ import annotations

from markupsafe import escape
import io
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from engine.core import Careflow
from engine.imports import Importer
from engine.store.models import Customer
from tests.integration.admin.conftest import Browser

MESSY = Path(__file__).parents[2] / "data" / "import" / "customers_messy.csv"


def upload(browser: Browser, path: Path = MESSY, **fields: str) -> str:
    browser.get("/admin/imports/new")
    data = {"kind": "customers", "file": (io.BytesIO(path.read_bytes()), path.name), **fields}
    response = browser.post("/admin/imports/new", data=data, content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return str(response.headers["Location"])


def wait_committed(browser: Browser, location: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = browser.text(location)
        if 'id="import-progress" hx-get' not in page:  # no longer polling: written or failed
            # the thread goes on with after_import (regrading) once the run is marked committed
            thread = browser.client.application.extensions["careflow_import_threads"][int(location.rsplit("/", 1)[1])]
            thread.join(timeout=60)
            assert not thread.is_alive()
            return page
        time.sleep(0.2)
    raise AssertionError("the import did not finish within a minute")


def customer_names(cf: Careflow) -> list[str]:
    from sqlalchemy import select

    with cf.session() as s:
        return sorted(s.scalars(select(Customer.name).where(Customer.status != "deleted")))


def test_upload_report_in_both_languages_then_commit(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    before = customer_names(cf)
    zh, en = signed_in("admin", "zh-CN"), signed_in("admin", "en")
    location = upload(zh, match_on="member_no")
    import_id = int(location.rstrip("/").rsplit("/", 1)[1])
    report = Importer(cf).get(import_id)
    assert report["status"] == "planned" and report["summary"]["reject"] > 0 and report["problems"]
    assert customer_names(cf) == before  # a dry run writes no customer

    for browser, lang in ((zh, "zh"), (en, "en")):
        page = browser.text(location)
        rows = page.split('id="import-rows"', 1)[1]
        text = re.sub(r"<[^>]+>", "", rows)  # a quoted cell value sits in its own translate="no" span
        for row in report["rows"]:
            assert f'data-row="{row["row"]}" data-action="{row["action"]}"' in rows
            if row["reason"]:
                assert str(escape(row["reason"][lang])) in text, (lang, row)
        for problem in report["problems"]:
            assert str(escape(problem["message"][lang])) in text, (lang, problem)
        for key in ("create", "merge", "reject"):
            assert f'data-count="{key}">{report["summary"][key]}<' in page
    assert "拒绝" in zh.text(location) and "reject" in en.text(location)

    csv_text = en.get(f"/admin/imports/{import_id}/report.csv").get_data(as_text=True)
    assert csv_text.lstrip("\ufeff").startswith("row,action,")
    assert json.loads(en.get(f"/admin/imports/{import_id}/report.json").get_data(as_text=True))["summary"] == report["summary"]

    response = en.post(f"/admin/imports/{import_id}/commit")
    assert response.status_code == 303
    assert Importer(cf).get(import_id)["status"] in ("committing", "committed")  # never "planned" after the click
    page = wait_committed(en, location)
    assert 'data-committed="' in page and "import-pct-100" in page, page[:3000]
    done = Importer(cf).get(import_id)
    assert done["status"] == "committed"
    created = done["committed"].get("created", done["summary"]["create"])
    assert len(customer_names(cf)) == len(before) + created > len(before)
    assert "张伟" in customer_names(cf)
    # the fragment htmx polls sends the browser to the result once the import is written
    fragment = en.client.get(f"/admin/imports/{import_id}/progress", headers={"HX-Request": "true"})
    assert fragment.headers.get("HX-Redirect") == location
    # committing again changes nothing
    en.post(f"/admin/imports/{import_id}/commit")
    assert len(customer_names(cf)) == len(before) + created

    merges = en.text(f"/admin/merges?import_id={import_id}")
    table = merges.split('id="merge-table"', 1)[1]
    assert f'href="/admin/imports/{import_id}"' in table and "member_no" in table or "phone" in table


def test_a_bad_file_is_named_on_the_form(signed_in: Callable[..., Browser]) -> None:
    browser = signed_in("admin", "en")
    browser.get("/admin/imports/new")
    response = browser.post("/admin/imports/new", data={"kind": "customers", "file": (io.BytesIO(b"\x00\x01garbage"), "x.xlsx")},
                            content_type="multipart/form-data")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="err-file"' in page and "Traceback" not in page
    response = browser.post("/admin/imports/new", data={"kind": "customers"}, content_type="multipart/form-data")
    assert response.status_code == 422 and "Choose a CSV or XLSX file." in response.get_data(as_text=True)


def test_only_admins_import(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    import_id = Importer(cf).plan(MESSY.read_bytes(), MESSY.name, by="admin")["id"]
    lead = signed_in("wang", "en")
    for path in ("/admin/imports/new", f"/admin/imports/{import_id}", f"/admin/imports/{import_id}/report.csv",
                 f"/admin/imports/{import_id}/progress", "/admin/merges"):
        assert lead.get(path).status_code == 403, path
    assert lead.post(f"/admin/imports/{import_id}/commit").status_code == 403
    assert Importer(cf).get(import_id)["status"] == "planned"
    assert 'href="/admin/imports/new"' not in lead.text("/")
    assert 'href="/admin/imports/new"' in signed_in("admin", "en").text("/admin/")


def test_the_upload_needs_csrf(signed_in: Callable[..., Browser]) -> None:
    browser = signed_in("admin", "en")
    response = browser.post("/admin/imports/new", data={"kind": "customers", "file": (io.BytesIO(MESSY.read_bytes()), "a.csv")},
                            csrf=False, content_type="multipart/form-data")
    assert response.status_code in (400, 403)
    assert re.search(r"import-\d+", response.get_data(as_text=True)) is None


def test_an_orders_file_gets_its_report(cf: Careflow, signed_in: Callable[..., Browser]) -> None:
    orders = MESSY.with_name("orders.csv")
    browser = signed_in("admin", "zh-CN")
    location = upload(browser, orders, kind="orders")
    report = Importer(cf).get(int(location.rsplit("/", 1)[1]))
    assert report["kind"] == "orders"
    page = browser.text(location)
    for row in report["rows"]:
        assert f'data-row="{row["row"]}" data-action="{row["action"]}"' in page
    for key, value in report["summary"].items():
        assert f'data-count="{key}">{value}<' in page

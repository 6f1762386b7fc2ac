"""Imports over the REST API: upload a dry run, read the report and progress, download the CSV,
commit, the merge log, orders, and clear 422s for files that cannot be read."""

from __future__ import annotations

import io
from pathlib import Path

from sqlalchemy import select

from engine.core import Careflow
from engine.store.models import Customer
from tests.integration.api.conftest import Api

DATA = Path(__file__).resolve().parents[2] / "data" / "import"


def send(api: Api, path: str, name: str, content: bytes, **form: str) -> object:
    return api.post(path, data={"file": (io.BytesIO(content), name), **form}, content_type="multipart/form-data")


def test_upload_report_commit_and_merges(cf: Careflow, api: Api) -> None:
    dry = send(api, "/api/customers/imports", "customers_gbk.csv", (DATA / "customers_gbk.csv").read_bytes())
    assert dry.status_code == 201, dry.get_json()
    report = dry.get_json()
    assert report["status"] == "planned" and report["file"]["encoding"] == "GB18030"
    assert report["summary"]["create"] == 3 and report["summary"]["merge"] == 1
    assert {(p["row"], p["code"]) for p in report["problems"]} == {(5, "bad_phone"), (5, "bad_date")}
    with cf.session() as s:
        assert s.scalars(select(Customer)).first() is None

    got = api.get(f"/api/customers/imports/{report['id']}")
    assert got.status_code == 200 and got.get_json()["progress"] == {"done_rows": 0, "total_rows": 4, "percent": 0.0}
    polled = api.get(f"/api/customers/imports/{report['id']}?summary_only=true").get_json()
    assert polled["rows"] == [] and polled["problems"] == [] and polled["summary"] == report["summary"]
    csv = api.get(f"/api/customers/imports/{report['id']}/report.csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    assert "5,create,,,联系电话,phone,1370000,bad_phone" in csv.get_data(as_text=True)

    done = api.post(f"/api/customers/imports/{report['id']}/commit")
    assert done.status_code == 200
    body = done.get_json()
    assert body["status"] == "committed" and body["progress"]["percent"] == 100.0
    assert body["committed"] == {"created": 3, "updated": 0, "merged": 1, "rejected": 0}
    again = api.post(f"/api/customers/imports/{report['id']}/commit")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"

    with cf.session() as s:
        wu = s.scalars(select(Customer).where(Customer.phone == "+8613700001234")).one()
    merges = api.get(f"/api/customers/merges?customer_id={wu.id}").get_json()
    assert merges["total"] == 1 and merges["items"][0]["rows"] == [2, 4] and merges["items"][0]["created"] is True


def test_commit_at_once_and_orders(cf: Careflow, api: Api) -> None:
    first = send(api, "/api/customers/imports", "c.csv", "姓名,手机\n张伟,13800138000\n".encode(), commit="true")
    assert first.status_code == 201 and first.get_json()["status"] == "committed"
    orders = send(api, "/api/customers/order-imports", "o.csv",
                  "订单号,手机,下单时间,金额\nA1,138 0013 8000,2026-11-01,99.5\nA1,13800138000,2026-11-01,99.5\n".encode(),
                  commit="true")
    assert orders.status_code == 201, orders.get_json()
    assert orders.get_json()["committed"] == {"added": 1, "ignored": 1, "rejected": 0}
    with cf.session() as s:
        c = s.scalars(select(Customer)).one()
        assert (c.purchase_count, c.purchase_total) == (1, 99.5)


def test_unreadable_files_and_bad_mappings_are_422s_naming_the_problem(api: Api) -> None:
    broken = send(api, "/api/customers/imports", "customers_broken.csv", (DATA / "customers_broken.csv").read_bytes())
    assert broken.status_code == 422
    assert "line 3" in broken.get_json()["error"]["message"]
    zh = api.post("/api/customers/imports", data={"file": (io.BytesIO(b"a,b\n1,2\n"), "x.csv")},
                  content_type="multipart/form-data", lang="zh")
    assert zh.status_code == 422 and "没有找到手机或邮箱列" in zh.get_json()["error"]["message"]
    missing = send(api, "/api/customers/imports", "x.csv", b"phone\n13800138000\n", mapping="nothing")
    assert missing.status_code == 404
    no_file = api.post("/api/customers/imports", data={}, content_type="multipart/form-data")
    assert no_file.status_code == 422
    assert api.get("/api/customers/imports/999999").status_code == 404

"""Importing customers and orders on SQLite and PostgreSQL: the dry-run report of each messy file,
commit, merge into stored customers, the merge log, re-running, resuming after a crash, orders
updating purchase figures, and one customer per phone or e-mail whoever creates it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from sqlalchemy import func, select

from engine.core import Careflow
from engine.errors import Conflict
from engine.imports import Importer, report_csv
from engine.store.imports import merges
from engine.store.models import Customer, CustomerOrder, ImportRun, Instance

DATA = Path(__file__).resolve().parents[1] / "data" / "import"
ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def actions(report: dict[str, Any]) -> dict[int, tuple[str, Any]]:
    return {r["row"]: (r["action"], r["customer_id"] or r["merged_with"]) for r in report["rows"]}


def problems(report: dict[str, Any]) -> set[tuple[int, str, str]]:
    return {(p["row"], p["column"], p["code"]) for p in report["problems"]}


def customers(cf: Careflow) -> dict[str, Customer]:
    with cf.session() as s:
        return {c.phone or c.email: c for c in s.scalars(select(Customer))}


def test_dry_run_of_the_messy_file_reports_every_row_and_writes_nothing(cf: Careflow) -> None:
    report = Importer(cf).plan(load("customers_messy.csv"), "customers_messy.csv")
    assert report["status"] == "planned" and report["file"] == {"name": "customers_messy.csv", "format": "csv", "encoding": "UTF-8"}
    assert report["unmapped"] == ["会员号"]
    assert actions(report) == {
        2: ("create", None), 3: ("merge", 2),  # +86 in full-width digits, e-mail only on the first row
        4: ("create", None), 5: ("merge", 4),  # 0086-… and +86 …, e-mail in capitals
        6: ("create", None),  # bad phone and impossible date: imported on its e-mail, without them
        7: ("create", None),  # bad e-mail: imported on its phone
        9: ("create", None), 10: ("create", None), 11: ("create", None),
        12: ("reject", None),  # neither phone nor e-mail is valid
    }
    assert problems(report) == {
        (6, "手机号", "bad_phone"), (6, "生日", "bad_date"), (7, "邮箱", "bad_email"),
        (11, "生日", "unsupported_lunar_day"), (12, "手机号", "bad_phone"), (12, "邮箱", "bad_email"), (12, "", "no_contact"),
    }
    bad_date = next(p for p in report["problems"] if p["code"] == "bad_date")
    assert bad_date["value"] == "2023-02-30" and bad_date["message"] == {
        "zh": "“2023-02-30”不是存在的日期", "en": "'2023-02-30' is not a real date"}
    assert report["summary"] == {"rows": 10, "create": 7, "merge": 2, "reject": 1, "update": 0, "unchanged": 0, "customers": 7}
    assert customers(cf) == {}


def test_gbk_and_bom_files_report_their_encoding_and_duplicates(cf: Careflow) -> None:
    gbk = Importer(cf).plan(load("customers_gbk.csv"), "customers_gbk.csv")
    assert gbk["file"]["encoding"] == "GB18030"
    assert actions(gbk) == {2: ("create", None), 3: ("create", None), 4: ("merge", 2), 5: ("create", None)}
    assert problems(gbk) == {(5, "联系电话", "bad_phone"), (5, "出生日期", "bad_date")}
    bom = Importer(cf).plan(load("customers_bom.csv"), "customers_bom.csv")
    assert bom["file"]["encoding"] == "UTF-8 (BOM)"
    assert actions(bom) == {2: ("create", None), 3: ("create", None), 4: ("merge", 2)}
    assert problems(bom) == {(3, "Birthday", "bad_date")}


def test_commit_creates_clean_customers_and_logs_in_file_merges(cf: Careflow) -> None:
    importer = Importer(cf)
    report = importer.commit(importer.plan(load("customers_messy.csv"), "customers_messy.csv", by="admin")["id"])
    assert report["status"] == "committed" and report["progress"]["percent"] == 100.0
    assert report["committed"] == {"created": 7, "updated": 0, "merged": 2, "rejected": 1}
    stored = customers(cf)
    assert len(stored) == 7
    zhang = stored["+8613800138000"]
    assert (zhang.name, zhang.email, zhang.birthday, zhang.region, zhang.tags) == (
        "张伟", "zhangwei@example.com", date(1990, 8, 15), "上海", ["VIP", "老客户"])
    li = stored["+8613900001111"]
    assert (li.email, li.birthday, li.birthday_calendar, li.birthday_key, li.region) == (
        "lina@example.com", date(1988, 8, 15), "lunar", 815, "北京")
    wang = stored["wangfang@example.com"]
    assert (wang.phone, wang.birthday, wang.region) == (None, None, "杭州")
    chen = stored["chenjing@example.com"]
    assert chen.birthday_key == 815 and chen.attributes == {"birthday_year_known": False}
    assert stored["+862162345678"].region == "上海"
    with cf.session() as s:
        log, total = merges(s, import_id=report["id"])
    assert total == 2 and {tuple(m["rows"]) for m in log} == {(2, 3), (4, 5)}
    assert all(m["created"] for m in log)
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0  # no flow starts unless asked


def test_a_second_file_merges_into_stored_customers_with_a_readable_log(cf: Careflow) -> None:
    importer = Importer(cf)
    importer.commit(importer.plan(load("customers_messy.csv"), "customers_messy.csv")["id"])
    update = ("姓名,手机,邮箱,地区,生日\n"
              "张伟,13800138000,zw.new@example.com,北京市,\n"  # new e-mail and region replace the old
              "李娜,,lina@example.com,,1988-09-01\n"  # a stored lunar birthday becomes a solar one
              "赵强,021 62345678,,,\n").encode()  # nothing new
    report = importer.plan(update, "update.csv")
    assert report["summary"] == {"rows": 3, "create": 0, "merge": 3, "reject": 0, "update": 2, "unchanged": 1, "customers": 3}
    zhang_id = customers(cf)["+8613800138000"].id
    row2 = report["rows"][0]
    assert (row2["action"], row2["customer_id"], row2["matched_on"], row2["changes"]) == (
        "merge", zhang_id, ["phone"], ["email", "region"])
    done = importer.commit(report["id"])
    assert done["committed"] == {"created": 0, "updated": 2, "merged": 3, "rejected": 0}
    stored = customers(cf)
    assert (stored["+8613800138000"].email, stored["+8613800138000"].region) == ("zw.new@example.com", "北京")
    li = stored["+8613900001111"]
    assert (li.birthday, li.birthday_calendar, li.birthday_key) == (date(1988, 9, 1), "solar", 901)
    with cf.session() as s:
        log, _ = merges(s, customer_id=zhang_id)
    assert log[0]["changes"] == {"email": ["zhangwei@example.com", "zw.new@example.com"], "region": ["上海", "北京"]}
    assert log[0]["matched_on"] == ["phone"] and log[0]["import_id"] == done["id"]


def test_re_running_the_same_file_creates_no_duplicates(cf: Careflow) -> None:
    importer = Importer(cf)
    for _ in range(2):
        importer.commit(importer.plan(load("customers_messy.csv"), "customers_messy.csv")["id"])
    again = importer.plan(load("customers_messy.csv"), "customers_messy.csv")
    assert again["summary"]["create"] == 0 and again["summary"]["unchanged"] == 7
    assert len(customers(cf)) == 7
    with pytest.raises(Conflict):
        importer.commit(importer.commit(again["id"])["id"])


def test_a_row_matching_two_stored_customers_is_rejected(cf: Careflow) -> None:
    a = cf.create_customer({"name": "甲", "phone": "13800000001"}, fire_triggers=False)
    b = cf.create_customer({"name": "乙", "email": "yi@example.com"}, fire_triggers=False)
    report = Importer(cf).plan("姓名,手机,邮箱\n甲,13800000001,YI@example.com\n".encode(), "x.csv")
    row = report["rows"][0]
    assert row["action"] == "reject" and f"{a}: phone" in row["reason"]["en"] and f"{b}: email" in row["reason"]["en"]


def test_xlsx_import_with_a_saved_mapping(cf: Careflow) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["客户", "联系方式", "会员号", "生日"])
    sheet.append(["钱多多", 13912345678, "V-9", datetime(1985, 5, 20)])
    sheet.append(["钱多多", "+86 139 1234 5678", "V-9", None])
    buffer = io.BytesIO()
    book.save(buffer)
    importer = Importer(cf)
    first = importer.plan(buffer.getvalue(), "members.xlsx", columns="客户=name,联系方式=phone,会员号=member_no",
                          save_as="crm-export")
    assert first["file"]["format"] == "xlsx" and actions(first) == {2: ("create", None), 3: ("merge", 2)}
    second = importer.plan(buffer.getvalue(), "members.xlsx", mapping_name="crm-export")
    assert second["columns"] == {"客户": "name", "联系方式": "phone", "会员号": "member_no", "生日": "birthday"}
    importer.commit(second["id"])
    stored = customers(cf)["+8613912345678"]
    assert stored.attributes == {"member_no": "V-9"} and stored.birthday == date(1985, 5, 20)


def test_start_flows_fires_onboarding_only_when_asked(cf: Careflow) -> None:
    importer = Importer(cf)
    quiet = importer.plan("姓名,手机\n静默,13800000011\n".encode(), "a.csv")
    importer.commit(quiet["id"])
    loud = importer.plan("姓名,手机\n欢迎,13800000022\n".encode(), "b.csv", start_flows=True)
    importer.commit(loud["id"])
    with cf.session() as s:
        started = {(i.flow_id, s.get(Customer, i.customer_id).name) for i in s.scalars(select(Instance))}
    assert started == {("onboarding", "欢迎")}


def test_report_csv_lists_rows_and_cell_problems_in_both_languages(cf: Careflow) -> None:
    report = Importer(cf).plan(load("customers_messy.csv"), "customers_messy.csv")
    text = report_csv(report)
    assert text.startswith("\ufeffrow,action,customer_id,merged_with_row,column,field,value,code,message_zh,message_en")
    assert "6,create,,,生日,birthday,2023-02-30,bad_date,“2023-02-30”不是存在的日期,'2023-02-30' is not a real date" in text
    assert "3,merge,,2,,,,,与第 2 行是同一客户,same customer as row 2" in text


def test_orders_update_purchase_figures_and_ignore_duplicate_order_ids(cf: Careflow) -> None:
    importer = Importer(cf)
    importer.commit(importer.plan(load("customers_messy.csv"), "customers_messy.csv")["id"])
    plan = importer.plan(load("orders.csv"), "orders.csv", kind="orders")
    assert actions(plan) == {2: ("add", customers(cf)["+8613800138000"].id), 3: ("add", customers(cf)["+8613800138000"].id),
                             4: ("ignore", None), 5: ("add", customers(cf)["+8613900001111"].id), 6: ("reject", None),
                             7: ("reject", None), 8: ("reject", None)}
    assert plan["rows"][4]["reason"]["en"] == "no customer with this phone or e-mail"
    assert problems(plan) == {(7, "金额", "bad_amount"), (8, "", "required")}
    done = importer.commit(plan["id"])
    assert done["committed"] == {"added": 3, "ignored": 1, "rejected": 3}
    zhang = customers(cf)["+8613800138000"]
    assert (zhang.purchase_count, zhang.purchase_total) == (2, 1498.5)
    assert zhang.last_purchase_at == datetime(2026, 11, 1, 16, 0, tzinfo=timezone.utc)
    assert zhang.first_purchase_at == datetime(2026, 10, 1, 2, 30, tzinfo=timezone.utc)
    again = importer.commit(importer.plan(load("orders.csv"), "orders.csv", kind="orders")["id"])
    assert again["committed"]["added"] == 0
    assert customers(cf)["+8613800138000"].purchase_count == 2
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(CustomerOrder)) == 3


def test_two_concurrent_creations_of_one_phone_leave_one_customer(cf: Careflow) -> None:
    """The store's check and the UNIQUE column: whichever thread loses gets an error, never a twin."""
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def create(n: int) -> None:
        barrier.wait()
        try:
            cf.create_customer({"name": f"并发{n}", "phone": "138 0000 9999", "email": f"c{n}@example.com"}, fire_triggers=False)
            outcomes.append("created")
        except Exception as exc:  # Conflict from the check, IntegrityError from the constraint
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 1, outcomes
    assert set(outcomes) - {"created"} <= {"Conflict", "IntegrityError", "OperationalError"}
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Customer).where(Customer.phone == "+8613800009999")) == 1
        winner = s.scalars(select(Customer.email).where(Customer.phone == "+8613800009999")).one()
    # later creations, with the phone or the e-mail written differently: the store normalises, then checks
    with pytest.raises(Conflict):
        cf.create_customer({"name": "再来", "email": winner.upper()})
    with pytest.raises(Conflict):
        cf.create_customer({"name": "又一个", "phone": "+86 138-0000-9999"})


def test_a_crash_mid_import_keeps_whole_batches_and_resumes(cf: Careflow, tmp_path: Path) -> None:
    """A real process killed at the second batch's commit; the first batch stays, the rest follows on resume."""
    rows = "\n".join(f"客户{n},139{n:08d},c{n}@example.com" for n in range(2500))
    path = tmp_path / "big.csv"
    path.write_text("姓名,手机,邮箱\n" + rows + "\n", encoding="utf-8")
    env = {**os.environ, "CAREFLOW_DATABASE_URL": cf.url, "CAREFLOW_CRASH_AT": "import_batch_before_commit",
           "CAREFLOW_CRASH_HIT": "2"}
    result = subprocess.run([str(Path(sys.executable).parent / "careflow"), "customers", "import", str(path), "--commit"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 137, result.stderr[-2000:]
    with cf.session() as s:
        run = s.scalars(select(ImportRun)).one()
        assert (run.status, run.done_groups, run.done_rows) == ("committing", 1000, 1000)
        assert s.scalar(select(func.count()).select_from(Customer)) == 1000
        run_id = run.id
    report = Importer(cf).commit(run_id)
    assert report["status"] == "committed" and report["committed"]["created"] == 2500
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Customer)) == 2500
        assert s.scalar(select(func.count(func.distinct(Customer.phone)))) == 2500


REGION_FLOW = """\
id: region_moved
name: {zh: 地区变更, en: Region changed}
triggers:
  - type: customer_event
    event: field_changed
    field: region
steps:
  - id: done
    type: end
    outcome: done
"""


def test_start_flows_fires_field_changed_for_merged_customers(cf: Careflow) -> None:
    cf.deploy_flow_text(REGION_FLOW, "region_moved.yaml")
    moved = cf.create_customer({"name": "搬家", "phone": "13800000033", "region": "上海"}, fire_triggers=False)
    stays = cf.create_customer({"name": "不动", "phone": "13800000044", "region": "北京"}, fire_triggers=False)
    importer = Importer(cf)
    plan = importer.plan("姓名,手机,地区\n搬家,13800000033,杭州\n不动,13800000044,北京市\n".encode(), "r.csv", start_flows=True)
    importer.commit(plan["id"])
    with cf.session() as s:
        started = {(i.flow_id, i.customer_id) for i in s.scalars(select(Instance))}
    assert started == {("region_moved", moved)} and stays not in {c for _f, c in started}


def test_committed_imports_regrade_the_customers_they_touch(cf: Careflow) -> None:
    importer = Importer(cf)
    importer.commit(importer.plan(load("customers_messy.csv"), "customers_messy.csv")["id"])
    imported = customers(cf)
    assert all(c.graded_at is not None for c in imported.values())
    assert imported["+8613800138000"].rfm_m is None  # no purchases yet: nothing to score
    importer.commit(importer.plan(load("orders.csv"), "orders.csv", kind="orders")["id"])
    zhang, other = customers(cf)["+8613800138000"], customers(cf)["+8613900001111"]
    # The purchase figures the orders wrote are scored at once, not at the next nightly recompute.
    assert zhang.rfm_m is not None and other.rfm_m is not None
    assert zhang.rfm_m >= other.rfm_m and zhang.rfm_f >= other.rfm_f

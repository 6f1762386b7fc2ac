"""``careflow customers import`` / ``import-orders`` / ``import-commit`` / ``merges`` / ``mappings``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from engine.cli import main

DATA = Path(__file__).resolve().parents[1] / "data" / "import"


def invoke(url: str, *args: str) -> object:
    return CliRunner().invoke(main, ["--database", url, "--now", "2026-11-24T09:00+08:00", *args], catch_exceptions=False)


def test_dry_run_report_commit_orders_and_merges(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    dry = invoke(url, "customers", "import", str(DATA / "customers_gbk.csv"), "--report", str(tmp_path / "r.csv"),
                 "--save-mapping", "gbk-export")
    assert dry.exit_code == 0, dry.output
    assert "GB18030" in dry.output and "新建 3, 合并 1, 拒绝 0" in dry.output and "未写入任何数据" in dry.output
    with open(tmp_path / "r.csv", encoding="utf-8-sig", newline="") as f:
        lines = list(csv.DictReader(f))
    assert [(r["row"], r["action"], r["code"]) for r in lines] == [
        ("2", "create", ""), ("3", "create", ""), ("4", "merge", ""), ("5", "create", ""),
        ("5", "create", "bad_phone"), ("5", "create", "bad_date")]

    done = invoke(url, "--json", "customers", "import", str(DATA / "customers_gbk.csv"), "--mapping", "gbk-export", "--commit")
    report = json.loads(done.output)
    assert report["status"] == "committed" and report["committed"]["created"] == 3
    assert "gbk-export" in invoke(url, "customers", "mappings").output

    orders = tmp_path / "orders.csv"
    orders.write_text("订单号,联系电话,下单时间,金额\nW1,13700001234,2026-11-01,10\nW2,13700001234,2026-11-03,5.5\n", encoding="utf-8")
    result = invoke(url, "--json", "customers", "import-orders", str(orders), "--commit")
    assert json.loads(result.output)["committed"] == {"added": 2, "ignored": 0, "rejected": 0}

    merges = json.loads(invoke(url, "--json", "customers", "merges").output)
    assert merges["total"] == 1 and merges["items"][0]["rows"] == [2, 4]
    shown = json.loads(invoke(url, "--json", "customers", "show", str(merges["items"][0]["customer_id"])).output)
    assert (shown["purchase_count"], shown["purchase_total"], shown["region"]) == (2, 15.5, "苏州")


def test_unreadable_file_and_committed_import_are_clear_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    broken = invoke(url, "customers", "import", str(DATA / "customers_broken.csv"))
    assert broken.exit_code == 1 and "customers_broken.csv line 3" in broken.output
    done = invoke(url, "--json", "customers", "import", str(DATA / "customers_bom.csv"), "--commit")
    again = invoke(url, "customers", "import-commit", str(json.loads(done.output)["id"]))
    assert again.exit_code == 1 and "already committed" in again.output

#!/usr/bin/env python
"""Customer import benchmark: 100,000 generated rows, cleaned, de-duplicated and committed on SQLite.

Run ``.venv/bin/python bench/import.py`` for a readable table, ``--json`` for one JSON object,
``--rows N`` for another size. The file is a CSV as Excel writes it in China (GB18030), with a
realistic share of duplicates written differently (+86 / 0086 / full-width digits / spaces,
e-mails in capitals, one row with only the phone and one with only the e-mail) and of bad rows
(no valid phone or e-mail: rejected; impossible birthdays: kept without the birthday).

The goal is under 60 s for 100,000 rows, dry run and commit together. For comparison the same
kind of rows are created one by one through ``Careflow.create_customer`` (what a script calling
the store or the API row by row would do), on a sample, as rows per second.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# bench/engine.py would hide the engine package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from engine.core import Careflow  # noqa: E402
from engine.imports import Importer  # noqa: E402
from engine.store.models import Customer  # noqa: E402

DUPLICATE_SHARE = 0.10
BAD_SHARE = 0.03
FULL_WIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英")
_REGIONS = ("上海", "上海市", "Shanghai", "北京", "北京市", "beijing", "杭州", "广东省", "深圳", "成都市")


@dataclass
class Generated:
    data: bytes
    rows: int
    people: int
    duplicates: int
    bad: int


def _birthday(rng: random.Random) -> str:
    y, m, d = rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice((f"{y}-{m:02d}-{d:02d}", f"{y}/{m}/{d}", f"{y}年{m}月{d}日", f"{y}{m:02d}{d:02d}",
                       f"农历{y}-{m:02d}-{d:02d}", ""))


def generate(rows: int, seed: int = 20261205) -> Generated:
    """The file and what a correct import makes of it (people created, rows merged, rows rejected)."""
    rng = random.Random(seed)
    bad = int(rows * BAD_SHARE)
    duplicates = int(rows * DUPLICATE_SHARE)
    people = rows - bad - duplicates
    lines: list[str] = []
    for i in range(people):
        name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
        phone = f"139{i:08d}"
        birthday = "2023-02-30" if i % 97 == 0 else _birthday(rng)
        lines.append(f"{name},{phone[:3]} {phone[3:7]} {phone[7:]},p{i}@example.com,{birthday},{rng.choice(_REGIONS)},")
    for k in range(duplicates):
        i = rng.randrange(people)
        phone = f"139{i:08d}"
        variant = k % 4
        if variant == 0:
            lines.append(f",+86{phone},,,,回访")
        elif variant == 1:
            lines.append(f",0086-{phone[:3]}-{phone[3:7]}-{phone[7:]},P{i}@EXAMPLE.COM,,,")
        elif variant == 2:
            lines.append(f",{phone.translate(FULL_WIDTH)},,,,")
        else:
            lines.append(f",,P{i}@Example.com,,上海,")
    for k in range(bad):
        lines.append(f"坏数据{k},{rng.choice(('12345', 'abc', '1390000'))},{rng.choice(('', 'x@', 'no-at.example.com'))},,,")
    rng.shuffle(lines)
    text = "姓名,手机号,邮箱,生日,地区,标签\r\n" + "\r\n".join(lines) + "\r\n"
    return Generated(text.encode("gb18030"), rows, people, duplicates, bad)


def run_import(rows: int) -> dict[str, Any]:
    generated = generate(rows)
    with tempfile.TemporaryDirectory() as tmp:
        cf = Careflow(f"sqlite:///{tmp}/import.db")
        try:
            importer = Importer(cf)
            started, cpu = time.perf_counter(), time.process_time()
            plan = importer.plan(generated.data, "customers.csv")
            planned = time.perf_counter()
            report = importer.commit(plan["id"])
            done, cpu = time.perf_counter(), time.process_time() - cpu
            with cf.session() as s:
                stored = s.scalar(select(func.count()).select_from(Customer)) or 0
        finally:
            cf.close()
    seconds = done - started
    committed = report["committed"]
    return {
        "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds), "dry_run_seconds": round(planned - started, 2),
        "commit_seconds": round(done - planned, 2), "cpu_seconds": round(cpu, 2), "created": committed["created"], "merged": committed["merged"],
        "rejected": committed["rejected"], "customers_stored": stored, "field_problems": sum(
            1 for p in report["problems"] if not p["rejects_row"]),
        "expected": {"created": generated.people, "merged": generated.duplicates, "rejected": generated.bad},
        "encoding": report["file"]["encoding"],
    }


def run_row_by_row(sample: int) -> dict[str, Any]:
    """The comparison: one ``create_customer`` transaction per row."""
    with tempfile.TemporaryDirectory() as tmp:
        cf = Careflow(f"sqlite:///{tmp}/rows.db")
        try:
            started = time.perf_counter()
            for i in range(sample):
                cf.create_customer({"name": f"客户{i}", "phone": f"139 {i:04d} {i % 10000:04d}", "email": f"R{i}@Example.com",
                                    "birthday": "1990-08-15", "region": "上海"}, fire_triggers=False)
            seconds = time.perf_counter() - started
        finally:
            cf.close()
    return {"rows": sample, "seconds": round(seconds, 2), "rows_per_s": round(sample / seconds)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the generated file (default 100000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--no-compare", action="store_true", help="skip the row-by-row comparison")
    args = parser.parse_args(argv)
    if args.rows < 10:
        parser.error("--rows must be at least 10")
    result = run_import(args.rows)
    if not args.no_compare:
        result["row_by_row"] = run_row_by_row(min(2000, args.rows))
    result["goal_seconds"] = 60 if args.rows == 100_000 else None
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return 0
    e = result["expected"]
    table = [
        ("rows in the file (GB18030 CSV)", f"{result['rows']:,}"),
        ("dry run: read, clean, de-duplicate, match", f"{result['dry_run_seconds']:.2f} s"),
        ("commit (batches of 1,000)", f"{result['commit_seconds']:.2f} s"),
        ("total", f"{result['seconds']:.2f} s" + ("  (goal: under 60 s)" if result["goal_seconds"] else "")),
        ("CPU time of this process (the machine may be shared)", f"{result['cpu_seconds']:.2f} s"),
        ("rows per second", f"{result['rows_per_s']:,}"),
        ("customers created (expected)", f"{result['created']:,} ({e['created']:,})"),
        ("rows merged (expected)", f"{result['merged']:,} ({e['merged']:,})"),
        ("rows rejected (expected)", f"{result['rejected']:,} ({e['rejected']:,})"),
        ("field problems kept out (bad dates…)", f"{result['field_problems']:,}"),
    ]
    if "row_by_row" in result:
        r = result["row_by_row"]
        table.append((f"comparison: create_customer row by row ({r['rows']:,} rows)", f"{r['rows_per_s']:,} rows/s"))
    width = max(len(k) for k, _ in table)
    print("Customer import benchmark (SQLite)")
    for key, value in table:
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

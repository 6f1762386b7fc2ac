#!/usr/bin/env python
"""Grading and segments benchmark: the recompute over 100,000 customers on SQLite (and PostgreSQL).

Run ``.venv/bin/python bench/segments.py`` for a readable table, ``--json`` for one JSON object,
``--quick`` for a small smoke run (CI), ``--customers N`` to change the size.

Figures:

* ``recompute_seconds``: the first recompute (RFM, grades, churn risk and the five built-in
  segments' memberships) over customers with random purchase figures; every customer changes.
* ``recompute_again_seconds``: the next recompute at the same clock time, where nothing changed
  (on the next day most churn scores change, so the daily run writes about as much as the first).
* ``*_cpu_seconds``: the same in CPU time of the benchmark process (for SQLite, the whole work).
* the peer, ``row_by_row_customers_per_s``: the same grading written the obvious way, one ORM
  object loaded and updated per customer, measured over ``--peer-customers`` customers.

No flow is deployed: the figures are the recompute's own; starting flows for customers who enter
a segment costs what starting those instances costs (see bench/engine.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from engine.clock import FixedClock  # noqa: E402
from engine.core import Careflow  # noqa: E402
from engine.segments.grading import Figures, churn_of, customer_value, grade_for  # noqa: E402
from engine.segments.settings import GradingSettings  # noqa: E402
from engine.store.models import Customer  # noqa: E402

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)
POSTGRES_URL = os.environ.get("CAREFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def customers(n: int, seed: int = 8) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        count = rng.choice([0, 1, 1, 2, 3, 5, 8, 13, 21])
        last = NOW - timedelta(days=rng.randint(0, 720)) if count else None
        first = last - timedelta(days=rng.randint(0, 900)) if last is not None and count > 1 else last
        rows.append({
            "name": f"客户{i}", "phone": None, "email": None, "birthday": None, "birthday_calendar": "solar",
            "birthday_key": rng.randint(1, 12) * 100 + rng.randint(1, 28), "region": rng.choice(["上海", "北京", "广州", None]),
            "grade": None, "expected_value": rng.choice([None, 5000.0, 50000.0, 150000.0]), "owner": None,
            "tags": rng.choice([[], ["vip"]]), "preferred_channel": None, "language": "zh", "consent": {}, "status": "active",
            "last_purchase_at": last, "first_purchase_at": first, "purchase_count": count,
            "purchase_total": round(count * rng.uniform(50, 20000), 2), "attributes": {}, "created_at": NOW, "updated_at": NOW,
        })
    return rows


def fill(cf: Careflow, n: int) -> None:
    rows = customers(n)
    with cf.sessions.begin() as s:
        for start in range(0, n, 10000):
            s.execute(insert(Customer), rows[start:start + 10000])


def row_by_row(cf: Careflow, limit: int) -> float:
    """The peer: each customer loaded as an object and updated on its own (grades and churn only)."""
    settings = GradingSettings()
    started = time.perf_counter()
    with cf.sessions.begin() as s:
        ids = list(s.scalars(select(Customer.id).order_by(Customer.id).limit(limit)))
    for cid in ids:
        with cf.sessions.begin() as s:
            c = s.get(Customer, cid)
            assert c is not None
            f = Figures(c.id, c.first_purchase_at, c.last_purchase_at, c.purchase_count, c.purchase_total, c.expected_value)
            churn = churn_of(f, NOW, settings)
            c.grade = grade_for(customer_value(f), settings)
            c.churn_score = churn.score if churn else None
            c.churn_reason = churn.explanation() if churn else None
    return len(ids) / (time.perf_counter() - started)


def run(url: str, n: int, peer: int) -> dict[str, Any]:
    cf = Careflow(url, clock=FixedClock(NOW))
    try:
        fill(cf, n)
        started, cpu = time.perf_counter(), time.process_time()
        first = cf.recompute_segments()
        recompute, recompute_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        again = cf.recompute_segments()
        recompute_again, again_cpu = time.perf_counter() - started, time.process_time() - cpu
        return {
            "customers": n, "recompute_seconds": round(recompute, 2), "recompute_again_seconds": round(recompute_again, 2),
            # CPU time of this process: on a busy machine the wall-clock figures mostly measure the wait for a CPU.
            "recompute_cpu_seconds": round(recompute_cpu, 2), "recompute_again_cpu_seconds": round(again_cpu, 2),
            "customers_per_s": round(n / recompute), "changed_first": first["grading"]["changed"],
            "changed_again": again["grading"]["changed"], "members": first["segments"]["members"],
            "row_by_row_customers_per_s": round(row_by_row(cf, peer)) if peer else None,
        }
    finally:
        cf.close()


def postgres_schema_url() -> tuple[str, Any] | None:
    try:
        admin = sa.create_engine(POSTGRES_URL)
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except Exception:
        return None
    sep = "&" if "?" in POSTGRES_URL else "?"

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}", drop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="2,000 customers, a few seconds (CI smoke run)")
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--peer-customers", type=int, default=2000, help="customers the row-by-row peer updates")
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args(argv)
    n = 2000 if args.quick else args.customers
    peer = min(200 if args.quick else args.peer_customers, n)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite"] = run(f"sqlite:///{Path(tmp) / 'segments.db'}", n, peer)
    pg = None if args.skip_postgres else postgres_schema_url()
    if pg is not None:
        url, drop = pg
        try:
            out["postgres"] = run(url, n, peer)
        finally:
            drop()
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for db, r in out.items():
        print(f"{db:<9} {r['customers']:>7} customers: recompute {r['recompute_seconds']:>6.2f} s "
              f"(CPU {r['recompute_cpu_seconds']:.2f} s, {r['customers_per_s']:,}/s), again {r['recompute_again_seconds']:.2f} s "
              f"(CPU {r['recompute_again_cpu_seconds']:.2f} s); "
              f"row-by-row peer {r['row_by_row_customers_per_s']:,}/s; members {r['members']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

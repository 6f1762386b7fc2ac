"""The benchmarks run at a reduced size in CI: they must finish and report every figure.

No speed is asserted here (timings belong in bench/, not in tests); this checks that the
benchmark still measures what it says, so `make bench` keeps working.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("careflow_sqlite_ips", "spiff_sqlite_ips", "careflow_postgres_ips", "spiff_postgres_ips",
        "sqlite_raw_commits_per_s", "postgres_raw_commits_per_s")


def test_engine_benchmark_quick_reports_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAREFLOW_DATABASE_URL"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "engine.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    require_pg = os.environ.get("CAREFLOW_REQUIRE_POSTGRES") == "1"
    for key in KEYS:
        if "postgres" in key and not require_pg and figures.get(key) is None:
            continue
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures.get(key))
    assert figures["birthday_1m_seconds"] > 0


def test_segments_benchmark_quick_reports_every_figure() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CAREFLOW_DATABASE_URL"}
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "segments.py"), "--quick", "--json"],
                            capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    runs = [figures["sqlite"]] + ([figures["postgres"]] if os.environ.get("CAREFLOW_REQUIRE_POSTGRES") == "1" else [])
    for run in runs:
        assert run["customers"] == 2000 and run["changed_first"] == 2000
        assert run["recompute_seconds"] > 0 and run["row_by_row_customers_per_s"] > 0
        assert set(run["members"]) >= {"churn_risk", "grade_a", "vip_birthday_this_month"}

"""bench/scale.py at a reduced size: it must finish, report every figure, and see nothing run twice.

No speed is asserted (timings belong in bench/); this keeps `python bench/scale.py` working.
Needs PostgreSQL and Redis: skipped without them, failed instead with CAREFLOW_REQUIRE_SCALE=1 (CI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scale.cluster import redis_up

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("embedded_ips", "spiff_postgres_ips", "p50_due_to_done_ms", "p99_due_to_done_ms", "raw_commit_per_s",
        "fraction_of_raw_commit_rate")


def test_scale_benchmark_quick_reports_every_figure(postgres_url: str) -> None:
    if not redis_up():
        if os.environ.get("CAREFLOW_REQUIRE_SCALE") == "1":
            pytest.fail("Redis is required (CAREFLOW_REQUIRE_SCALE=1) but not reachable")
        pytest.skip("Redis not reachable")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREFLOW_DATABASE_URL", "CAREFLOW_BROKER_URL"))}
    env["CAREFLOW_BENCH_POSTGRES_URL"] = postgres_url
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "scale.py"), "--quick", "--json", "-n", "40",
                             "--latency-seconds", "1"], capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout)
    for key in ("ips_by_workers", "transitions_per_s_by_workers"):
        assert set(figures[key]) == {"1", "2", "4"} and all(v > 0 for v in figures[key].values()), figures[key]
    for key in KEYS:
        assert isinstance(figures[key], (int, float)) and figures[key] > 0, (key, figures.get(key))
    assert figures["duplicate_steps"] == 0 and figures["duplicate_sends"] == 0
    assert set(figures["cpu_ms_per_transition_by_workers"]) == {"1", "2", "4"}
    assert set(figures["pg_cpu_ms_per_transition_by_workers"]) == {"1", "2", "4"}
    [offered] = figures["latency_by_rate"]  # --quick: one rate, 60 % of the 4-worker throughput
    assert offered["offered_per_s"] > 0 and offered["achieved_per_s"] > 0 and offered["p99_ms"] >= offered["p50_ms"] > 0
    assert isinstance(figures["goal_1000_per_s_p99_under_2s"], bool) and figures["max_sustained_rate_per_s"] >= 0
    # Where the time goes, single claims against batches: the batch fires in fewer statements and commits.
    batch = figures["task_batch"]
    single, batched = figures["breakdown_ms_per_instance"]["1"], figures["breakdown_ms_per_instance"][str(batch)]
    for split in (single, batched):
        assert split["fire"]["ms"] > 0 and split["send"]["ms"] > 0 and split["cpu_ms"] > 0
    assert batched["fire"]["statements"] < single["fire"]["statements"]
    assert batched["fire"]["commits"] < single["fire"]["commits"] == 1
    # A task's messages through a provider that recognises a repeat go as one group: all marked
    # in one commit, all recorded in one more (docs/decisions/0012), two commits per task however
    # many messages it sends. (The quick run's breakdown has 20 instances: one task of 20.)
    assert single["send"]["commits"] == 2 and batched["send"]["commits"] <= 2 / min(batch, 20) + 0.005
    assert figures["latency_workers"] == 4

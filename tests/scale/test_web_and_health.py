"""The distributed ``careflow run`` (gunicorn) serves but does not tick; ``careflow health`` sees why.

Real processes, PostgreSQL and Redis; skipped without them unless CAREFLOW_REQUIRE_SCALE=1 (CI).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from engine.store.models import Timer
from tests.conftest import START
from tests.scale.cluster import CAREFLOW, REPO, Cluster
from tests.scale.test_distributed import redis_broker  # noqa: F401 - the fixture

DUE = START + timedelta(days=1, minutes=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(cluster: Cluster) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([CAREFLOW, "--json", "health", "--max-lag", "30"], cwd=REPO, env=cluster.env(),
                          capture_output=True, text=True, timeout=120)
    return done.returncode, json.loads(done.stdout)


def test_web_serves_without_ticking_and_health_reports_the_missing_scheduler(
        pg_schema_url: str, redis_broker: str, tmp_path: Any) -> None:  # noqa: F811
    cluster = Cluster(pg_schema_url, redis_broker, tmp_path / "cluster", START)
    port = free_port()
    web = cluster._spawn(["run", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], "web")
    try:
        cluster.start_instances(3)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as r:
                    assert r.status == 200 and json.load(r)["status"] == "ok"
                    break
            except OSError:
                assert time.monotonic() < deadline, cluster.logs()
                time.sleep(0.5)
        cluster.advance(DUE)
        time.sleep(2)
        with cluster.cf.sessions() as s:
            assert set(s.scalars(select(Timer.status))) == {"pending"}  # the web process does not tick
        rc, report = health(cluster)
        assert rc == 1 and report["database"] == "ok" and report["broker"] == "ok"
        assert report["oldest_unclaimed_due_seconds"] >= 240 and report["workers"] == []
        assert any("scheduler" in p for p in report["problems"])

        cluster.start_worker()
        cluster.start_scheduler()
        cluster.wait_completed(3, 120)
        rc, report = health(cluster)
        assert rc == 0, report
        assert report["oldest_unclaimed_due_seconds"] == 0 and len(report["workers"]) == 1
    finally:
        try:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(timeout=30)
        finally:
            cluster.stop()

"""RELIABILITY T01 for a group of messages (distributed mode): a worker killed mid-group loses nothing.

A worker sends the messages of a task that go through a provider which recognises a repeat as
one group (engine.outbox._send_group, docs/decisions/0012-grouped-message-results.md): all marked
``sending`` in one commit, sent one after the other, their results recorded in one transaction.
Here a real worker process (``run_timers``, five timers whose steps each send one message) is
killed at a crash point inside that group; the lease then runs out, the reclaim hands the
messages back and another worker sends them. Every message must reach the provider's log, at most
once per claim and so at most once after de-duplication by its key, every instance must complete,
and every step must be recorded once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

import tests
from engine.clock import FileClock
from engine.core import Careflow
from engine.scale import claim_messages, reclaim_messages, run_messages, wall_now
from engine.store.instances import start_instance
from engine.store.models import Incident, Instance, OutboxMessage, StepExecution
from tests.conftest import START
from tests.scale.cluster import write_clock
from tests.scale.support import FLOW_ID, FLOWS, ledger_counts, registry

REPO_ROOT = Path(tests.__file__).parent.parent
LEASE = timedelta(seconds=30)
N = 5
EXIT_CRASHED = 137

#: The worker: claim every due timer and run them as one task, as ``careflow worker`` would.
WORKER = """
from datetime import timedelta
from engine.scale import Settings, claim_timers, run_timers, wall_now
from tests.scale.support import build
cf = build()
lease = timedelta(seconds=float({lease}))
with cf.sessions.begin() as s:
    claims = claim_timers(s, cf.clock.now(), wall_now(), lease, 100)
assert len(claims) == {n}, claims
print(run_timers(cf, claims, settings=Settings(lease=lease)))
"""

CASES = [("before_provider_call", hit) for hit in (1, 3, N)] + \
        [("after_provider_accept_before_ledger", hit) for hit in (1, 3, N)] + \
        [("after_ledger_before_ack", 1)]


@pytest.mark.parametrize(("point", "hit"), CASES)
def test_a_worker_killed_mid_group_loses_nothing_and_sends_each_message_once_per_key(
        database_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, point: str, hit: int) -> None:
    clock_file, ledger = tmp_path / "clock.txt", tmp_path / "ledger.tsv"
    write_clock(clock_file, START)
    monkeypatch.setenv("CAREFLOW_SCALE_LEDGER", str(ledger))  # this process's provider logs too (the resends)
    cf = Careflow(database_url, clock=FileClock(str(clock_file)), registry=registry())
    try:
        cf.deploy([FLOWS])
        with cf.transition() as s:
            for _ in range(N):
                start_instance(s, cf.runtime(), FLOW_ID, trigger={"type": "manual"})
        write_clock(clock_file, START + timedelta(days=1, minutes=1))
        crashed = _worker(database_url, clock_file, ledger, point, hit)
        assert crashed.returncode == EXIT_CRASHED, crashed.stderr[-2000:]

        # The worker's lease runs out: the reclaim hands its messages back, another worker sends them.
        later = wall_now() + LEASE + timedelta(seconds=1)
        with cf.sessions.begin() as s:
            in_doubt = list(s.scalars(select(OutboxMessage.id).where(OutboxMessage.status == "sending")))
            reclaim_messages(s, cf.resolve, cf.clock.now(), later)
            claims = claim_messages(s, cf.clock.now(), later, LEASE, 100)
        run_messages(cf, claims, LEASE)

        with cf.sessions() as s:
            statuses = Counter(s.scalars(select(Instance.status)))
            outbox = Counter(s.scalars(select(OutboxMessage.status)))
            keys = set(s.scalars(select(OutboxMessage.effect_key)))
            done = Counter(s.scalars(select(StepExecution.ref_id).where(
                StepExecution.kind == "message", StepExecution.outcome == "done")))
            timers_done = s.scalar(select(func.count()).select_from(StepExecution).where(StepExecution.kind == "timer"))
            incidents = s.scalar(select(func.count()).select_from(Incident))
    finally:
        cf.close()

    sends = ledger_counts(ledger)
    assert statuses == {"completed": N}
    assert outbox == {"sent": N}
    assert sorted(done.values()) == [1] * N, done  # each result recorded once
    assert timers_done == N
    assert incidents == 0  # a resend with the key settles a message in doubt, never an incident
    # Never two requests under one claim; after de-duplication by key, each message exactly once.
    assert max(sends.values()) == 1, sends
    assert {key for key, _attempt in sends} == keys
    by_second_worker = {key for key, attempt in sends if attempt > 1}
    if point == "after_ledger_before_ack":
        assert in_doubt == [] and by_second_worker == set()  # the group's results had committed
    else:
        # The whole group was in doubt (some of it sent, some not), and the second worker sent
        # each message of it under its own claim, with the message's key.
        assert len(in_doubt) == N and len(by_second_worker) == N


def _worker(url: str, clock_file: Path, ledger: Path, point: str, hit: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_CRASH_")}
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        "CAREFLOW_DATABASE_URL": url, "CAREFLOW_CLOCK_FILE": str(clock_file), "CAREFLOW_SCALE_LEDGER": str(ledger),
        "CAREFLOW_CRASH_AT": point, "CAREFLOW_CRASH_HIT": str(hit),
    })
    return subprocess.run([sys.executable, "-c", WORKER.format(lease=LEASE.total_seconds(), n=N)],
                          env=env, capture_output=True, text=True, timeout=120, check=False)

"""Crash points stay armed by the environment: in a new process, in a forked one, after ``rearm``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine import crashpoints

PROGRAM = """
from engine.crashpoints import crash_point
for hit in range(1, 4):
    crash_point("after_claim")
    crash_point("before_provider_call")
    print(hit, flush=True)
"""


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAREFLOW_CRASH_")}
    return subprocess.run([sys.executable, "-c", PROGRAM], env={**base, **env}, capture_output=True, text=True,
                          timeout=60)


def test_a_process_started_armed_exits_at_the_chosen_hit() -> None:
    done = _run({"CAREFLOW_CRASH_AT": "before_provider_call", "CAREFLOW_CRASH_HIT": "2"})
    assert (done.returncode, done.stdout.split()) == (137, ["1"])


def test_an_unarmed_process_runs_through() -> None:
    done = _run({})
    assert (done.returncode, done.stdout.split()) == (0, ["1", "2", "3"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_child_armed_after_the_fork_crashes_though_its_parent_read_no_arming(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREFLOW_CRASH_AT", raising=False)
    crashpoints.crash_point("after_claim")  # the parent has read its (empty) arming
    pid = os.fork()
    if pid == 0:  # the child: armed as the crash sweep's fork server arms it
        try:
            os.environ.update(CAREFLOW_CRASH_AT="after_claim", CAREFLOW_CRASH_HIT="1")
            crashpoints.crash_point("after_claim")
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 137


def test_rearm_reads_the_environment_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREFLOW_CRASH_AT", raising=False)
    crashpoints.rearm()
    crashpoints.crash_point("after_claim")
    monkeypatch.setenv("CAREFLOW_CRASH_AT", "after_claim")
    monkeypatch.setenv("CAREFLOW_CRASH_HIT", "1000000")
    monkeypatch.setattr(crashpoints, "_hits", {})
    crashpoints.crash_point("after_claim")
    assert crashpoints._hits == {}  # still the arming read first
    crashpoints.rearm()
    crashpoints.crash_point("after_claim")
    assert crashpoints._hits == {"after_claim": 1}
    monkeypatch.delenv("CAREFLOW_CRASH_AT")
    crashpoints.rearm()

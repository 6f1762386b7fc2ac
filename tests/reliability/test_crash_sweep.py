"""T01, crash sweep at every step boundary: 5 flows × 10 crash points × seeds, real process deaths.

For each case the scenario of the flow (tests/reliability/scenarios.py) runs operation by operation,
each in its own process (tests/reliability/driver.py); the armed crash point kills one of them with
exit 137 at the N-th hit, the harness restarts it, and the run goes on to the end. Then, as
RELIABILITY.md T01 asks:

(a) every instance reaches its expected outcome; the one exception is a message whose send the
    provider accepted before the crash at ``after_provider_accept_before_ledger``, which must end
    ``unknown`` with an open ``delivery_unknown`` incident and must not be resent;
(b) per outbox effect key the provider's ledger holds at most one accepted send, exactly one for
    every message marked ``sent``, and no message is left unsent without cause;
(c) history logs exactly one ``step_completed`` per step of the main path, and no task step is
    completed twice for one (instance, step, token gen);
(d) after the final tick no outbox row is ``sending`` and no timer is pending in the past.

``CAREFLOW_SWEEP=full`` runs 14 seeds per (flow, point); the default runs one. The figure is printed
at the end of the session (tests/reliability/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine.crashpoints import POINTS
from tests.reliability.conftest import Sweep, all_cases
from tests.reliability.harness import Case

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_crash_sweep(sweep: Sweep, case: Case) -> None:
    result = sweep.result(case)
    if not result.hits_available:
        pytest.skip(f"the {case.flow} scenario never reaches {case.point}")
    where = f"crash at hit {result.hit}/{result.hits_available} of {case.point}, during {result.crashed_op}, " \
            f"restarted {result.restart_delay:.0f} s later; database: {sweep.root / case.id}"
    if result.error:
        pytest.fail(f"{case.id}: the harness failed ({where}):\n{result.error}", pytrace=False)
    assert result.injected == 1, f"{case.id}: no crash was injected ({where})"
    if result.violations:
        shown = "\n  ".join(result.violations[:25])
        more = f"\n  … and {len(result.violations) - 25} more" if len(result.violations) > 25 else ""
        pytest.fail(f"{case.id}: {where}\n  {shown}{more}", pytrace=False)


def test_every_crash_point_is_injected(sweep: Sweep) -> None:
    """Each named crash point must kill a process somewhere in the sweep, or it guards nothing."""
    if {c for c in sweep.cases} != set(CASES):
        pytest.skip("only part of the sweep was selected")
    injected = {r.case.point for r in (sweep.result(c) for c in sweep.cases) if r.injected}
    missing = [p for p in POINTS if p not in injected]
    sources = [f for f in Path(engine.__file__).parent.rglob("*.py") if f.name != "crashpoints.py"]
    called = {p for p in missing if any(f'crash_point("{p}")' in f.read_text(encoding="utf-8") for f in sources)}
    assert not missing, "no flow of the sweep ever reaches these crash points: " + ", ".join(
        f"{p} ({'called in the engine' if p in called else 'named in engine.crashpoints.POINTS, never called'})"
        for p in missing
    )

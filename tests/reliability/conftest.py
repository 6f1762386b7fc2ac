"""The crash sweep's size, its shared run, and the figure printed at the end of the session.

``CAREFLOW_SWEEP=full`` runs 5 flows × 10 crash points × 14 seeds (RELIABILITY.md T01); anything
else runs one seed per (flow, point), the size for every ``pytest`` run. Other knobs:
``CAREFLOW_SWEEP_SEEDS``, ``CAREFLOW_SWEEP_INSTANCES`` (instances per case, default 20),
``CAREFLOW_SWEEP_WORKERS`` (parallel cases, default 2) and ``CAREFLOW_SWEEP_EXEC=1`` (a fresh
interpreter per operation instead of the fork server; about five times slower).

The cases run in a thread pool started by a session fixture, in the order pytest will ask for
them, so each test item only waits for its own case while the pool works ahead.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.crashpoints import POINTS
from tests.reliability.harness import Case, CaseResult, HarnessError, RunnerPool, calibrate, make_template, run_case
from tests.reliability.scenarios import FLOWS

FULL = os.environ.get("CAREFLOW_SWEEP", "").lower() == "full"
SEEDS = int(os.environ.get("CAREFLOW_SWEEP_SEEDS") or (14 if FULL else 1))
INSTANCES = int(os.environ.get("CAREFLOW_SWEEP_INSTANCES") or 20)
WORKERS = max(1, int(os.environ.get("CAREFLOW_SWEEP_WORKERS") or min(2, os.cpu_count() or 1)))


def all_cases() -> list[Case]:
    return [Case(flow, point, seed, SEEDS) for flow in FLOWS for point in POINTS for seed in range(SEEDS)]


class Sweep:
    def __init__(self, root: Path, cases: list[Case]):
        self.root = root
        self.cases = cases
        self.started = time.monotonic()
        self.pool = RunnerPool(root)
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="crash-sweep")
        self.available: dict[tuple[str, str], int] = {}
        self.futures: dict[Case, Future[CaseResult]] = {}
        self.error: str | None = None
        try:
            self.template = make_template(self.pool.get(), root / "template")
            flows = sorted({c.flow for c in cases}, key=FLOWS.index)
            calibrations = {f: self.executor.submit(self._calibrate, f) for f in flows}
            for flow, future in calibrations.items():
                for point, hits in future.result().items():
                    self.available[(flow, point)] = hits
        except HarnessError as exc:
            self.error = str(exc)
            return
        for case in cases:
            self.futures[case] = self.executor.submit(self._run, case)

    def _calibrate(self, flow: str) -> Counter[str]:
        return calibrate(self.pool.get(), self.template, self.root / f"calibrate-{flow}", flow, INSTANCES)

    def _run(self, case: Case) -> CaseResult:
        available = self.available.get((case.flow, case.point), 0)
        return run_case(self.pool.get(), self.template, self.root / case.id, case, INSTANCES, available)

    def result(self, case: Case) -> CaseResult:
        if self.error:
            pytest.fail(f"the sweep could not start: {self.error}", pytrace=False)
        if case not in self.futures:  # selected after the pool started (should not happen)
            self.futures[case] = self.executor.submit(self._run, case)
        return self.futures[case].result()

    def finished(self) -> list[CaseResult]:
        return [f.result() for f in self.futures.values() if f.done() and not f.cancelled() and f.exception() is None]

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.executor.shutdown(wait=True)
        self.pool.close()

    def summary(self) -> list[str]:
        results = self.finished()
        crashed = [r for r in results if r.injected]
        metrics: Counter[str] = Counter()
        for r in results:
            metrics.update(r.metrics)
        unreached = sorted({(r.case.flow, r.case.point) for r in results if not r.hits_available})
        points = {r.case.point for r in crashed}
        flows = {c.flow for c in self.cases}
        seeds = {c.seed for c in self.cases}
        elapsed = time.monotonic() - self.started
        lines = [
            f"{len(crashed)} crashes injected mid-flow ({len(flows)} flows × {len({c.point for c in self.cases})} "
            f"crash points × {len(seeds)} seeds, {INSTANCES} instances per case): "
            f"{metrics['instances_lost']} instances lost, {metrics['duplicate_deliveries']} duplicate deliveries, "
            f"{metrics['stuck_instances']} stuck instances",
            f"  and: {metrics['steps_run_twice']} steps run twice, {metrics['steps_missing']} steps missing, "
            f"{metrics['duplicate_instances']} duplicate instances, {metrics['messages_never_sent']} messages never "
            f"sent (marked unknown without reaching the provider), {metrics['stuck_rows']} outbox rows or timers left in flight/due, "
            f"{metrics['ambiguous_surfaced']} ambiguous sends surfaced as delivery_unknown incidents (not resent)",
            f"  cases: {len(results)} of {len(self.cases)} finished, "
            f"{sum(1 for r in results if r.violations or r.error)} failing, "
            f"{len(results) - len([r for r in results if r.hits_available])} skipped because the flow never reaches "
            f"the point; {elapsed:.0f} s with {WORKERS} workers",
        ]
        missing = [p for p in POINTS if p not in points and any(c.point == p for c in self.cases)]
        if missing and len(results) == len(self.cases):
            lines.append(f"  crash points never injected by any flow: {', '.join(missing)}")
        if unreached:
            by_point: dict[str, list[str]] = {}
            for flow, point in unreached:
                by_point.setdefault(point, []).append(flow)
            lines.append("  not reached: " + "; ".join(f"{p} ({', '.join(f)})" for p, f in by_point.items()))
        return lines


SWEEP_KEY = pytest.StashKey[Sweep]()


def _selected_cases(session: pytest.Session) -> list[Case]:
    cases: list[Case] = []
    for item in session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = params.get("case")
        if isinstance(case, Case) and case not in cases:
            cases.append(case)
    return cases


@pytest.fixture(scope="session")
def sweep(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sweep]:
    cases = _selected_cases(request.session) or all_cases()
    sweep = Sweep(tmp_path_factory.mktemp("crash-sweep"), cases)
    request.config.stash[SWEEP_KEY] = sweep
    yield sweep
    sweep.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    sweep = config.stash.get(SWEEP_KEY, None)
    if sweep is None:
        return
    terminalreporter.section("crash sweep (RELIABILITY.md T01)")
    lines = sweep.summary()
    for line in lines:
        terminalreporter.write_line(line)
    (sweep.root / "figure.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    terminalreporter.write_line(f"  databases of failing cases and the driver logs: {sweep.root}")


__all__ = ["FULL", "INSTANCES", "SEEDS", "Sweep", "all_cases"]

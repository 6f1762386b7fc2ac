"""Timers and triggers: every due thing fires once, bursts included, with tickers racing."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import event, func, select

from engine.schedule import TickReport, fire_due_timers, fire_triggers
from engine.runtime import events as ev
from engine.store.instances import deliver, get_instance, start_instance
from engine.store.models import HistoryEntry, Instance, Timer, TriggerOccurrence
from tests.support.flowtest import later

DATA = Path(__file__).resolve().parents[1] / "data" / "flows"


def start_many(cf, flow_id: str, n: int) -> None:  # type: ignore[no-untyped-def]
    with cf.sessions.begin() as s:
        rt = cf.runtime()
        for _ in range(n):
            start_instance(s, rt, flow_id)


def count(cf, model, *where) -> int:  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return int(s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_a_burst_of_1000_timers_due_at_once_all_fire_exactly_once(cf, clock):
    cf.deploy([DATA / "burst.yaml"])
    start_many(cf, "burst", 1000)
    report = later(cf, clock, hours=1)
    assert report["timers_fired"] == 1000
    assert count(cf, Instance, Instance.status == "completed") == 1000
    assert count(cf, Timer, Timer.status == "pending") == 0
    assert count(cf, HistoryEntry, HistoryEntry.event == "TimerFired") == 1000


def test_two_tickers_racing_fire_each_timer_once(cf, clock):
    cf.deploy([DATA / "burst.yaml"])
    start_many(cf, "burst", 200)
    clock.set(clock.now() + timedelta(hours=1))
    reports = [TickReport(), TickReport()]
    threads = [threading.Thread(target=fire_due_timers, args=(cf.sessions, cf.runtime, r)) for r in reports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.timers_fired for r in reports) == 200
    assert count(cf, HistoryEntry, HistoryEntry.event == "TimerFired") == 200
    assert count(cf, Instance, Instance.status == "completed") == 200


def test_a_cron_trigger_after_downtime_fires_once_and_never_twice_with_two_tickers(cf, clock):
    cf.deploy([DATA / "hourly.yaml"])
    clock.set(clock.now() + timedelta(hours=5, minutes=30))  # five hourly fires fell in the downtime
    reports = [TickReport(), TickReport()]
    threads = [threading.Thread(target=fire_triggers, args=(cf.sessions, cf.runtime, r)) for r in reports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count(cf, Instance, Instance.flow_id == "hourly") == 1
    with cf.session() as s:
        statuses = sorted(s.scalars(select(TriggerOccurrence.status).where(TriggerOccurrence.flow_id == "hourly")))
    assert statuses == ["fired", "missed", "missed", "missed", "missed"]
    later(cf, clock, minutes=29)  # not yet the next hour
    assert count(cf, Instance, Instance.flow_id == "hourly") == 1
    later(cf, clock, minutes=2)
    assert count(cf, Instance, Instance.flow_id == "hourly") == 2


def test_all_approvals_then_parallel_join(cf, clock):
    cf.deploy([DATA / "approval.yaml"])
    iid = cf.start("approval")
    tasks = cf.tasks(instance_id=iid)
    assert sorted(t["assignee"] for t in tasks) == ["li", "wang"]
    by_user = {t["assignee"]: t["id"] for t in tasks}
    cf.complete(by_user["wang"], {"reached": True}, "wang")
    assert cf.describe(iid)["current_steps"] == ["approve"]
    cf.complete(by_user["li"], {"reached": False}, "li")
    assert cf.describe(iid)["current_steps"] == ["meet", "note_b"]
    later(cf, clock, minutes=5)
    info = cf.describe(iid)
    assert (info["status"], info["outcome"]) == ("completed", "approved")


def test_running_instances_keep_their_version_after_a_new_deploy(cf, clock):
    cf.deploy([DATA / "burst.yaml"])
    first = cf.start("burst")
    changed = (DATA / "burst.yaml").read_text("utf-8").replace("{hours: 1}", "{hours: 2}")
    deployed = cf.deploy_flow_text(changed, "burst.yaml", by="ops")
    assert deployed.version == 2 and deployed.changed
    second = cf.start("burst")
    later(cf, clock, hours=1)
    assert cf.describe(first)["status"] == "completed" and cf.describe(first)["version"] == 1
    assert cf.describe(second)["status"] == "running" and cf.describe(second)["version"] == 2
    assert cf.deploy_flow_text(changed, "burst.yaml").changed is False


def test_cancel_cancels_open_tasks_and_timers(cf):
    cf.deploy([DATA / "approval.yaml"])
    iid = cf.start("approval")
    cf.cancel(iid, "customer asked")
    info = cf.describe(iid)
    assert (info["status"], info["outcome"]) == ("cancelled", "customer asked")
    assert {t["status"] for t in info["tasks"]} == {"cancelled"}


REPLY_OR_TIMEOUT = """
id: reply_or_timeout
name: Reply or time out
enrollment:
  concurrent: unlimited
steps:
  - id: wait_reply
    type: wait
    event: customer_replied
    timeout: {days: 3}
    on_timeout: timed_out
    next: replied
  - id: replied
    type: end
    outcome: replied
  - id: timed_out
    type: end
    outcome: timed_out
"""


def test_an_event_before_its_timeout_cancels_the_timer_which_then_never_fires(cf, clock):
    cf.deploy_flow_text(REPLY_OR_TIMEOUT, "reply_or_timeout.yaml")
    answered, silent = cf.start("reply_or_timeout"), cf.start("reply_or_timeout")
    with cf.sessions.begin() as s:
        # A timer object loaded in the session that delivers the event takes the new status too.
        loaded = s.scalars(select(Timer).where(Timer.instance_id == answered)).one()
        assert loaded.status == "pending"
        deliver(s, cf.runtime(), get_instance(s, answered), ev.Message("customer_replied", {}))
        assert loaded.status == "cancelled"
    assert count(cf, Timer, Timer.instance_id == answered, Timer.status == "cancelled") == 1
    assert count(cf, Timer, Timer.instance_id == silent, Timer.status == "pending") == 1
    report = later(cf, clock, days=4)
    assert report["timers_fired"] == 1
    assert cf.describe(answered)["outcome"] == "replied" and cf.describe(silent)["outcome"] == "timed_out"
    assert count(cf, HistoryEntry, HistoryEntry.instance_id == answered, HistoryEntry.event == "TimerFired") == 0


def test_the_embedded_tick_fires_timers_due_together_a_hundred_per_commit(cf, clock):
    cf.deploy([DATA / "burst.yaml"])
    start_many(cf, "burst", 250)
    clock.set(clock.now() + timedelta(hours=1))
    commits = []
    listen = lambda _conn: commits.append(1)  # noqa: E731
    event.listen(cf.db, "commit", listen)
    try:
        report = TickReport()
        fire_due_timers(cf.sessions, cf.runtime, report)
    finally:
        event.remove(cf.db, "commit", listen)
    assert report.timers_fired == 250 and not report.errors
    assert len(commits) == 3  # 100 + 100 + 50, where one transaction per timer made 250
    assert count(cf, Timer, Timer.status == "pending") == 0
    assert count(cf, HistoryEntry, HistoryEntry.event == "TimerFired") == 250


def test_a_tick_with_no_trigger_due_runs_one_query_and_a_new_deploy_is_seen_at_the_next_tick(cf, clock, tmp_path):
    from engine.schedule import TriggerMemo

    cf.deploy([DATA / "hourly.yaml"])
    memo, other = TriggerMemo(), TriggerMemo()  # two schedulers
    fire_triggers(cf.sessions, cf.runtime, TickReport(), memo)  # learns every trigger's next occurrence
    statements: list[str] = []
    listen = lambda _conn, _cursor, statement, *_rest: statements.append(statement)  # noqa: E731
    event.listen(cf.db, "before_cursor_execute", listen)
    try:
        clock.set(clock.now() + timedelta(minutes=10))
        fire_triggers(cf.sessions, cf.runtime, TickReport(), memo)
    finally:
        event.remove(cf.db, "before_cursor_execute", listen)
    queries = [q for q in statements if not q.startswith("BEGIN")]  # SQLite's BEGIN IMMEDIATE is one too
    assert len(queries) == 1, queries  # the newest version ids: no flow source, no occurrence read
    for _ in range(3):  # the hour comes: fired once, whichever scheduler ticks first
        clock.set(clock.now() + timedelta(minutes=20))
        fire_triggers(cf.sessions, cf.runtime, TickReport(), other)
        fire_triggers(cf.sessions, cf.runtime, TickReport(), memo)
    assert count(cf, Instance, Instance.flow_id == "hourly") == 1
    # Another version, every five minutes: the next tick fires it, not the old version's next hour.
    changed = tmp_path / "hourly.yaml"
    changed.write_text((DATA / "hourly.yaml").read_text(encoding="utf-8").replace('"0 * * * *"', '"*/5 * * * *"'),
                       encoding="utf-8")
    cf.deploy([changed])
    clock.set(clock.now() + timedelta(minutes=6))
    report = TickReport()
    fire_triggers(cf.sessions, cf.runtime, report, memo)
    assert report.occurrences_fired == 1 and not report.errors
    assert count(cf, Instance, Instance.flow_id == "hourly") == 2


def test_the_calendar_is_kept_while_its_overrides_stay_and_another_process_s_change_is_seen_at_the_next_tick(cf, clock):
    from datetime import date

    from engine.core import Careflow

    saturday = date(2026, 11, 28)
    first = cf.load_calendar()
    assert not first.is_working_day(saturday)
    assert cf.load_calendar() is first  # unchanged: the years it worked out are kept
    other = Careflow(cf.url, clock=clock, migrate_schema=False)
    try:
        other.set_calendar_day(saturday, True)  # 调休: made a working day elsewhere
        cf.tick()
        assert cf.calendar is not first and cf.calendar.is_working_day(saturday)
        other.set_calendar_day(saturday, None)
        cf.tick()
        assert not cf.calendar.is_working_day(saturday)
    finally:
        other.close()


_DAILY = """\
id: daily
name: Daily
timezone: Asia/Shanghai
triggers:
  - type: date
    field: birthday
    at: "{at}"
steps:
  - id: done
    type: end
"""


def test_a_remembered_trigger_fires_each_occurrence_once_when_the_clock_goes_back_and_its_time_changes(cf, clock, tmp_path):
    """A scheduler that remembers when a trigger is next due (``TriggerMemo``) records what one
    that reads everything each tick records: the clock set back and forth (``--now``), a date
    trigger's ``at`` changed by a redeploy (a trigger of its own: it catches up from the flow's
    first deployment), two schedulers."""
    from engine.schedule import TriggerMemo

    source = tmp_path / "daily.yaml"

    def deploy(at: str) -> None:
        source.write_text(_DAILY.format(at=at), encoding="utf-8")
        cf.deploy([source])

    def tick(memo: TriggerMemo, hours: float) -> None:
        clock.set(start + timedelta(hours=hours))
        report = TickReport()
        fire_triggers(cf.sessions, cf.runtime, report, memo)
        assert not report.errors

    def recorded() -> list[tuple[str, str, str]]:
        with cf.session() as s:
            rows = s.execute(select(TriggerOccurrence.trigger_key, TriggerOccurrence.scheduled_for, TriggerOccurrence.status)
                             .where(TriggerOccurrence.flow_id == "daily").order_by(TriggerOccurrence.id)).all()
        return [(key.split("|")[6], at.isoformat()[:16], status) for key, at, status in rows]

    start = clock.now()  # Tuesday 09:00 in Shanghai, 01:00 UTC
    deploy("09:00")
    memo, other = TriggerMemo(), TriggerMemo()
    tick(memo, 0.5)  # today's 09:00 is the deployment's own time: not due; tomorrow's is remembered
    deploy("10:00")
    tick(memo, 1.5)  # the new version's 10:00 today, which the old version's memo would have skipped
    assert recorded() == [("10:00", "2026-11-24T02:00", "fired")]
    for hours in (0.75, 1.75, 24.9, 24.5, 25.2, 24.8, 25.3):  # back and forth across tomorrow's 10:00
        tick(memo, hours)
        tick(other, hours)
    assert recorded() == [("10:00", "2026-11-24T02:00", "fired"), ("10:00", "2026-11-25T02:00", "fired")]
    deploy("09:30")
    for hours in (47.9, 48.6, 48.4, 48.7):
        tick(memo, hours)
    tick(other, 48.7)
    assert recorded()[2:] == [("09:30", "2026-11-24T01:30", "missed"), ("09:30", "2026-11-25T01:30", "fired"),
                              ("09:30", "2026-11-26T01:30", "fired")]

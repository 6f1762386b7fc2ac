"""Segments: saved filters, memberships kept by the recompute, flows started on entry and leave,
the daily recompute driven by the tick; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from engine.cli import main
from engine.errors import Conflict, FlowInvalid, NotFound, SubmissionInvalid
from engine.store.models import Instance, TriggerOccurrence
from tests.conftest import SHANGHAI, START, make_careflow
from tests.support.flowtest import at

NOW = START.astimezone(timezone.utc)

WATCH = """\
id: big_spender_watch
name: {zh: 大客户关注, en: Big spender watch}
triggers:
  - type: segment
    segment: big_spenders
    event: enter
enrollment:
  concurrent: one_per_customer
  reenroll: always
steps:
  - id: wait
    type: wait
    duration: {days: 30}
    next: done
  - id: done
    type: end
    outcome: done
"""

FAREWELL = """\
id: big_spender_farewell
name: {zh: 大客户流失, en: Big spender lost}
triggers:
  - type: segment
    segment: big_spenders
    event: leave
steps:
  - id: done
    type: end
    outcome: done
"""


def instances(cf, flow_id):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return list(s.execute(select(Instance.customer_id, Instance.status).where(Instance.flow_id == flow_id).order_by(Instance.id)))


def test_entering_and_leaving_start_their_flows_once(cf):
    cf.create_segment({"name": "big_spenders", "title": {"zh": "大客户", "en": "Big spenders"},
                       "filter": {"grade": ["A"], "region": ["上海"]}})
    cf.deploy_flow_text(WATCH, "big_spender_watch.yaml")
    cf.deploy_flow_text(FAREWELL, "big_spender_farewell.yaml")
    rich = cf.create_customer({"name": "甲", "region": "上海", "expected_value": 200000}, fire_triggers=False)
    elsewhere = cf.create_customer({"name": "乙", "region": "北京", "expected_value": 200000}, fire_triggers=False)

    cf.recompute_segments()
    assert instances(cf, "big_spender_watch") == [(rich, "running")]
    cf.recompute_segments()  # still a member: no second entry, no second start
    assert instances(cf, "big_spender_watch") == [(rich, "running")]
    assert instances(cf, "big_spender_farewell") == []

    cf.update_customer(rich, {"expected_value": 1000})
    cf.recompute_segments()
    assert instances(cf, "big_spender_farewell") == [(rich, "completed")]
    cf.recompute_segments()
    assert len(instances(cf, "big_spender_farewell")) == 1

    # Entering again is a new entry, but the flow's policy (one running instance per customer) holds.
    cf.update_customer(rich, {"expected_value": 300000})
    result = cf.recompute_segments()
    assert result["segments"]["entered"]["big_spenders"] == 1
    assert instances(cf, "big_spender_watch") == [(rich, "running")]
    assert elsewhere not in {c for c, _ in instances(cf, "big_spender_watch")}


def test_unknown_segment_is_refused_at_deploy_with_its_position(cf):
    with pytest.raises(FlowInvalid) as err:
        cf.deploy_flow_text(WATCH.replace("segment: big_spenders", "segment: churn_rsik"), "big_spender_watch.yaml")
    [problem] = err.value.problems
    assert (problem.line, problem.column) == (5, 14)
    assert "unknown segment 'churn_rsik'" in problem.message and "churn_risk" in problem.message


def test_segments_are_rows_with_checked_filters(cf):
    with pytest.raises(SubmissionInvalid) as err:
        cf.create_segment({"name": "bad", "filter": {"grade": ["Z"], "colour": "red"}})
    fields = sorted(e.field for e in err.value.errors)
    assert fields == ["colour", "grade"]
    with pytest.raises(SubmissionInvalid):
        cf.create_segment({"name": "Bad Name"})
    cf.create_segment({"name": "vip_tags", "filter": {"tags_any": ["vip"], "last_purchase_after": {"days_ago": 30}}})
    with pytest.raises(Conflict):
        cf.create_segment({"name": "vip_tags"})
    with pytest.raises(Conflict):
        cf.delete_segment("churn_risk")  # built-in
    cf.create_segment({"name": "used"})
    cf.deploy_flow_text(WATCH.replace("big_spenders", "used"), "big_spender_watch.yaml")
    with pytest.raises(Conflict) as used:
        cf.delete_segment("used")
    assert "big_spender_watch" in str(used.value)
    cf.delete_segment("vip_tags")
    with pytest.raises(NotFound):
        cf.segment("vip_tags")


def test_filters_select_the_right_customers(cf, clock):
    def add(name, **data):  # type: ignore[no-untyped-def]
        return cf.create_customer({"name": name, **data}, fire_triggers=False)

    recent = add("近期", purchase_count=2, purchase_total=100.0, tags=["vip", "north"],
                 last_purchase_at=(NOW - timedelta(days=5)).isoformat())
    old = add("久远", purchase_count=2, purchase_total=100.0, tags=["vip"], last_purchase_at=(NOW - timedelta(days=100)).isoformat())
    nov_birthday = add("十一月生日", grade="A", birthday="1990-11-30")
    lunar = add("农历生日", grade="A", birthday="1985-10-10", birthday_calendar="lunar")  # 农历十月初十 = 2026-11-19
    dec_birthday = add("十二月生日", grade="A", birthday="1990-12-01")
    lost = add("已流失", grade="A", birthday="1990-11-02", status="lost")
    cf.create_segment({"name": "vip_recent", "filter": {"tags_all": ["vip", "north"], "last_purchase_after": {"days_ago": 30}}})
    cf.create_segment({"name": "old_buyers", "filter": {"last_purchase_before": "2026-09-01", "tags_any": ["vip", "x"]}})
    cf.recompute_segments()
    members = lambda name: {m["id"] for m in cf.segment_members(name)[1]}  # noqa: E731
    assert members("vip_recent") == {recent}
    assert members("old_buyers") == {old}
    assert members("vip_birthday_this_month") == {nov_birthday, lunar}  # not the lost one, nor December
    assert lost in members("grade_a")
    # In December the birthday segment turns over: leaving and entering at the next recompute.
    clock.set(datetime(2026, 12, 2, 9, 0, tzinfo=SHANGHAI))
    result = cf.recompute_segments()
    assert members("vip_birthday_this_month") == {dec_birthday}
    assert (result["segments"]["entered"]["vip_birthday_this_month"], result["segments"]["left"]["vip_birthday_this_month"]) == (1, 2)


def test_daily_recompute_runs_once_a_day_even_with_two_tickers_and_after_downtime(cf, clock, provider, database_url):
    cid = cf.create_customer({"name": "甲", "expected_value": 500000}, fire_triggers=False)

    def runs():  # type: ignore[no-untyped-def]
        with cf.session() as s:
            return s.scalar(select(func.count()).select_from(TriggerOccurrence).where(
                TriggerOccurrence.flow_id == "_system", TriggerOccurrence.status == "fired"))

    at(cf, clock, START)  # the first tick only marks where the schedule starts
    assert runs() == 0 and cf.customer_grading(cid)["grade"] is None
    at(cf, clock, datetime(2026, 11, 25, 2, 59, tzinfo=SHANGHAI))
    assert runs() == 0
    at(cf, clock, datetime(2026, 11, 25, 3, 0, tzinfo=SHANGHAI))
    assert runs() == 1 and cf.customer_grading(cid)["grade"] == "A"
    other = make_careflow(database_url, clock, provider)  # a second ticker on the same database
    try:
        other.tick()
        cf.tick()
        assert runs() == 1
        # Three days down: one run for the newest due time, not three.
        clock.set(datetime(2026, 11, 28, 12, 0, tzinfo=SHANGHAI))
        other.tick()
        cf.tick()
        assert runs() == 2
    finally:
        other.close()
    cf.set_grading_settings({"recompute_at": "13:30"})
    at(cf, clock, datetime(2026, 11, 28, 13, 30, tzinfo=SHANGHAI))
    assert runs() == 3


def test_cli_segments(cf):
    runner = CliRunner()
    base = ["--database", cf.url]
    out = runner.invoke(main, [*base, "segments", "create", "--data",
                               '{"name": "north", "title": {"zh": "北方", "en": "North"}, "filter": {"region": ["北京", "天津"]}}'])
    assert out.exit_code == 0, out.output
    cid = cf.create_customer({"name": "北京客户", "region": "北京"}, fire_triggers=False)
    out = runner.invoke(main, [*base, "segments", "recompute"])
    assert out.exit_code == 0 and "north" in out.output
    out = runner.invoke(main, [*base, "--json", "segments", "members", "north"])
    assert '"total": 1' in out.output and f'"id": {cid}' in out.output
    out = runner.invoke(main, [*base, "segments", "list"])
    assert "north" in out.output and "churn_risk" in out.output
    out = runner.invoke(main, [*base, "segments", "show", "churn_risk"])
    assert "winback:enter" in out.output
    out = runner.invoke(main, [*base, "segments", "create", "--data", '{"name": "x", "filter": {"grade": "A"}}'])
    assert out.exit_code == 1 and "grade" in out.output

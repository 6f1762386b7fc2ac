"""The birthday, follow-up and win-back flows pick exactly the right customers from a known set;
survey answers are stored, detractors open complaints, NPS per month and per flow; both databases."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from engine.auth.links import LinkGone
from engine.calendar import solar_to_lunar
from engine.store.models import Instance, SurveyAnswer
from tests.conftest import SHANGHAI, START
from tests.support.flowtest import at, customer

NOW = START.astimezone(timezone.utc)
SECRET = "test-secret"


def started(cf, flow_id):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return sorted(s.scalars(select(Instance.customer_id).where(Instance.flow_id == flow_id)))


def add(cf, name, **data):  # type: ignore[no-untyped-def]
    base = {"name": name, "owner": "wang", "preferred_channel": "email", "email": f"{abs(hash(name)) % 10**8}@example.com",
            "consent": {"email": True}}
    return cf.create_customer({**base, **data}, fire_triggers=False)


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


def test_winback_picks_the_churn_risk_segment_and_long_silent_customers(cf, clock):
    # 5 purchases over 100 days (every 25 days), last 100 days ago: 4× the usual interval.
    slipping = add(cf, "渐远", purchase_count=5, purchase_total=5000.0, first_purchase_at=ago(200), last_purchase_at=ago(100))
    # One purchase 100 days ago: no purchase for 90 days, but not in the segment (100 ÷ 90 < 2).
    silent = add(cf, "沉默", purchase_count=1, purchase_total=300.0, last_purchase_at=ago(100))
    # Buys every 6.7 days, silent for 40: only 40 days, but six times the usual interval.
    fast = add(cf, "高频", purchase_count=4, purchase_total=900.0, first_purchase_at=ago(60), last_purchase_at=ago(40))
    loyal = add(cf, "忠实", purchase_count=10, purchase_total=20000.0, first_purchase_at=ago(100), last_purchase_at=ago(5))
    lost = add(cf, "已流失", status="lost", purchase_count=3, purchase_total=100.0, first_purchase_at=ago(400), last_purchase_at=ago(200))
    prospect = add(cf, "潜客")

    result = cf.recompute_segments()
    assert {m["id"] for m in cf.segment_members("churn_risk")[1]} == {slipping, fast}
    assert started(cf, "winback") == sorted([slipping, fast])  # entering the segment starts win-back at once
    assert result["segments"]["instances_started"] == 2
    at(cf, clock, START.replace(hour=10))  # the daily scan adds the long-silent customer, nobody twice
    assert started(cf, "winback") == sorted([slipping, fast, silent])
    assert loyal not in started(cf, "winback") and lost not in started(cf, "winback") and prospect not in started(cf, "winback")
    assert customer(cf, fast)["status"] == "at_risk"
    cf.recompute_segments()  # still in the segment: no second start
    assert started(cf, "winback") == sorted([slipping, fast, silent])


def test_follow_up_uses_the_recomputed_grade(cf, clock):
    # Every customer starts as C by hand; their purchases make them A, B and C.
    a = add(cf, "甲", grade="C", purchase_count=20, purchase_total=150000.0, last_purchase_at=ago(3))
    b = add(cf, "乙", grade="C", purchase_count=5, purchase_total=30000.0, last_purchase_at=ago(3))
    c = add(cf, "丙", grade="A", purchase_count=1, purchase_total=500.0, last_purchase_at=ago(3))
    lost = add(cf, "丁", grade="A", status="lost", purchase_count=9, purchase_total=500000.0, last_purchase_at=ago(3))
    cf.tick()
    cf.recompute_segments()
    assert [customer(cf, x)["grade"] for x in (a, b, c, lost)] == ["A", "B", "C", "A"]
    at(cf, clock, datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI))  # monthly: grade A only
    assert started(cf, "follow_up") == [a]
    at(cf, clock, datetime(2027, 1, 1, 9, 0, tzinfo=SHANGHAI))  # January: quarterly B and half-yearly C too
    assert started(cf, "follow_up") == sorted([a, b, c])  # A's December task is still open: one at a time


def test_birthday_picks_solar_and_lunar_birthdays_of_the_day(cf, clock, provider):
    day = datetime(2026, 11, 25, 9, 0, tzinfo=SHANGHAI)
    _, lunar_month, lunar_day, _ = solar_to_lunar(day.date())
    solar_a = add(cf, "阳历A", grade="A", birthday="1990-11-25")
    solar_c = add(cf, "阳历C", grade="C", birthday="1988-11-25")
    lunar = add(cf, "农历", grade="B", birthday=f"1975-{lunar_month:02d}-{lunar_day:02d}", birthday_calendar="lunar")
    add(cf, "明天", grade="A", birthday="1990-11-26")
    add(cf, "阳历同日但农历", grade="A", birthday="1990-11-25", birthday_calendar="lunar")  # lunar 11-25 is not today
    add(cf, "已流失", grade="A", birthday="1990-11-25", status="lost")
    at(cf, clock, day)
    assert started(cf, "birthday") == sorted([solar_a, solar_c, lunar])
    coupons = [m for m in provider.sent if "优惠券" in (m.get("text") or "")]
    assert len(coupons) == 1  # the grade-A customer only


def answer(cf, instance_id, form, data):  # type: ignore[no-untyped-def]
    link = cf.customer_link(instance_id, form, form, timedelta(days=7), secret=SECRET)
    return cf.submit_customer_link(link["token"], data, secret=SECRET), link


def test_detractor_opens_a_complaint_once_and_scores_are_stored(cf):
    cid = add(cf, "不满意")
    survey = cf.start("nps_survey", customer_id=cid)
    _, link = answer(cf, survey, "nps_survey", {"score": 3, "comment": "送货太慢"})
    assert cf.describe(survey)["status"] == "completed"
    with cf.session() as s:
        rows = list(s.execute(select(SurveyAnswer.kind, SurveyAnswer.score, SurveyAnswer.flow_id, SurveyAnswer.instance_id)))
        complaints = list(s.scalars(select(Instance).where(Instance.flow_id == "complaint", Instance.customer_id == cid)))
    assert rows == [("nps", 3, "nps_survey", survey)]
    assert len(complaints) == 1
    intake = complaints[0].state["vars"]["complaint_intake"]
    assert intake["description"] == "送货太慢" and "3" in intake["subject"]
    assert cf.customer_grading(cid)["last_nps"] == 3
    assert cf.recompute_segments()["segments"]["entered"]["detractors"] == 1
    assert {m["id"] for m in cf.segment_members("detractors")[1]} == {cid}
    with pytest.raises(LinkGone):  # the link acts once: no second answer, no second complaint
        cf.submit_customer_link(link["token"], {"score": 2}, secret=SECRET)

    fan = add(cf, "推荐者")
    survey = cf.start("nps_survey", customer_id=fan)
    answer(cf, survey, "nps_survey", {"score": 10})
    with cf.session() as s:
        assert list(s.scalars(select(Instance.id).where(Instance.flow_id == "complaint", Instance.customer_id == fan))) == []


def test_satisfaction_survey_of_onboarding_stores_both_scores(cf, clock):
    result = cf.submit_form("new_customer", {"name": "新客", "phone": "13600136000", "email": "new@example.com",
                                             "region": "上海", "expected_value": 1000, "language": "zh"}, user="ops")
    cid, iid = result["customer_id"], result["instances"][0]
    task = [t for t in cf.tasks(instance_id=iid) if t["status"] == "open"][0]
    cf.complete(task["id"], {"reached": True, "call_notes": "ok", "needs": [], "preferred_channel": "email"}, task["assignee"])
    at(cf, clock, START + timedelta(days=8))
    answer(cf, iid, "satisfaction_survey", {"score": 2, "nps": 5, "comment": "一般"})
    g = cf.customer_grading(cid)
    assert (g["last_satisfaction"], g["last_nps"]) == (2, 5)
    assert customer(cf, cid)["satisfaction"] == 2  # the flow's own record step ran too
    with cf.session() as s:
        assert sorted(s.scalars(select(SurveyAnswer.kind).where(SurveyAnswer.instance_id == iid))) == ["nps", "satisfaction"]
        assert s.scalars(select(Instance.id).where(Instance.flow_id == "complaint", Instance.customer_id == cid)).first()


def test_nps_per_month_and_per_flow_on_known_answers(cf):
    def put(flow, score, when):  # type: ignore[no-untyped-def]
        with cf.sessions.begin() as s:
            s.add(SurveyAnswer(customer_id=None, instance_id=None, flow_id=flow, form_id="nps_survey", kind="nps",
                               score=score, answered_at=when))

    oct_ = datetime(2026, 10, 15, 12, 0, tzinfo=SHANGHAI)
    for score in (10, 9, 8, 3):
        put("nps_survey", score, oct_)
    # 17:00 UTC on 31 October is 01:00 on 1 November in Shanghai: a November answer.
    put("onboarding", 6, datetime(2026, 10, 31, 17, 0, tzinfo=timezone.utc))
    put("onboarding", 7, datetime(2026, 11, 3, 12, 0, tzinfo=SHANGHAI))
    put("nps_survey", 10, datetime(2026, 11, 20, 12, 0, tzinfo=SHANGHAI))
    with cf.sessions.begin() as s:
        s.add(SurveyAnswer(customer_id=None, instance_id=None, flow_id="onboarding", form_id="satisfaction_survey",
                           kind="satisfaction", score=1, answered_at=oct_))

    by_month = cf.nps_report("month")
    assert [(g["key"], g["answers"], g["nps"]) for g in by_month["groups"]] == [("2026-10", 4, 25.0), ("2026-11", 3, 0.0)]
    assert (by_month["total"]["promoters"], by_month["total"]["detractors"], by_month["total"]["nps"]) == (3, 2, 14.3)
    by_flow = cf.nps_report("flow")
    assert [(g["key"], g["answers"], g["nps"]) for g in by_flow["groups"]] == [("nps_survey", 5, 40.0), ("onboarding", 2, -50.0)]
    november = cf.nps_report("month", datetime(2026, 11, 1).date(), datetime(2026, 11, 30).date())
    assert [(g["key"], g["answers"]) for g in november["groups"]] == [("2026-11", 3)]

"""Every branch of the five built-in processes, end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from engine.calendar import solar_to_lunar
from engine.errors import Conflict, PermissionDenied, SubmissionInvalid
from engine.store.models import Instance, Notification, OutboxMessage, TriggerOccurrence
from tests.conftest import SHANGHAI, START
from tests.support.flowtest import at, customer, later, only_task, status, timeline_kinds

WELCOME = {"reached": True, "call_notes": "客户想了解培训安排", "needs": ["training"], "preferred_channel": "sms"}


def new_customer(cf, **overrides):  # type: ignore[no-untyped-def]
    data = {"name": "张伟", "phone": "+8613800138000", "email": "zhangwei@example.com", "region": "上海",
            "grade": "A", "owner": "wang", "preferred_channel": "email", "consent": {"email": True, "sms": True}}
    data.update(overrides)
    return cf.create_customer(data, fire_triggers=False)


# ----- 1. onboarding ----------------------------------------------------------------------------

def onboard(cf, **data):  # type: ignore[no-untyped-def]
    form = {"name": "张伟", "phone": "138 0013 8000", "email": "ZhangWei@Example.com", "region": "上海",
            "expected_value": 150000, "preferred_channel": "email", "language": "zh", "consent_marketing": True}
    form.update(data)
    result = cf.submit_form("new_customer", form, user="ops")
    assert len(result["instances"]) == 1
    return result["customer_id"], result["instances"][0]


def test_onboarding_standardises_grades_assigns_welcomes_and_surveys(cf, clock, provider):
    cid, iid = onboard(cf)
    c = customer(cf, cid)
    assert (c["phone"], c["email"], c["grade"], c["owner"]) == ("+8613800138000", "zhangwei@example.com", "A", "wang")
    cf.tick()
    assert sorted((s["channel"], s["to"]) for s in provider.sent) == [
        ("email", "zhangwei@example.com"), ("sms", "+8613800138000")]
    task = only_task(cf, iid)
    assert (task["step"], task["assignee"]) == ("welcome_call", "wang")
    # Two business days from Tuesday 09:00 is Thursday 09:00 Shanghai time.
    assert datetime.fromisoformat(task["due_at"]) == datetime(2026, 11, 26, 9, 0, tzinfo=SHANGHAI)
    cf.complete(task["id"], WELCOME, "wang")
    assert customer(cf, cid)["preferred_channel"] == "sms"
    later(cf, clock, days=6, hours=23)
    assert len(provider.sent) == 2
    later(cf, clock, hours=1)
    assert provider.sent[-1]["channel"] == "sms" and "满意度" in provider.sent[-1]["text"]
    cf.message(iid, "satisfaction_survey", {"score": 5})
    assert status(cf, iid) == ("completed", "onboarded")
    assert customer(cf, cid)["satisfaction"] == 5
    assert "task_completed" in timeline_kinds(cf, cid) and "message_sent" in timeline_kinds(cf, cid)


def test_onboarding_without_survey_answer_ends_after_14_days(cf, clock):
    _, iid = onboard(cf)
    cf.complete(only_task(cf, iid)["id"], WELCOME, "wang")
    later(cf, clock, days=7)
    later(cf, clock, days=13, hours=23)
    assert status(cf, iid) == ("running", None)
    later(cf, clock, hours=1)
    assert status(cf, iid) == ("completed", "onboarded_no_survey")


def test_onboarding_without_email_sends_sms_only(cf, provider):
    cid, iid = onboard(cf, email=None)
    cf.tick()
    assert [s["channel"] for s in provider.sent] == ["sms"]
    assert customer(cf, cid)["grade"] == "A"


def test_onboarding_grades_and_assigns_by_region(cf):
    cid, _ = onboard(cf, phone="13900139000", email="b@example.com", expected_value=30000, region="北京")
    assert (customer(cf, cid)["grade"], customer(cf, cid)["owner"]) == ("B", "li")
    cid, _ = onboard(cf, phone="13700137000", email="c@example.com", expected_value=1000, region="成都")
    assert customer(cf, cid)["grade"] == "C"


def test_onboarding_welcome_call_reminds_then_escalates_to_team_lead(cf, clock):
    _, iid = onboard(cf)
    task = only_task(cf, iid)
    due = datetime.fromisoformat(task["due_at"])
    at(cf, clock, due - timedelta(hours=4))
    assert only_task(cf, iid)["reminders_sent"] == 1
    at(cf, clock, datetime(2026, 11, 27, 9, 0, tzinfo=SHANGHAI))  # due + 1 business day
    task = only_task(cf, iid)
    assert (task["role"], task["assignee"], task["escalation_level"]) == ("team_lead", None, 1)
    with cf.session() as s:
        kinds = sorted(s.scalars(select(Notification.kind)))
    assert kinds == ["escalated", "reminder_before"]
    cf.complete(task["id"], WELCOME, "zhao")  # the team lead can take it now


def test_onboarding_rejects_bad_form_with_field_errors_and_starts_nothing(cf):
    with pytest.raises(SubmissionInvalid) as exc:
        cf.submit_form("new_customer", {"name": "", "phone": "12345", "email": "not-an-email"}, locale="en")
    fields = {e.field for e in exc.value.errors}
    assert {"phone", "email"} <= fields
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0


def test_onboarding_enrolls_a_customer_only_once(cf):
    cid, _ = onboard(cf)
    with pytest.raises(Conflict):
        cf.start("onboarding", customer_id=cid)


def test_creating_a_customer_starts_onboarding(cf):
    cid = cf.create_customer({"name": "李雷", "phone": "13600136000", "region": "北京", "expected_value": 50000})
    with cf.session() as s:
        flows = list(s.scalars(select(Instance.flow_id).where(Instance.customer_id == cid)))
    assert flows == ["onboarding"]
    assert customer(cf, cid)["grade"] == "B"


# ----- 2. periodic follow-up ---------------------------------------------------------------------

FOLLOW_OK = {"channel": "phone", "outcome": "satisfied", "satisfaction": 4, "next_action": "下季度介绍新品"}


def first_of_december(cf, clock):  # type: ignore[no-untyped-def]
    return at(cf, clock, datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI))


def test_follow_up_picks_grade_a_monthly_and_records_outcome(cf, clock):
    a = new_customer(cf, grade="A", owner="li")
    new_customer(cf, name="王芳", phone="+8613900139000", email="b@example.com", grade="B")
    report = first_of_december(cf, clock)
    assert report["occurrences_fired"] >= 1
    with cf.session() as s:
        started = list(s.scalars(select(Instance.customer_id).where(Instance.flow_id == "follow_up")))
    assert started == [a]
    task = cf.tasks(user="li")[0]
    assert task["step"] == "follow_up"
    cf.complete(task["id"], FOLLOW_OK, "li")
    assert status(cf, task["instance_id"]) == ("completed", "followed_up")
    assert customer(cf, a)["last_follow_up_at"].startswith("2026-12-01")
    first_of_december(cf, clock)  # a second tick at the same time fires nothing new
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance).where(Instance.flow_id == "follow_up")) == 1


def test_follow_up_with_a_problem_opens_a_complaint(cf, clock):
    cid = new_customer(cf)
    first_of_december(cf, clock)
    task = cf.tasks(user="wang")[0]
    cf.complete(task["id"], {"channel": "visit", "outcome": "has_problem", "satisfaction": 2,
                             "problem_description": "发票开错了"}, "wang")
    assert status(cf, task["instance_id"]) == ("completed", "complaint_opened")
    with cf.session() as s:
        complaint = s.scalars(select(Instance).where(Instance.flow_id == "complaint", Instance.customer_id == cid)).one()
        assert complaint.state["vars"]["complaint_intake"]["description"] == "发票开错了"
        assert complaint.status == "running"


def test_follow_up_overdue_reminds_then_escalates(cf, clock):
    new_customer(cf)
    first_of_december(cf, clock)
    task = cf.tasks(user="wang")[0]
    due = datetime.fromisoformat(task["due_at"])
    at(cf, clock, due + timedelta(hours=2))
    assert only_task(cf, task["instance_id"])["reminders_sent"] == 1
    at(cf, clock, due + timedelta(days=3))  # two business days after a Tuesday due date
    assert only_task(cf, task["instance_id"])["role"] == "team_lead"


def test_follow_up_missing_owner_becomes_an_incident_not_a_loss(cf, clock):
    cid = new_customer(cf, owner=None)
    first_of_december(cf, clock)
    with cf.session() as s:
        instance = s.scalars(select(Instance).where(Instance.customer_id == cid)).one()
    info = cf.describe(instance.id)
    assert info["status"] == "running" and info["incidents"][0]["message"].startswith("assignee expression")
    cf.update_customer(cid, {"owner": "wang"})
    cf.resolve_incident(info["incidents"][0]["id"], "retry", "admin")
    assert only_task(cf, instance.id)["assignee"] == "wang"


# ----- 3. complaint handling ----------------------------------------------------------------------

COMPLAINT = {"subject": "快递破损", "description": "收到的商品外包装破损", "channel": "phone", "contact_phone": "13800138000"}


def file_complaint(cf, **data):  # type: ignore[no-untyped-def]
    result = cf.submit_form("complaint_intake", {**COMPLAINT, **data}, user="chen")
    return result["instances"][0]


def triage(cf, iid, severity="low"):  # type: ignore[no-untyped-def]
    task = only_task(cf, iid)
    assert task["step"] == "triage" and task["role"] == "service_agent"
    cf.claim(task["id"], "chen")
    cf.complete(task["id"], {"severity": severity, "category": "delivery"}, "chen")


def resolve(cf, iid):  # type: ignore[no-untyped-def]
    task = only_task(cf, iid)
    assert task["step"] == "resolve"
    cf.complete(task["id"], {"resolution": "补发新品", "compensation": "replacement"}, "chen")


def test_complaint_satisfied_path_acknowledges_with_ticket_and_closes(cf, provider):
    cid = new_customer(cf)
    iid = file_complaint(cf)
    cf.tick()
    ticket = cf.describe(iid)["variables"]["ticket_no"]
    assert ticket == f"CF20261124-{iid}" and ticket in provider.sent[0]["text"]
    triage(cf, iid)
    resolve(cf, iid)
    cf.message(iid, "complaint_confirmation", {"satisfied": True})
    assert status(cf, iid) == ("completed", "resolved")
    assert "last_complaint_closed_at" in customer(cf, cid)
    assert timeline_kinds(cf, cid).count("task_completed") == 2


def test_complaint_not_satisfied_goes_back_to_resolution(cf):
    new_customer(cf)
    iid = file_complaint(cf)
    triage(cf, iid)
    resolve(cf, iid)
    cf.message(iid, "complaint_confirmation", {"satisfied": False})
    resolve(cf, iid)
    cf.message(iid, "complaint_confirmation", {"satisfied": True})
    info = cf.describe(iid)
    assert (info["status"], info["outcome"], info["variables"]["rounds"]) == ("completed", "resolved", 2)


def test_complaint_high_severity_goes_to_lead_with_4_hour_sla(cf, clock):
    new_customer(cf)
    iid = file_complaint(cf)
    triage(cf, iid, "high")
    task = only_task(cf, iid)
    assert (task["step"], task["role"]) == ("lead_review", "service_lead")
    assert datetime.fromisoformat(task["due_at"]) == clock.now() + timedelta(hours=4)
    with pytest.raises(PermissionDenied):
        cf.complete(task["id"], {"decision": "handle", "action_plan": "x"}, "chen")
    cf.complete(task["id"], {"decision": "handle", "action_plan": "主管亲自跟进"}, "liu")
    assert only_task(cf, iid)["step"] == "resolve"


def test_complaint_lead_sla_breach_escalates(cf, clock):
    new_customer(cf)
    iid = file_complaint(cf)
    triage(cf, iid, "high")
    later(cf, clock, hours=5)
    task = only_task(cf, iid)
    assert (task["role"], task["escalation_level"]) == ("admin", 1)


def test_complaint_resolution_can_be_sent_back_to_triage(cf):
    new_customer(cf)
    iid = file_complaint(cf)
    triage(cf, iid)
    task = only_task(cf, iid)
    with pytest.raises(Conflict):
        cf.send_back(task["id"], "chen", "resolve", "x")
    cf.send_back(task["id"], "chen", "triage", "类别选错了，请重新分诊")
    assert only_task(cf, iid)["step"] == "triage"
    assert cf.describe(iid)["variables"]["_sent_back"]["comment"] == "类别选错了，请重新分诊"


def test_complaint_unconfirmed_closes_after_7_days(cf, clock):
    new_customer(cf)
    iid = file_complaint(cf)
    triage(cf, iid)
    resolve(cf, iid)
    later(cf, clock, days=7)
    assert status(cf, iid) == ("completed", "closed_unconfirmed")


def test_complaint_withdrawn_ends_early_and_cancels_tasks(cf):
    new_customer(cf)
    iid = file_complaint(cf)
    cf.message(iid, "complaint_withdrawn", {"reason": "自行解决"})
    assert status(cf, iid) == ("completed", "withdrawn")
    assert [t["status"] for t in cf.tasks(instance_id=iid)] == []


def test_complaint_from_unknown_contact_runs_without_customer(cf, provider):
    iid = file_complaint(cf, contact_phone="13311112222")
    cf.tick()
    assert provider.sent == []
    triage(cf, iid)
    resolve(cf, iid)
    assert status(cf, iid) == ("completed", "resolved")


def test_double_submit_completes_once(cf):
    new_customer(cf)
    iid = file_complaint(cf)
    task = only_task(cf, iid)
    cf.complete(task["id"], {"severity": "low", "category": "delivery"}, "chen")
    with pytest.raises(Conflict, match="already completed"):
        cf.complete(task["id"], {"severity": "high", "category": "delivery"}, "chen")
    assert cf.describe(iid)["variables"]["triage"]["severity"] == "low"


# ----- 4. birthday care ---------------------------------------------------------------------------

def test_birthday_greets_solar_and_lunar_birthdays_and_calls_grade_a(cf, clock, provider):
    morning = START + timedelta(days=1)  # the flows were deployed at START, so tomorrow 09:00 is the first run
    lunar = solar_to_lunar(morning.date())
    a = new_customer(cf, birthday=morning.date().replace(year=1980).isoformat(), grade="A")
    c = new_customer(cf, name="赵敏", phone="+8613900139001", email="c@example.com", grade="C",
                     birthday=f"1990-{lunar[1]:02d}-{lunar[2]:02d}", birthday_calendar="lunar")
    new_customer(cf, name="钱七", phone="+8613900139002", email="x@example.com", birthday="1990-01-15")
    at(cf, clock, morning - timedelta(minutes=1))
    assert provider.sent == []
    report = at(cf, clock, morning)
    assert report["instances_started"] == 2
    greeted = sorted(s["to"] for s in provider.sent if "生日快乐" in s["text"])
    assert greeted == ["c@example.com", "zhangwei@example.com"]
    assert any("优惠券" in s["text"] for s in provider.sent)
    task = cf.tasks(user="wang")[0]
    assert task["step"] == "birthday_call"
    cf.complete(task["id"], {"reached": True, "notes": "客户很开心"}, "wang")
    with cf.session() as s:
        outcomes = dict(s.execute(select(Instance.customer_id, Instance.outcome).where(Instance.flow_id == "birthday")).all())
    assert outcomes == {a: "greeted_and_called", c: "greeted"}
    at(cf, clock, morning + timedelta(hours=1))
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance).where(Instance.flow_id == "birthday")) == 2


def test_birthday_after_downtime_fires_once_and_records_missed_days(cf, clock):
    new_customer(cf, birthday="1980-11-27", grade="C")
    new_customer(cf, name="钱七", phone="+8613900139002", email="x@example.com", birthday="1980-11-25", grade="C")
    at(cf, clock, datetime(2026, 11, 27, 10, 0, tzinfo=SHANGHAI))  # down from 24th 09:00 to 27th 10:00
    with cf.session() as s:
        rows = s.execute(select(TriggerOccurrence.status, func.count()).where(TriggerOccurrence.flow_id == "birthday")
                         .group_by(TriggerOccurrence.status)).all()
        births = list(s.scalars(select(Instance.customer_id).where(Instance.flow_id == "birthday")))
    assert dict(rows) == {"fired": 1, "missed": 2}
    assert len(births) == 1  # only today's birthday; the 25th was missed, not sent late


def test_birthday_feb_29_is_celebrated_on_feb_28(cf, clock, provider):
    new_customer(cf, birthday="1988-02-29", grade="C")
    at(cf, clock, datetime(2027, 2, 27, 9, 0, tzinfo=SHANGHAI))
    assert provider.sent == []
    at(cf, clock, datetime(2027, 2, 28, 9, 0, tzinfo=SHANGHAI))
    assert len(provider.sent) == 1


def test_birthday_greeting_to_opted_out_customer_is_suppressed(cf, clock, provider):
    cid = new_customer(cf, birthday="1980-11-25", grade="C", consent={"email": False})
    at(cf, clock, START + timedelta(days=1))
    assert provider.sent == []
    assert "message_suppressed" in timeline_kinds(cf, cid)
    with cf.session() as s:
        assert s.scalars(select(OutboxMessage.status)).all() == ["suppressed"]


# ----- 5. churn win-back --------------------------------------------------------------------------

def dormant(cf, **kw):  # type: ignore[no-untyped-def]
    return new_customer(cf, last_purchase_at="2026-08-01T10:00:00+08:00", **kw)


def daily_scan(cf, clock):  # type: ignore[no-untyped-def]
    return at(cf, clock, datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI))


def winback_instance(cf, cid):  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return s.scalars(select(Instance.id).where(Instance.flow_id == "winback", Instance.customer_id == cid)).one()


def test_winback_reply_recovers_the_customer(cf, clock, provider):
    cid = dormant(cf)
    new_customer(cf, name="近期客户", phone="+8613900139003", email="r@example.com",
                 last_purchase_at="2026-11-01T10:00:00+08:00")
    daily_scan(cf, clock)
    iid = winback_instance(cf, cid)
    assert customer(cf, cid)["status"] == "at_risk"
    assert [s["to"] for s in provider.sent] == ["zhangwei@example.com"]
    cf.message(iid, "customer_replied", {"text": "好的"})
    assert status(cf, iid) == ("completed", "recovered")
    assert customer(cf, cid)["status"] == "active"


def test_winback_no_reply_then_call_recovers(cf, clock):
    cid = dormant(cf, tags=["churn_risk"])
    daily_scan(cf, clock)
    iid = winback_instance(cf, cid)
    later(cf, clock, days=7)
    task = only_task(cf, iid)
    assert (task["step"], task["assignee"]) == ("call", "wang")
    cf.complete(task["id"], {"reason": "price", "recovered": True}, "wang")
    assert status(cf, iid) == ("completed", "recovered")
    assert customer(cf, cid)["tags"] == []


def test_winback_no_reply_then_call_marks_lost_with_reason(cf, clock):
    cid = dormant(cf)
    daily_scan(cf, clock)
    iid = winback_instance(cf, cid)
    later(cf, clock, days=7)
    with pytest.raises(SubmissionInvalid):
        cf.complete(only_task(cf, iid)["id"], {"reason": "other", "recovered": False}, "wang")
    cf.complete(only_task(cf, iid)["id"], {"reason": "competitor", "recovered": False}, "wang")
    assert status(cf, iid) == ("completed", "lost")
    c = customer(cf, cid)
    assert (c["status"], c["lost_reason"]) == ("lost", "competitor")
    daily_scan(cf, clock)  # lost customers are not scanned again
    later(cf, clock, days=1)
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(Instance).where(Instance.flow_id == "winback")) == 1

"""The dry run (engine/designer/dry_run.py): the real engine on a throwaway copy, nothing sent, nothing real touched.

Flows run as the built-in files (a dry run takes YAML text, deployed or not). The real Careflow is one
SQLite Careflow shared by the module (``cf`` on both backends for the untouched-database test), with
the built-in flows and forms, the demo users, and the fake provider attached to the e-mail and SMS
channels.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import func, select

from engine.app import create_app
from engine.cli import main
from engine.core import Careflow
from engine.designer.dry_run import DryRunInvalid, dry_run, snapshot
from engine.store import models
from engine.clock import FixedClock
from tests.conftest import START, make_careflow
from tests.integration.admin.conftest import Browser, token_of
from tests.integration.test_app import PASSWORD
from tests.support.fakes import RecordingProvider, SecretProvider

ROOT = Path(__file__).resolve().parents[2]


def flow(name: str) -> str:
    return (ROOT / "workflows" / f"{name}.yaml").read_text(encoding="utf-8")


_numbers = itertools.count(1)


def customer(cf: Careflow, **fields: Any) -> int:
    n = next(_numbers)
    data = {"name": "张伟", "email": f"zhangwei{n}@example.com", "phone": f"+86138001{n:05d}", "grade": "A",
            "owner": "wang", "birthday": "1985-11-24", "language": "zh", **fields}
    return cf.create_customer(data, fire_triggers=False)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Careflow]:
    """One real Careflow (SQLite) for the module: a dry run never changes it, so tests may share it."""
    engine = make_careflow(f"sqlite:///{tmp_path_factory.mktemp('real') / 'careflow.db'}", FixedClock(START),
                           RecordingProvider())
    yield engine
    engine.close()


def email_of(cf: Careflow, customer_id: int) -> str:
    with cf.session() as s:
        return str(s.get(models.Customer, customer_id).email)  # type: ignore[union-attr]


def sent(cf: Careflow) -> list[dict[str, Any]]:
    provider = cf.registry.get("fake")
    assert isinstance(provider, RecordingProvider)
    return provider.sent


def utc(at: datetime) -> str:
    """How the report writes times: ISO-8601 in UTC."""
    return at.astimezone(timezone.utc).isoformat()


def steps(report: dict[str, Any]) -> list[str]:
    return [item["step"] for item in report["path"]]


def note(report: dict[str, Any], step: str) -> str:
    return next(item["note"] for item in report["path"] if item["step"] == step)


COUNTED = (models.Instance, models.OutboxMessage, models.Task, models.TimelineEntry, models.Timer, models.HistoryEntry,
           models.FlowVersion, models.FormVersion, models.AuditEntry, models.Incident, models.Enrollment, models.User,
           models.Customer)


def counts(cf: Careflow) -> dict[str, int]:
    with cf.session() as s:
        return {model.__tablename__: int(s.scalar(select(func.count()).select_from(model)) or 0) for model in COUNTED}


# ----- the built-in flows, every branch ---------------------------------------------------------


def test_birthday_of_a_grade_a_customer_sends_a_coupon_and_asks_for_a_call(real: Careflow) -> None:
    cid = customer(real, grade="A")
    report = dry_run(real, flow("birthday"), cid, start=START, language="en")
    assert report["status"] == "completed" and report["outcome"] == "greeted_and_called"
    assert steps(report) == ["greet", "is_grade_a", "coupon", "send_coupon", "birthday_call", "done_with_call"]
    assert note(report, "is_grade_a") == "went to coupon"
    greet, coupon = report["messages"]
    assert (greet["step"], greet["channel"], greet["to"], greet["skipped"]) == ("greet", "email", email_of(real, cid), None)
    assert greet["text"] == "张伟，祝您生日快乐！感谢一路相伴。"  # in the customer's language
    assert coupon["text"].startswith("送您一张生日专属优惠券：BD2026-")
    [task] = report["tasks"]
    assert task == {"step": "birthday_call", "form": "birthday_call", "title": "Birthday call: 张伟", "assignee": "wang",
                    "due": utc(START + timedelta(days=1)), "answers": {"reached": True},
                    "answered_by": "default", "status": "completed"}
    assert sent(real) == []  # nothing reached the provider


def test_birthday_of_another_customer_only_greets(real: Careflow) -> None:
    cid = customer(real, grade="B")
    report = dry_run(real, flow("birthday"), cid, start=START)
    assert (report["status"], report["outcome"]) == ("completed", "greeted")
    assert steps(report) == ["greet", "is_grade_a", "done"]
    assert [m["step"] for m in report["messages"]] == ["greet"] and report["tasks"] == []
    assert note(report, "is_grade_a") == "走向 done"


def test_complaint_the_customer_is_satisfied(real: Careflow) -> None:
    cid = customer(real)
    answers = {"triage": {"severity": "high", "category": "billing"},
               "wait_confirmation": {"event": True, "data": {"satisfied": True}}}
    report = dry_run(real, flow("complaint"), cid, answers=answers, start=START, language="en")
    assert (report["status"], report["outcome"]) == ("completed", "resolved")
    assert steps(report) == ["ticket", "has_customer", "acknowledge", "triage", "severity", "lead_review", "resolve",
                             "count_round", "can_confirm", "ask_confirmation", "wait_confirmation", "satisfied", "close",
                             "resolved"]
    assert note(report, "wait_confirmation") == "the complaint_confirmation event came"
    assert note(report, "ticket") == "started with default answers of the form complaint_intake"
    assert [(t["step"], t["answered_by"]) for t in report["tasks"]] == [
        ("triage", "given"), ("lead_review", "default"), ("resolve", "default")]
    assert report["tasks"][0]["answers"] == {"severity": "high", "category": "billing"}
    assert report["ended_at"] == report["started_at"]  # the customer answered at once


def test_complaint_the_customer_is_not_satisfied_then_does_not_answer(real: Careflow) -> None:
    cid = customer(real)
    answers = {"resolve": [{"resolution": "换货"}, {"resolution": "退款"}],
               "wait_confirmation": [{"event": True, "data": {"satisfied": False}}]}
    report = dry_run(real, flow("complaint"), cid, answers=answers, start=START, language="en")
    assert (report["status"], report["outcome"]) == ("completed", "closed_unconfirmed")
    path = steps(report)
    assert path.count("resolve") == 2 and path.count("wait_confirmation") == 2 and path[-1] == "close_unconfirmed"
    asks = [m["text"] for m in report["messages"] if m["step"] == "ask_confirmation"]
    assert len(asks) == 2 and "换货" in asks[0] and "退款" in asks[1]
    # The second time nobody answers: the 7-day timeout runs on the virtual clock.
    assert report["ended_at"] == utc(START + timedelta(days=7))
    waits = [i["note"] for i in report["path"] if i["step"] == "wait_confirmation"]
    assert waits == ["the complaint_confirmation event came", "no complaint_confirmation event came: timed out"]


def test_winback_the_customer_replies_and_is_recovered(real: Careflow) -> None:
    cid = customer(real)
    report = dry_run(real, flow("winback"), cid, answers={"wait_reply": {"event": True}}, start=START)
    assert (report["status"], report["outcome"]) == ("completed", "recovered")
    assert steps(report) == ["mark_at_risk", "offer", "wait_reply", "mark_active", "won_back"]
    assert report["tasks"] == []


def test_winback_the_call_fails_and_the_customer_is_lost(real: Careflow) -> None:
    cid = customer(real)
    answers = {"call": {"reason": "price", "recovered": False}}
    report = dry_run(real, flow("winback"), cid, answers=answers, start=START)
    assert (report["status"], report["outcome"]) == ("completed", "lost")
    assert steps(report) == ["mark_at_risk", "offer", "wait_reply", "call", "recovered", "mark_lost", "lost"]
    call = next(i for i in report["path"] if i["step"] == "call")
    assert call["at"] == utc(START + timedelta(days=7))  # after the reply window, fast-forwarded
    assert report["tasks"][0]["answers"] == {"reason": "price", "recovered": False}
    with real.session() as s:  # the real customer is neither at risk nor lost
        assert s.get(models.Customer, cid).status == "active"  # type: ignore[union-attr]


# ----- waits, consent, failures ---------------------------------------------------------------------

THIRTY_DAYS = """
id: thirty_days
name: {zh: 三十天回访, en: Check in after 30 days}
timezone: Asia/Shanghai
steps:
  - id: thanks
    type: action
    connector: preferred
    params: {subject: 谢谢, text: "{{ customer.name }}，谢谢您的订单。"}
    next: wait_30
  - id: wait_30
    type: wait
    duration: {days: 30}
    next: check_in
  - id: check_in
    type: action
    connector: preferred
    params: {subject: 回访, text: "{{ customer.name }}，用得怎么样？"}
    next: done
  - id: done
    type: end
    outcome: checked_in
"""


def test_a_30_day_wait_is_fast_forwarded_and_a_draft_flow_is_not_deployed(real: Careflow) -> None:
    cid = customer(real)
    report = dry_run(real, THIRTY_DAYS, cid, start=START, language="en")
    assert (report["status"], report["outcome"]) == ("completed", "checked_in")
    later = utc(START + timedelta(days=30))
    assert [(m["step"], m["at"]) for m in report["messages"]] == [("thanks", utc(START)), ("check_in", later)]
    assert note(report, "wait_30") == f"waited until {later}"
    assert report["ended_at"] == later
    with real.session() as s:
        assert s.scalars(select(models.FlowVersion).where(models.FlowVersion.flow_id == "thirty_days")).first() is None


def test_a_message_to_a_customer_who_opted_out_is_listed_as_skipped(real: Careflow) -> None:
    cid = customer(real, grade="B", consent={"email": False})
    report = dry_run(real, flow("birthday"), cid, start=START, language="en")
    [greet] = report["messages"]
    assert greet["skipped"] == "not sent (the customer opted out)" and greet["channel"] == "email"
    assert greet["text"] == "张伟，祝您生日快乐！感谢一路相伴。"  # still shown: what would have gone out
    assert (report["status"], report["outcome"]) == ("completed", "greeted")


BROKEN_TEMPLATE = THIRTY_DAYS.replace("{{ customer.name }}，用得怎么样？", "{{ vars.order.number }} 用得怎么样？")


def test_a_failing_template_ends_the_run_with_its_problem(real: Careflow) -> None:
    cid = customer(real)
    report = dry_run(real, BROKEN_TEMPLATE, cid, start=START)
    assert report["status"] == "failed" and report["outcome"] is None
    [problem] = report["problems"]
    assert problem["node"] == "check_in" and "order" in problem["message"]
    assert [m["step"] for m in report["messages"]] == ["thanks"]
    assert steps(report)[-1] == "check_in"


def test_a_wait_for_an_event_without_timeout_ends_waiting(real: Careflow) -> None:
    source = THIRTY_DAYS.replace("duration: {days: 30}", "event: customer_replied")
    report = dry_run(real, source, customer(real), start=START, language="en")
    assert report["status"] == "waiting" and report["problems"][0]["node"] == "wait_30"
    answered = dry_run(real, source, customer(real),
                       answers={"wait_30": {"event": True}}, start=START)
    assert (answered["status"], answered["outcome"]) == ("completed", "checked_in")


def test_a_flow_that_does_not_load_or_an_unknown_customer_is_refused(real: Careflow) -> None:
    cid = customer(real)
    with pytest.raises(DryRunInvalid) as refused:
        dry_run(real, THIRTY_DAYS.replace("next: check_in", "next: nowhere"), cid, start=START)
    assert any(p["node"] == "wait_30" and p["line"] > 0 for p in refused.value.problems)
    with pytest.raises(DryRunInvalid) as unknown:
        dry_run(real, THIRTY_DAYS, 999_999, start=START, language="en")
    assert unknown.value.problems[0]["message"] == "No customer by the id 999999 was found"
    with pytest.raises(DryRunInvalid):
        dry_run(real, THIRTY_DAYS, cid, answers={"wait_30": "yes"}, start=START)


def test_invalid_answers_are_reported_on_their_step(real: Careflow) -> None:
    report = dry_run(real, flow("winback"), customer(real), answers={"call": {"recovered": "maybe"}}, start=START)
    assert report["status"] == "failed"
    assert report["problems"][0]["node"] == "call" and report["problems"][0]["path"] == "$.answers.call"


# ----- the real database is only read ----------------------------------------------------------------


def test_the_real_database_is_untouched(cf: Careflow, provider: RecordingProvider) -> None:
    cid = customer(cf)
    cf.start("complaint", customer_id=cid)  # something real running, to see it is left alone
    before = counts(cf)
    with cf.session() as s:
        profile = s.get(models.Customer, cid).__dict__.copy()  # type: ignore[union-attr]
    for name, answers in (("winback", {"call": {"reason": "price", "recovered": False}}), ("complaint", {}),
                          ("birthday", {})):
        assert dry_run(cf, flow(name), cid, answers=answers, start=START)["status"] == "completed"
    assert counts(cf) == before
    with cf.session() as s:
        after = s.get(models.Customer, cid).__dict__  # type: ignore[union-attr]
        assert {k: after[k] for k in profile if not k.startswith("_")} == {k: v for k, v in profile.items() if not k.startswith("_")}
    assert provider.sent == []


# ----- the admin endpoint and the command ---------------------------------------------------------


@pytest.fixture
def browser(real: Careflow) -> Callable[[str], Browser]:
    app: Flask = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=real)

    def sign(username: str) -> Browser:
        b = Browser(app.test_client(), "en")
        page = b.get("/login").get_data(as_text=True)
        b.client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token_of(page)})
        b.get("/")
        return b

    return sign


def test_the_admin_endpoint_runs_a_draft_for_a_customer_the_user_may_see(real: Careflow, browser) -> None:  # type: ignore[no-untyped-def]
    cid = customer(real)
    ops = browser("ops")
    url = "/admin/designer/api/dry-run"
    body = {"source": THIRTY_DAYS, "customer_id": cid, "start": START.isoformat()}
    assert ops.client.post(url, json=body).status_code == 400  # no CSRF token
    headers = {"X-CSRFToken": ops.csrf, "Accept-Language": "en"}
    answer = ops.client.post(url, json=body, headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["status"] == "completed" and answer.json["ended_at"] == utc(START + timedelta(days=30))
    local = ops.client.post(url, json={**body, "start": "2026-11-24T09:00"}, headers=headers)  # datetime-local
    assert local.json["started_at"] == utc(START)  # read in the flow's time zone (Asia/Shanghai)
    refused = ops.client.post(url, json={**body, "source": "id: [broken"}, headers=headers)
    assert refused.status_code == 422 and refused.json["problems"][0]["line"] > 0
    li = browser("li")  # an account manager of another region: not their customer
    hidden = li.client.post(url, json=body, headers={"X-CSRFToken": li.csrf, "Accept-Language": "en"})
    assert hidden.status_code == 422 and hidden.json["problems"][0]["path"] == "$.customer_id"


def test_the_command_prints_a_summary_or_json(real: Careflow, tmp_path: Path) -> None:
    cid = customer(real, grade="B")
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps({"call": {"reason": "service", "recovered": False}}), encoding="utf-8")
    base = ["--database", real.url, "dry-run", "--customer", str(cid), "--start", START.isoformat()]
    result = CliRunner().invoke(main, [*base, str(ROOT / "workflows" / "winback.yaml"), "--answers", str(answers), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["outcome"] == "lost" and report["tasks"][0]["answered_by"] == "given"
    text = CliRunner().invoke(main, [*base, "birthday", "--lang", "en"])  # a deployed flow, by id
    assert text.exit_code == 0, text.output
    assert "Dry run of birthday" in text.output and "is_grade_a (decision)  went to done" in text.output
    assert "Messages (not sent):" in text.output


BUNDLE = """
id: care_bundle
name: {zh: 关怀组合, en: Care bundle}
steps:
  - id: fan_out
    type: parallel
    branches: [note, birthday_part]
  - id: note
    type: action
    connector: preferred
    params: {subject: 你好, text: "{{ customer.name }}，您好"}
    next: meet
  - id: birthday_part
    type: subflow
    flow: birthday
    next: meet
  - id: meet
    type: join
    next: done
  - id: done
    type: end
    outcome: "bundled"
"""


def test_parallel_branches_and_a_deployed_subflow_run_to_the_end(real: Careflow) -> None:
    report = dry_run(real, BUNDLE, customer(real, grade="A"), answers={"birthday_call": {"reached": False}}, start=START)
    assert (report["status"], report["outcome"]) == ("completed", "bundled")
    child = [i["step"] for i in report["path"] if i.get("flow") == "birthday"]
    assert child == ["greet", "is_grade_a", "coupon", "send_coupon", "birthday_call", "done_with_call"]
    assert {"fan_out", "note", "birthday_part", "meet", "done"} <= set(steps(report))
    assert sorted(m["step"] for m in report["messages"]) == ["greet", "note", "send_coupon"]
    assert [(t["step"], t["answers"], t["answered_by"]) for t in report["tasks"]] == [
        ("birthday_call", {"reached": False}, "given")]


def test_a_loop_that_never_ends_stops_at_the_horizon(real: Careflow) -> None:
    never = {"wait_confirmation": {"event": True, "data": {"satisfied": False}}}  # one value: every visit
    report = dry_run(real, flow("complaint"), customer(real), answers=never, start=START, max_rounds=30)
    assert report["status"] == "horizon" and report["outcome"] is None
    assert steps(report).count("resolve") > 5 and report["problems"]


def test_the_weekly_cap_counts_the_customers_real_messages(cf_sqlite: Careflow, provider: RecordingProvider) -> None:
    cf_sqlite.save_connector("email", "email", {"provider": "fake", "marketing_per_week": 2})
    cid = customer(cf_sqlite, grade="A")
    cf_sqlite.start("birthday", customer_id=cid)  # for real: the greeting and the coupon go out
    cf_sqlite.tick()
    assert len(provider.sent) == 2
    report = dry_run(cf_sqlite, flow("birthday"), cid, start=START + timedelta(days=3), language="en")
    assert [(m["step"], m["skipped"]) for m in report["messages"]] == [
        ("greet", "not sent (marketing frequency cap reached)"), ("send_coupon", "not sent (marketing frequency cap reached)")]
    later = dry_run(cf_sqlite, flow("birthday"), cid, start=START + timedelta(days=8), language="en")
    assert [m["skipped"] for m in later["messages"]] == [None, None]  # a week later the cap is free again
    assert len(provider.sent) == 2


def test_no_secret_or_provider_setting_is_copied(cf_sqlite: Careflow) -> None:
    cf_sqlite.registry.register(SecretProvider)
    cf_sqlite.save_connector("mailer", "fakemail", {"api_key": "sk-live-0123456789", "from_address": "care@example.com"})
    cf_sqlite.save_connector("email", "email", {"provider": "mailer", "marketing_per_week": 3})
    copied = {row["name"]: (row["type"], row["settings"], row["secrets"])
              for model, row in snapshot(cf_sqlite, customer(cf_sqlite), START).rows if model is models.ConnectorConfig}
    assert copied == {"mailer": ("fakemail", {}, {}), "email": ("email", {"provider": "mailer", "marketing_per_week": 3}, {})}
    users = [row for model, row in snapshot(cf_sqlite, customer(cf_sqlite), START).rows if model is models.User]
    assert users and all(row["password_hash"] is None for row in users)


def test_a_wait_beyond_the_horizon_stops_there(real: Careflow) -> None:
    report = dry_run(real, THIRTY_DAYS, customer(real), start=START, horizon=timedelta(days=10))
    assert report["status"] == "horizon" and [m["step"] for m in report["messages"]] == ["thanks"]


def test_every_built_in_flow_runs_to_an_end_with_default_answers(real: Careflow) -> None:
    cid = customer(real)
    outcomes = {path.stem: dry_run(real, path.read_text(encoding="utf-8"), cid, start=START)
                for path in sorted((ROOT / "workflows").glob("*.yaml"))}
    assert {name: (r["status"], r["problems"]) for name, r in outcomes.items()} == {
        name: ("completed", []) for name in outcomes}
    # onboarding starts from its form, filled from the customer's own profile
    assert outcomes["onboarding"]["path"][0]["note"] == "以表单 new_customer 的默认答案启动"


CALLBACK = """
id: callback
name: {zh: 回电, en: Call back}
steps:
  - id: call
    type: task
    form: birthday_call
    title: {zh: 回电, en: Call back}
    assignee: {role: service_agent}
    due: {hours: 4}
    reminders:
      - before: {hours: 1}
    escalation:
      - after: {hours: 1}
        to_role: service_lead
    on_timeout: {after: {days: 2}, next: give_up}
    next: done
  - id: done
    type: end
    outcome: called
  - id: give_up
    type: end
    outcome: gave_up
"""


def test_a_task_nobody_answers_is_reminded_escalated_and_times_out(real: Careflow) -> None:
    report = dry_run(real, CALLBACK, customer(real), answers={"call": {"$timeout": True}}, start=START, language="en")
    assert (report["status"], report["outcome"]) == ("completed", "gave_up")
    assert note(report, "call") == "a reminder was sent; escalated to service_lead; the task timed out"
    assert report["ended_at"] == utc(START + timedelta(days=2))
    assert [(t["status"], t["answered_by"]) for t in report["tasks"]] == [("cancelled", None)]
    never = CALLBACK.replace("    on_timeout: {after: {days: 2}, next: give_up}\n", "").split("  - id: give_up")[0]
    stuck = dry_run(real, never, customer(real), answers={"call": {"$timeout": True}}, start=START, language="en")
    assert stuck["status"] == "waiting" and stuck["problems"][-1]["node"] == "call"


@pytest.mark.parametrize("start", ["9999-12-31T00:00", "0001-01-01T00:00", "0001-01-01T00:00+08:00"])
def test_a_start_out_of_range_is_refused_naming_it(real: Careflow, browser, start: str) -> None:  # type: ignore[no-untyped-def]
    cid = customer(real)
    with pytest.raises(DryRunInvalid) as refused:
        dry_run(real, THIRTY_DAYS, cid, start=datetime.fromisoformat(start), language="en")
    assert refused.value.problems[0]["path"] == "$.start" and start[:16] in refused.value.problems[0]["message"]
    ops = browser("ops")
    for language, words in (("en", "start must lie in the years 1970 to 9000"), ("zh", "start 必须在 1970 年到 9000 年之间")):
        answer = ops.client.post("/admin/designer/api/dry-run", json={"source": THIRTY_DAYS, "customer_id": cid, "start": start},
                                 headers={"X-CSRFToken": ops.csrf, "Accept-Language": language})
        assert answer.status_code == 422, answer.get_data(as_text=True)
        assert answer.json["problems"][0]["path"] == "$.start" and words in answer.json["problems"][0]["message"]
        assert start[:16] in answer.json["problems"][0]["message"]


def test_a_customer_id_out_of_range_is_refused_naming_it(real: Careflow, browser) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DryRunInvalid) as refused:
        dry_run(real, THIRTY_DAYS, 10**20, start=START, language="en")
    assert refused.value.problems[0]["path"] == "$.customer_id" and str(10**20) in refused.value.problems[0]["message"]
    ops = browser("ops")
    for value in (10**20, str(10**20), 0, -3):
        answer = ops.client.post("/admin/designer/api/dry-run", json={"source": THIRTY_DAYS, "customer_id": value},
                                 headers={"X-CSRFToken": ops.csrf, "Accept-Language": "en"})
        assert answer.status_code == 422, answer.get_data(as_text=True)
        problem = answer.json["problems"][0]
        assert problem["path"] == "$.customer_id" and str(value) in problem["message"], problem
    result = CliRunner().invoke(main, ["--database", real.url, "dry-run", "--customer", str(10**20), "birthday", "--lang", "en"])
    assert result.exit_code != 0 and str(10**20) in result.output and "Traceback" not in result.output


def test_a_root_instance_that_is_cancelled_is_reported_cancelled(real: Careflow, monkeypatch: pytest.MonkeyPatch) -> None:
    # No step cancels its own instance, so the cancel (the engine's real one) comes after the first round, as an operator's would.
    from engine.designer import dry_run as module

    played = module._Run.due_work

    def cancel_after_the_first_round(run: Any) -> None:
        played(run)
        with run.box.sessions() as s:
            running = s.get(models.Instance, run.instance_id).status == "running"  # type: ignore[union-attr]
        if running:
            run.box.cancel(run.instance_id, "stopped by hand")

    monkeypatch.setattr(module._Run, "due_work", cancel_after_the_first_round)
    report = dry_run(real, THIRTY_DAYS, customer(real), start=START, language="en")
    assert report["status"] == "cancelled" and report["outcome"] == "stopped by hand"
    assert report["problems"][0]["message"] == "the instance was cancelled: stopped by hand"


def test_only_a_few_dry_runs_run_at_once(real: Careflow, browser) -> None:  # type: ignore[no-untyped-def]
    from admin import dry_run as endpoint

    ops = browser("ops")
    body = {"source": THIRTY_DAYS, "customer_id": customer(real), "start": START.isoformat()}
    held = 0
    while endpoint.RUNNING.acquire(blocking=False):  # as many as are running elsewhere at most
        held += 1
    try:
        for language, words in (("en", "A dry run is already running"), ("zh", "已有试运行正在进行")):
            busy = ops.client.post("/admin/designer/api/dry-run", json=body,
                                   headers={"X-CSRFToken": ops.csrf, "Accept-Language": language})
            assert busy.status_code == 429 and busy.headers["Retry-After"] == str(endpoint.RETRY_AFTER_SECONDS)
            assert words in busy.json["problems"][0]["message"]
    finally:
        for _ in range(held):
            endpoint.RUNNING.release()
    assert held == endpoint.MAX_RUNNING
    after = ops.client.post("/admin/designer/api/dry-run", json=body, headers={"X-CSRFToken": ops.csrf})
    assert after.status_code == 200 and after.json["status"] == "completed"

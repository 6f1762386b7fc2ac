"""The step plans' quick paths against the general code they stand for.

Each quick path must give what the general code gives, errors included: a step's stored fields and
choice check, a task's remembered due time, an action's backoff, the working copy of a state, and
the quick text filters of engine.fastexpr. A divergence fails here before it can change a row.
"""

from __future__ import annotations

import copy
import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from engine import expr, fastexpr
from engine.calendar import BusinessCalendar
from engine.flow.loader import load_flow_text
from engine.flow.model import Duration, Step
from engine.profile import CHOICES, choice_problems
from engine.runtime import events as ev
from engine.runtime import interpreter
from engine.runtime.interpreter import Context, StepFailed, advance, start_state
from engine.runtime.timing import add_duration

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)


def result(run: Any) -> tuple[str, Any]:
    try:
        return "value", run()
    except Exception as exc:  # noqa: BLE001 - the error is part of what is compared
        return "error", (type(exc), str(exc))


# --- update_customer: stored fields and the choice check -----------------------------------------

FIELD_VALUES = ["{{ vars.a }}", "{{ vars.b }}", "text", "前 {{ vars.a }} 后", 7, None, True, ["x", "{{ vars.a }}"],
                {"k": "{{ vars.b }}"}, "{{ vars.missing.deeper }}", "{{ vars.a | e164 }}"]
FIELD_KEYS = ["grade", "preferred_channel", "status", "birthday_calendar", "phone", "note", 1, 2.5, True, "1"]
VARIABLE_VALUES = [None, "", "A", "B", "Z", "sms", "fax", "active", "lunar", 3, 2.5, True, ["A"], {"x": 1},
                   date(2026, 1, 2), datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc), ("t",), {1, 2}, b"raw",
                   "138 0013 8000"]


def random_fields(rng: random.Random) -> dict[Any, Any]:
    return {rng.choice(FIELD_KEYS): rng.choice(FIELD_VALUES) for _ in range(rng.randrange(0, 5))}


def random_vars(rng: random.Random) -> dict[str, Any]:
    return {"a": rng.choice(VARIABLE_VALUES), "b": rng.choice(VARIABLE_VALUES)}


def test_stored_fields_are_those_of_the_general_path() -> None:
    rng = random.Random(1205)
    quick_seen = 0
    for _ in range(3000):
        step = Step(id="u", type="update_customer", fields=random_fields(rng))
        plan = interpreter._Plan(step)
        context = {"customer": {}, "vars": random_vars(rng), "instance": {"id": 1}, "now": NOW}
        quick = result(lambda: plan.stored_fields(context))
        general = result(lambda: interpreter._stored(expr.render_value(dict(step.fields), context)))
        assert quick == general, step.fields
        if quick[0] == "value":
            values = quick[1]
            quick_seen += plan._text_keys
            # The quick check finds a problem exactly when choice_problems does.
            assert plan.may_break_choices(values) == bool(choice_problems(values)), values
    assert quick_seen > 500


def test_the_choice_check_covers_every_enumerated_field() -> None:
    step = Step(id="u", type="update_customer", fields={key: "x" for key in CHOICES})
    plan = interpreter._Plan(step)
    assert [key for key, _allowed in plan._choices] == list(CHOICES)
    for key, allowed in CHOICES.items():
        assert plan.may_break_choices({key: allowed[0]}) is False
        assert plan.may_break_choices({key: "not a choice"}) is True
        assert plan.may_break_choices({key: ["list"]}) is True
        assert plan.may_break_choices({key: None}) is False


UPDATES = """
id: t
name: T
steps:
  - id: first
    type: update_customer
    fields:
      grade: "{{ vars.g }}"
      preferred_channel: "{{ vars.c }}"
      expected_value: "{{ vars.n }}"
      birthday: "{{ vars.d }}"
      note: "{{ vars.l }}"
    next: second
  - id: second
    type: update_customer
    fields:
      status: "{{ vars.s }}"
      phone: "{{ vars.p | e164 }}"
    add_tags: [vip]
    timeline: {zh: "备注：{{ vars.g }}", en: "Note: {{ vars.g }}"}
    next: done
  - id: done
    type: end
"""


def run_updates(data: dict[str, Any]) -> Any:
    flow = load_flow_text(UPDATES, "t.yaml")
    customer = {"id": 1, "name": "王", "tags": ["old"], "grade": "C"}
    out = advance(flow, start_state(flow), ev.Start(data, {"type": "manual"}), Context(NOW, {"id": 9}, customer))
    return out.state, out.effects, out.history, out.customer


def test_update_steps_with_plans_give_what_compiling_as_they_run_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(5)
    cases = [{"g": rng.choice(["A", "B", "Z", None, 1]), "c": rng.choice(["sms", "fax", None]),
              "n": rng.choice([1, 2.5, "x", None]), "d": rng.choice([date(2000, 1, 2), "2000-01-02", None]),
              "l": rng.choice([["a"], {"b": 1}, "t", {1, 2}]), "s": rng.choice(["active", "gone", None]),
              "p": rng.choice(["138 0013 8000", "12", 5])} for _ in range(80)]
    planned = [run_updates(copy.deepcopy(c)) for c in cases]
    monkeypatch.setattr(interpreter, "_plan", lambda step: None)
    compiled = [run_updates(copy.deepcopy(c)) for c in cases]
    assert planned == compiled
    incidents = [entry for run in planned for entry in run[2] if entry["type"] == "incident"]
    assert any("is not one of" in entry["message"] for entry in incidents)
    assert any("cannot be stored" in entry["message"] for entry in incidents)
    assert any(entry["type"] == "instance_ended" for run in planned for entry in run[2])


# --- task due times and action backoffs -----------------------------------------------------------


def test_a_plan_due_time_is_add_durations_for_each_now_and_calendar() -> None:
    step = Step(id="t", type="task", due=Duration(business_days=2, hours=3))
    plan = interpreter._Plan(step)
    calendars = [BusinessCalendar(), BusinessCalendar(overrides={date(2026, 11, 25): False})]
    shanghai = timezone(timedelta(hours=8))
    nows = [NOW, NOW + timedelta(days=3), NOW.astimezone(shanghai), datetime(2026, 11, 27, 23, 0, tzinfo=timezone.utc)]
    rng = random.Random(3)
    for _ in range(200):
        now = rng.choice(nows)
        now = now if rng.random() < 0.5 else now + timedelta(0)  # an equal datetime, another object
        calendar, tz = rng.choice(calendars), rng.choice(["Asia/Shanghai", "UTC", "America/New_York"])
        assert step.due is not None
        assert plan.due_at(now, tz, calendar) == add_duration(now, step.due, tz, calendar)


@pytest.mark.parametrize("backoff", [None, Duration(minutes=5), Duration(hours=1, days=1)])
def test_a_plan_backoff_is_the_steps(backoff: Duration | None) -> None:
    step = Step(id="a", type="action", backoff=backoff)
    assert interpreter._Plan(step).backoff == interpreter._backoff_seconds(step)
    assert interpreter._backoff_seconds(step) == (backoff.plain.total_seconds() if backoff else 60.0)


# --- the working copy of a state ----------------------------------------------------------------


@pytest.mark.parametrize("state", [
    start_state(load_flow_text(UPDATES, "t.yaml")),
    {"status": "running", "vars": {"a": [1]}, "visits": {"x": 1},
     "tokens": {"t1": {"step": "x", "gen": 1, "wait": {"kind": "task"}, "splits": ["p#1"]},
                "t2": {"step": "y", "gen": 0, "wait": None, "splits": []}},
     "splits": {"p#1": {"count": 2, "arrived": ["t3"]}}},
    {"status": "running", "vars": {}, "tokens": {}},
])
def test_the_working_copy_equals_the_state_and_shares_no_container_a_run_changes(state: dict[str, Any]) -> None:
    original = copy.deepcopy(state)
    work = interpreter._working_copy(state)
    assert work == state
    for key in ("vars", "visits", "tokens", "splits"):
        if key in state:
            assert work[key] is not state[key]
    for tid, token in work.get("tokens", {}).items():
        assert token is not state["tokens"][tid]
        if token["wait"]:
            assert token["wait"] is not state["tokens"][tid]["wait"]
    for sid, split in work.get("splits", {}).items():
        assert split["arrived"] is not state["splits"][sid]["arrived"]
    work["tokens"].clear()
    work.get("splits", {}).clear()
    assert state == original


# --- quick text filters -----------------------------------------------------------------------------

TEXTS = ["138 0013 8000", "+86 138 0013 8000", "+14155552671", "12345", "", "  ", "(415) 555-2671", "１３８００１３８０００",
         " Wang.Li@Example.COM ", "a@b", "x@example.test", "用户@例子.中国", "UPPER lower", " trim me\t", "ß"]


@pytest.mark.parametrize("text", TEXTS)
def test_quick_text_filters_are_the_sandbox_filters_for_text(text: str) -> None:
    assert expr.e164_of_text(text) == expr._filter_e164(text)
    assert expr.normalized_email_of_text(text) == expr._filter_normalize_email(text)
    for name in ("e164", "normalize_email", "lower", "upper", "trim"):
        compiled = expr.compile_expression(f"vars.t | {name}")
        assert compiled._fast is not None
        slow = expr.Expression(compiled.source, compiled._template, compiled._paths, compiled._line)
        for value in (text, None, 7, ["x"], "x" * (fastexpr.MAX_PLAIN_CHARS + 1)):
            context = {"vars": {"t": value}}
            assert result(lambda: compiled.evaluate(context)) == result(lambda: slow.evaluate(context)), (name, value)
        assert result(lambda: compiled.evaluate({"vars": {}})) == result(lambda: slow.evaluate({"vars": {}}))


def test_a_step_failure_is_the_same_error_type() -> None:
    # The quick stored-fields path raises the general path's StepFailed for a value it cannot store.
    plan = interpreter._Plan(Step(id="u", type="update_customer", fields={"note": "{{ vars.a }}"}))
    with pytest.raises(StepFailed, match="cannot be stored"):
        plan.stored_fields({"vars": {"a": {1, 2}}})


# --- event data copies and rendered texts -------------------------------------------------------


def random_data(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(8 if depth < 3 else 4)
    if choice == 0:
        return rng.choice([None, True, False, 0, 7, 2.5, "", "好"])
    if choice == 1:
        return rng.choice([date(2026, 1, 2), ("t", 1), b"raw", 10**30])
    if choice in (2, 3):
        return rng.choice(["a", 1, None])
    if choice in (4, 5):
        return {rng.choice(["a", "b", "c", 1]): random_data(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_data(rng, depth + 1) for _ in range(rng.randrange(4))]


def containers(value: Any) -> list[int]:
    if isinstance(value, dict):
        return [id(value)] + [i for item in value.values() for i in containers(item)]
    if isinstance(value, list):
        return [id(value)] + [i for item in value for i in containers(item)]
    return []


def test_copied_event_data_is_a_deep_copy() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        data = random_data(rng)
        copied = interpreter._copied(data)
        assert copied == copy.deepcopy(data)
        assert repr(copied) == repr(data)  # the same types, keys in the same order
        assert not set(containers(copied)) & set(containers(data))


def test_rendered_texts_are_those_of_each_template() -> None:
    texts = [("zh", expr.compile_template("欢迎：{{ customer.name }}")), ("en", expr.compile_template("Hi {{ customer.name }}")),
             ("xx", expr.compile_template("plain"))]
    context = {"customer": {"name": "王"}}
    assert interpreter._rendered(texts, context) == {lang: template.render(context) for lang, template in texts}
    assert list(interpreter._rendered(texts, context)) == ["zh", "en", "xx"]


@pytest.mark.parametrize("wait", [None, {"kind": "task", "timers": False}, {"kind": "timer", "timers": True},
                                  {"kind": "action"}])
@pytest.mark.parametrize("next_step", [None, "after"])
def test_leaving_a_step_is_logging_it_and_moving_on(wait: dict[str, Any] | None, next_step: str | None) -> None:
    flow = load_flow_text(UPDATES, "t.yaml")
    step = Step(id="here", type="set", next=next_step)
    runs = []
    for leave in (True, False):
        state = start_state(flow)
        state["tokens"]["t1"] = {"step": "here", "gen": 3, "wait": copy.deepcopy(wait), "splits": []}
        run = interpreter._Run(flow, state, Context(NOW, {"id": 9}, None))
        if leave:
            run.leave("t1", step)
        else:
            run.history.append({"type": "step_completed", "step": step.id, "token": "t1"})
            run.move("t1", step.next or "")
        runs.append((run.state, run.effects, run.history, run.ready))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("data", [{}, {"a": 1}, {"a": {"b": [1]}}])
def test_start_data_lands_in_the_variables(data: dict[str, Any]) -> None:
    flow = load_flow_text(UPDATES, "t.yaml")
    out = advance(flow, start_state(flow), ev.Start(data, {"type": "manual"}), Context(NOW, {"id": 9}, {"id": 1}))
    assert {key: out.state["vars"][key] for key in data} == data
    if data:
        assert out.state["vars"] is not data
    with pytest.raises(TypeError):
        advance(flow, start_state(flow), ev.Start(None, {"type": "manual"}), Context(NOW, {"id": 9}, {"id": 1}))  # type: ignore[arg-type]

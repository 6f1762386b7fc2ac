"""The pure interpreter, with plain data: no database, no Flask; state round-trips through JSON."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from engine.flow.loader import load_flow_text
from engine.flow.model import Flow
from engine.runtime import effects as fx
from engine.runtime import events as ev
from engine.runtime.interpreter import Context, Outcome, advance, start_state
from engine.runtime.state import SCHEMA_VERSION, load_state

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)  # 09:00 Shanghai, a Tuesday


def flow(text: str) -> Flow:
    return load_flow_text("id: t\nname: T\n" + text, "t.yaml")


class Driver:
    """Feeds events and keeps the state, checking that it survives a JSON round trip each step."""

    def __init__(self, f: Flow, customer: dict[str, Any] | None = None, pick: Any = None):
        self.flow = f
        self.state: dict[str, Any] = start_state(f)
        self.customer = customer
        self.pick = pick
        self.now = NOW
        self.effects: list[fx.Effect] = []

    def send(self, event: ev.Event) -> Outcome:
        ctx = Context(now=self.now, instance={"id": 7, "flow": self.flow.id, "started_at": NOW.isoformat()},
                      customer=self.customer, pick_user=self.pick)
        out = advance(self.flow, self.state, event, ctx)
        self.state = load_state(json.loads(json.dumps(out.state)))
        self.customer = out.customer
        self.effects = out.effects
        return out

    def token_at(self, step: str) -> tuple[str, int]:
        for tid, t in self.state["tokens"].items():
            if t["step"] == step:
                return tid, t["gen"]
        raise AssertionError(f"no token at {step}: {self.state['tokens']}")

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.effects if isinstance(e, kind)]


PARALLEL = """
steps:
  - id: split
    type: parallel
    branches: [call, mail]
  - id: call
    type: task
    form: f
    assignee: {role: r}
    next: meet
  - id: mail
    type: action
    connector: email
    params: {text: "hi {{ customer.name }}"}
    next: meet
  - id: meet
    type: join
    next: done
  - id: done
    type: end
"""


def test_parallel_split_waits_for_every_branch_at_the_join() -> None:
    d = Driver(flow(PARALLEL), customer={"name": "张三"})
    d.send(ev.Start())
    sends = d.of(fx.SendMessage)
    assert [s.params["text"] for s in sends] == ["hi 张三"]
    assert sends[0].effect_key == "7:mail:1"
    assert d.state["status"] == "running"  # the mail branch waits at the join for the call branch
    tid, gen = d.token_at("call")
    out = d.send(ev.TaskDone(tid, gen, {"ok": True}, "u"))
    assert (out.state["status"], out.state["outcome"]) == ("completed", "completed")
    assert out.state["splits"] == {}


def test_a_stale_task_answer_or_timer_is_ignored() -> None:
    d = Driver(flow(PARALLEL))
    d.send(ev.Start())
    tid, gen = d.token_at("call")
    out = d.send(ev.TaskDone(tid, gen + 1, {}, "u"))
    assert out.state["status"] == "running"
    assert out.history[-1]["reason"] == "stale"
    out = d.send(ev.TimerFired(tid, gen + 5, "task_timeout", {}))
    assert out.history[-1]["reason"] == "stale timer"


TASK = """
steps:
  - id: review
    type: task
    form: f
    title: {zh: "审批 {{ customer.name }}", en: "Review {{ customer.name }}"}
    assignee: {users: [a, b], role: r}
    approval: all
    due: {business_days: 2}
    reminders:
      - before: {hours: 4}
      - after: {hours: 1}
    escalation:
      - after: {hours: 8}
        to_role: lead
    on_timeout:
      after: {days: 10}
      next: timed_out
    next: done
  - id: done
    type: end
  - id: timed_out
    type: end
    outcome: timed_out
"""


def test_task_with_all_approval_due_reminders_escalation_and_timeout() -> None:
    d = Driver(flow(TASK), customer={"name": "李四"})
    d.send(ev.Start())
    tasks = d.of(fx.CreateTask)
    assert [t.assignee["user"] for t in tasks] == ["a", "b"]
    assert tasks[0].title == {"zh": "审批 李四", "en": "Review 李四"}
    due = datetime(2026, 11, 26, 1, 0, tzinfo=timezone.utc)  # Thursday 09:00 Shanghai
    assert tasks[0].due_at == due
    timers = {(t.kind, t.data.get("when")): t.due_at for t in d.of(fx.SetTimer)}
    assert timers == {
        ("task_reminder", "before"): due - timedelta(hours=4),
        ("task_reminder", "after"): due + timedelta(hours=1),
        ("task_escalation", None): due + timedelta(hours=8),
        ("task_timeout", None): NOW + timedelta(days=10),
    }
    tid, gen = d.token_at("review")
    d.send(ev.TimerFired(tid, gen, "task_escalation", {"to_role": "lead", "level": 1}))
    assert d.of(fx.EscalateTasks) == [fx.EscalateTasks(tid, "lead", 1)]
    d.send(ev.TaskDone(tid, gen, {"ok": 1}, "a"))
    assert d.state["status"] == "running"  # one of two approvals
    out = d.send(ev.TaskDone(tid, gen, {"ok": 2}, "b"))
    assert out.state["outcome"] == "completed"
    assert [a["by"] for a in out.state["vars"]["review_approvals"]] == ["a", "b"]
    assert any(isinstance(e, fx.CancelTimers) for e in out.effects)


def test_task_timeout_moves_on_and_cancels_the_task() -> None:
    d = Driver(flow(TASK), customer={"name": "x"})
    d.send(ev.Start())
    tid, gen = d.token_at("review")
    out = d.send(ev.TimerFired(tid, gen, "task_timeout", {}))
    assert out.state["outcome"] == "timed_out"
    assert fx.CancelTasks(tid, reason="timeout") in out.effects


def test_a_failing_step_becomes_an_incident_that_can_be_retried_or_skipped() -> None:
    text = """
steps:
  - id: choose
    type: decision
    cases:
      - when: "customer.grade == 'A'"
        next: vip
    default: done
  - id: vip
    type: end
    outcome: vip
  - id: done
    type: end
"""
    d = Driver(flow(text), customer={})
    out = d.send(ev.Start())
    assert out.state["status"] == "running"
    [incident] = d.of(fx.RaiseIncident)
    assert incident.step == "choose" and "grade" in incident.message
    d.customer = {"grade": "A"}
    out = d.send(ev.Retry(incident.token))
    assert out.state["outcome"] == "vip"

    d = Driver(flow(text), customer={})
    d.send(ev.Start())
    out = d.send(ev.Skip(d.of(fx.RaiseIncident)[0].token))
    assert out.state["outcome"] == "completed"  # a skipped decision takes its default branch


def test_goal_ends_the_instance_early() -> None:
    text = """
goal: {event: replied, outcome: replied}
steps:
  - id: pause
    type: wait
    duration: {days: 3}
    next: done
  - id: done
    type: end
"""
    d = Driver(flow(text))
    d.send(ev.Start())
    out = d.send(ev.Message("replied", {"text": "ok"}))
    assert (out.state["status"], out.state["outcome"]) == ("completed", "replied")
    assert fx.CancelTimers(None) in out.effects


def test_wait_for_event_with_timeout_and_until() -> None:
    text = """
steps:
  - id: until
    type: wait
    until: "vars.when"
    next: reply
  - id: reply
    type: wait
    event: replied
    timeout: {hours: 2}
    on_timeout: late
    next: done
  - id: done
    type: end
  - id: late
    type: end
    outcome: late
"""
    d = Driver(flow(text))
    d.send(ev.Start({"when": "2026-12-01T09:30:00"}))
    [timer] = d.of(fx.SetTimer)
    assert timer.due_at == datetime(2026, 12, 1, 1, 30, tzinfo=timezone.utc)  # naive → flow time zone
    tid, gen = d.token_at("until")
    d.send(ev.TimerFired(tid, gen, "wait", {}))
    tid, gen = d.token_at("reply")
    out = d.send(ev.TimerFired(tid, gen, "event_timeout", {}))
    assert out.state["outcome"] == "late"


def test_a_runaway_loop_stops_as_an_incident() -> None:
    text = """
steps:
  - id: again
    type: set
    values: {n: "{{ vars.n + 1 }}"}
    next: check
  - id: check
    type: decision
    cases:
      - when: "vars.n < 0"
        next: done
    default: pause
  - id: pause
    type: wait
    duration: {minutes: 1}
    next: again
  - id: done
    type: end
"""
    d = Driver(flow(text))
    d.send(ev.Start({"n": 0}))
    assert d.state["vars"]["n"] == 1 and d.token_at("pause")


def test_assign_owner_and_update_customer_are_seen_by_later_steps() -> None:
    text = """
steps:
  - id: owner
    type: assign_owner
    role: account_manager
    next: grade
  - id: grade
    type: update_customer
    fields: {grade: "{{ 'A' if customer.value > 10 else 'C' }}"}
    add_tags: [vip]
    next: call
  - id: call
    type: task
    form: f
    assignee: {expr: customer.owner}
    next: done
  - id: done
    type: end
"""
    d = Driver(flow(text), customer={"value": 50, "tags": []}, pick=lambda role, strategy, c: f"{role}-1")
    d.send(ev.Start())
    assert d.customer == {"value": 50, "tags": ["vip"], "owner": "account_manager-1", "grade": "A"}
    assert d.of(fx.CreateTask)[0].assignee["user"] == "account_manager-1"
    assert fx.UpdateCustomer({"grade": "A"}, ("vip",), (), {}) in d.effects


def test_cancel_ends_and_cancels_everything() -> None:
    d = Driver(flow(PARALLEL))
    d.send(ev.Start())
    out = d.send(ev.Cancel("customer asked"))
    assert (out.state["status"], out.state["tokens"]) == ("cancelled", {})
    assert fx.CancelTasks(None, reason="customer asked") in out.effects
    out = d.send(ev.Message("x"))
    assert out.history[-1]["type"] == "ignored"


def test_stored_state_versions() -> None:
    state = start_state(flow(PARALLEL))
    assert state["schema_version"] == SCHEMA_VERSION
    with pytest.raises(ValueError, match="newer"):
        load_state({**state, "schema_version": SCHEMA_VERSION + 1})


def test_message_text_is_chosen_in_the_customers_language() -> None:
    text = """
steps:
  - id: hello
    type: action
    connector: email
    params:
      subject: {zh: "您好 {{ customer.name }}", en: "Hello {{ customer.name }}"}
      text: "same for all"
    next: done
  - id: done
    type: end
"""
    for language, subject in (("en", "Hello Li"), ("zh", "您好 Li"), (None, "您好 Li")):
        d = Driver(flow(text), customer={"name": "Li", "language": language})
        d.send(ev.Start())
        assert d.of(fx.SendMessage)[0].params == {"subject": subject, "text": "same for all"}


def test_named_people_with_any_approval_each_get_a_task() -> None:
    text = """
steps:
  - id: check
    type: task
    form: f
    assignee: {users: [wang, li]}
    next: done
  - id: done
    type: end
"""
    d = Driver(flow(text))
    d.send(ev.Start())
    assert [(t.assignee["user"], t.approval) for t in d.of(fx.CreateTask)] == [("wang", "any"), ("li", "any")]
    tid, gen = d.token_at("check")
    out = d.send(ev.TaskDone(tid, gen, {}, "li"))
    assert out.state["outcome"] == "completed"
    assert fx.CancelTasks(tid, reason="completed_by_other") in out.effects


def test_computed_dates_are_stored_as_text_and_bad_profile_values_are_incidents() -> None:
    text = """
steps:
  - id: remember
    type: set
    values: {follow_up_on: "{{ now | add_days(3) }}"}
    next: grade
  - id: grade
    type: update_customer
    fields: {grade: "D"}
    next: done
  - id: done
    type: end
"""
    d = Driver(flow(text), customer={"grade": "A"})
    out = d.send(ev.Start())
    assert out.state["vars"]["follow_up_on"] == (NOW + timedelta(days=3)).isoformat()
    [incident] = d.of(fx.RaiseIncident)
    assert incident.step == "grade" and "'D' is not one of A, B, C" in incident.message
    assert d.customer == {"grade": "A"}


VERSIONED = """
steps:
  - id: grade
    type: update_customer
    fields: {grade: "{{ '%s' }}"}
    timeline: {zh: "{{ customer.name }} %s", en: "%s"}
    next: done
  - id: done
    type: end
"""


def test_each_version_of_a_flow_runs_its_own_step_definitions() -> None:
    """Steps of a redeployed flow have the same ids as before: each version still renders its own."""
    versions = [flow(VERSIONED % (grade, grade, grade)) for grade in ("A", "B", "C")]
    for f, grade in [*zip(versions, "ABC", strict=True), (versions[0], "A"), (versions[2], "C")]:
        d = Driver(f, customer={"name": "张三"})
        out = d.send(ev.Start())
        [update] = d.of(fx.UpdateCustomer)
        assert out.customer["grade"] == grade and update.note == {"zh": f"张三 {grade}", "en": grade}


def test_a_decision_tries_its_cases_in_order_even_when_a_later_one_is_broken() -> None:
    """A case after the one that holds is never compiled, as before step definitions were kept compiled."""
    import dataclasses

    from engine.flow.model import Case

    text = """
steps:
  - id: choose
    type: decision
    cases:
      - when: "customer.grade == 'A'"
        next: vip
    default: done
  - id: vip
    type: end
    outcome: vip
  - id: done
    type: end
"""
    f = flow(text)
    choose = f.steps["choose"]
    broken = dataclasses.replace(choose, cases=(*choose.cases, Case(when="1 +* 2", next="done")))
    f = dataclasses.replace(f, steps={**f.steps, "choose": broken})
    assert Driver(f, customer={"grade": "A"}).send(ev.Start()).state["outcome"] == "vip"
    d = Driver(f, customer={"grade": "B"})
    assert d.send(ev.Start()).state["status"] == "running"
    [incident] = d.of(fx.RaiseIncident)
    assert incident.step == "choose" and "syntax error" in incident.message


SINGLE_TASK = """
steps:
  - id: check
    type: task
    form: f
    assignee: {user: wang}
    next: done
  - id: done
    type: end
"""


def test_answering_the_only_task_of_a_step_cancels_nothing() -> None:
    d = Driver(flow(SINGLE_TASK))
    d.send(ev.Start())
    assert len(d.of(fx.CreateTask)) == 1
    tid, gen = d.token_at("check")
    out = d.send(ev.TaskDone(tid, gen, {}, "wang"))
    assert out.state["outcome"] == "completed"
    assert not [e for e in out.effects if isinstance(e, fx.CancelTasks)]


def test_a_task_wait_saved_without_its_task_count_still_cancels_the_others() -> None:
    d = Driver(flow(SINGLE_TASK))
    d.send(ev.Start())
    tid, gen = d.token_at("check")
    del d.state["tokens"][tid]["wait"]["tasks"]  # as a state written before the count was kept
    out = d.send(ev.TaskDone(tid, gen, {}, "wang"))
    assert fx.CancelTasks(tid, reason="completed_by_other") in out.effects


def test_a_task_step_that_fails_after_making_its_task_leaves_no_task() -> None:
    """The escalation time cannot be worked out (no working day in over a year): the step becomes
    an incident without the task it made first, so a retry does not leave a second one open."""
    from engine.calendar import BusinessCalendar

    text = """
steps:
  - id: review
    type: task
    form: f
    assignee: {user: wang}
    due: {hours: 4}
    escalation:
      - after: {business_days: 1}
        to_role: lead
    next: done
  - id: done
    type: end
"""
    days_off = {NOW.date() + timedelta(days=n): False for n in range(400)}
    ctx = Context(now=NOW, instance={"id": 7, "flow": "t", "started_at": NOW.isoformat()},
                  calendar=BusinessCalendar(overrides=days_off))
    out = advance(flow(text), start_state(flow(text)), ev.Start(), ctx)
    assert [type(e) for e in out.effects] == [fx.RaiseIncident]
    assert "no working day" in out.effects[0].message

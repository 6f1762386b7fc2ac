"""``advance`` copies only what it changes: the input state, customer and event data stay as they were.

The interpreter shares the unchanged parts of the input state with its output instead of deep
copying it; these tests drive every in-place change it makes (tokens, waits, splits, visits,
approvals, customer) and check, after each event, that the inputs were left untouched and that
the output has no container in common with the input that a later event could change.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from typing import Any

from engine.flow.loader import load_flow_text
from engine.flow.model import Flow
from engine.runtime import events as ev
from engine.runtime.interpreter import Context, Outcome, advance, start_state

NOW = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)

FLOW = """
variables: {seen: {count: 0, names: [a]}}
steps:
  - id: split
    type: parallel
    branches: [review, mail]
  - id: review
    type: task
    form: f
    title: {zh: "审批 {{ customer.name }}", en: "Review"}
    assignee: {users: [a, b], role: r}
    approval: all
    due: {business_days: 2}
    reminders:
      - after: {hours: 1}
    next: meet
  - id: mail
    type: update_customer
    fields: {grade: "A"}
    add_tags: [vip]
    remove_tags: [old]
    next: meet
  - id: meet
    type: join
    next: reply
  - id: reply
    type: wait
    event: replied
    timeout: {hours: 2}
    on_timeout: done
    next: done
  - id: done
    type: end
"""


def _flow(text: str) -> Flow:
    return load_flow_text("id: t\nname: T\n" + text, "t.yaml")


def _token_at(state: dict[str, Any], step: str) -> tuple[str, int]:
    for tid, token in state["tokens"].items():
        if token["step"] == step:
            return tid, token["gen"]
    raise AssertionError(f"no token at {step}")


def _containers(value: Any, found: dict[int, Any]) -> dict[int, Any]:
    """Every dict and list inside value, by id."""
    if isinstance(value, (dict, list)):
        found[id(value)] = value
        for item in value.values() if isinstance(value, dict) else value:
            _containers(item, found)
    return found


def _pure_advance(f: Flow, state: dict[str, Any], event: ev.Event, customer: dict[str, Any]) -> Outcome:
    before_state, before_customer, before_event = copy.deepcopy(state), copy.deepcopy(customer), copy.deepcopy(event)
    ctx = Context(now=NOW, instance={"id": 1, "flow": "t", "started_at": NOW.isoformat()}, customer=customer)
    out = advance(f, state, event, ctx)
    assert state == before_state, "advance changed its input state"
    assert customer == before_customer, "advance changed its input customer"
    assert event == before_event, "advance changed the event"
    # What the output shares with the input must be what no later run changes in place: the
    # containers a run changes (state, vars, tokens, waits, splits, visits) are never shared.
    shared = set(_containers(state, {})) & set(_containers(out.state, {}))
    changeable = [out.state, out.state["vars"], out.state["visits"], out.state["tokens"], out.state["splits"]]
    changeable += list(out.state["tokens"].values()) + [t["wait"] for t in out.state["tokens"].values() if t["wait"]]
    changeable += list(out.state["splits"].values()) + [s["arrived"] for s in out.state["splits"].values()]
    assert not shared & {id(c) for c in changeable}
    assert out.customer is not customer
    return out


def test_every_event_leaves_its_inputs_as_they_were() -> None:
    f = _flow(FLOW)
    customer = {"name": "张三", "tags": ["old", "x"], "consent": {"sms": True}}
    state = start_state(f)
    out = _pure_advance(f, state, ev.Start({"extra": {"deep": [1, 2]}}), customer)
    assert out.state["splits"] and out.customer["tags"] == ["x", "vip"]
    state, customer = out.state, out.customer
    tid, gen = _token_at(state, "review")
    out = _pure_advance(f, state, ev.TimerFired(tid, gen, "task_reminder", {"when": "after"}), customer)
    state = out.state
    out = _pure_advance(f, state, ev.TaskDone(tid, gen, {"ok": 1, "list": [1]}, "a", 1), customer)
    assert out.state["tokens"][tid]["wait"]["pending"] == 1
    assert state["tokens"][tid]["wait"]["pending"] == 2
    state = out.state
    out = _pure_advance(f, state, ev.TaskDone(tid, gen, {"ok": 2}, "b", 2), customer)
    assert [a["by"] for a in out.state["vars"]["review_approvals"]] == ["a", "b"]
    assert [a["by"] for a in state["vars"]["review_approvals"]] == ["a"]
    assert out.state["splits"] == {}
    state = out.state
    out = _pure_advance(f, state, ev.Message("replied", {"text": "ok"}), customer)
    assert (out.state["status"], out.state["outcome"]) == ("completed", "completed")
    assert out.state["vars"]["replied"] == {"text": "ok"}


def test_the_same_input_gives_the_same_outcome_twice() -> None:
    f = _flow(FLOW)
    customer = {"name": "李四", "tags": []}
    first = _pure_advance(f, start_state(f), ev.Start(), customer)
    again = _pure_advance(f, first.state, ev.Cancel("stop"), customer)
    once_more = _pure_advance(f, first.state, ev.Cancel("stop"), customer)
    assert json.dumps(again.state, sort_keys=True) == json.dumps(once_more.state, sort_keys=True)
    assert again.effects == once_more.effects and again.history == once_more.history

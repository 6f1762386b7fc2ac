"""What the request path remembers between calls gives what computing it afresh gives.

Due times are remembered per calendar object, compiled value templates per source text; several
column values are committed to a loaded object at once; an instance's run builds the context of its
expressions once. Each must answer exactly as before, whatever was remembered.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from engine import expr
from engine.calendar import BusinessCalendar
from engine.errors import ExpressionError
from engine.flow.loader import load_flow_text
from engine.flow.model import Duration
from engine.runtime import events as ev
from engine.runtime.interpreter import Context, advance, start_state
from engine.runtime.timing import add_duration
from engine.store.instances import set_committed_values
from engine.store.models import Customer

FRIDAY = datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc)  # 09:00 Shanghai


def test_due_times_follow_the_calendar_they_are_asked_with() -> None:
    two_days = Duration(business_days=2)
    plain = BusinessCalendar()
    monday_off = BusinessCalendar(overrides={date(2026, 11, 30): False})
    assert add_duration(FRIDAY, two_days, "Asia/Shanghai", plain) == datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
    # The same start and duration on another calendar: its own answer, not the one just remembered.
    assert add_duration(FRIDAY, two_days, "Asia/Shanghai", monday_off) == datetime(2026, 12, 2, 1, 0, tzinfo=timezone.utc)
    assert add_duration(FRIDAY, two_days, "Asia/Shanghai", plain) == datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
    # Another time zone moves the local date, and so the answer.
    assert add_duration(FRIDAY, two_days, "UTC", plain) == datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
    assert add_duration(datetime(2026, 11, 27, 20, 0, tzinfo=timezone.utc), two_days, "Asia/Shanghai", plain) == \
        datetime(2026, 12, 1, 20, 0, tzinfo=timezone.utc)  # Saturday 04:00 local: from Monday


def test_equal_starts_in_other_zones_add_up_on_their_own_clocks() -> None:
    new_york = ZoneInfo("America/New_York")
    one_day = Duration(days=1)
    utc_start = datetime(2026, 3, 8, 6, 0, tzinfo=timezone.utc)  # 01:00 in New York, the night clocks go forward
    local_start = utc_start.astimezone(new_york)
    assert local_start == utc_start
    calendar = BusinessCalendar()
    assert add_duration(utc_start, one_day, "UTC", calendar) == datetime(2026, 3, 9, 6, 0, tzinfo=timezone.utc)
    # A day on New York's wall clock is 23 hours that night: not the answer just given for the equal UTC start.
    assert add_duration(local_start, one_day, "UTC", calendar) == datetime(2026, 3, 9, 5, 0, tzinfo=timezone.utc)


def test_a_remembered_template_renders_each_context_afresh() -> None:
    source = "{{ customer.name }}：欢迎"
    assert expr.render_value({"text": source}, {"customer": {"name": "张三"}}) == {"text": "张三：欢迎"}
    assert expr.render_value({"text": source}, {"customer": {"name": "李四"}}) == {"text": "李四：欢迎"}
    assert expr.render_value("{{ vars.n }}", {"vars": {"n": 3}}) == 3
    assert expr.render_value("{{ vars.n }}", {"vars": {"n": 4}}) == 4


def test_a_bad_template_fails_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ExpressionError):
            expr.render_value("{{ customer.name ", {"customer": {"name": "x"}})
        with pytest.raises(ExpressionError):
            expr.render_value("{{ x }}" + " " * expr.MAX_SOURCE_CHARS, {"x": 1})


def _detached_customer() -> Customer:
    customer = Customer()
    customer.__dict__.update(id=5, name="a", phone="+8613800138000", grade=None, tags=[])
    make_transient_to_detached(customer)
    return customer


def _state_of(obj: Any) -> tuple[Any, ...]:
    state = inspect(obj)
    return ({k: v for k, v in obj.__dict__.items() if k != "_sa_instance_state"}, dict(state.committed_state),
            set(state.expired_attributes), state.modified, state.attrs.grade.history, state.attrs.tags.history)


def test_committing_several_values_at_once_leaves_the_object_as_one_at_a_time() -> None:
    one_by_one, at_once = _detached_customer(), _detached_customer()
    for obj in (one_by_one, at_once):
        obj.grade = "B"  # an unflushed change, which committing a new value discards
        inspect(obj).expired_attributes.add("region")
    values = {"grade": "A", "tags": ["vip"], "region": "北京"}
    for key, value in values.items():
        set_committed_value(one_by_one, key, value)
    set_committed_values(at_once, values)
    assert _state_of(at_once) == _state_of(one_by_one)
    assert at_once.grade == "A" and inspect(at_once).attrs.grade.history.unchanged == ["A"]


FLOW = """
id: ctx
name: Context
steps:
  - id: first
    type: update_customer
    fields: {name: "{{ customer.name | default('nobody') }}-1"}
    next: second
  - id: second
    type: set
    values: {seen: "{{ customer.name }}", step: "{{ vars.step | default(0) }}"}
    next: done
  - id: done
    type: end
"""


@pytest.mark.parametrize("customer", [{}, {"name": "张三"}])
def test_later_steps_see_the_customer_as_earlier_steps_left_it(customer: dict[str, Any]) -> None:
    flow = load_flow_text(FLOW, "ctx.yaml")
    ctx = Context(now=FRIDAY, instance={"id": 1, "flow": "ctx", "started_at": FRIDAY.isoformat()}, customer=customer)
    outcome = advance(flow, start_state(flow), ev.Start({"step": 7}, {}), ctx)
    expected = f"{customer.get('name', 'nobody')}-1"
    assert outcome.customer == {**customer, "name": expected}
    assert outcome.state["vars"]["seen"] == expected and outcome.state["vars"]["step"] == 7
    assert customer == ({} if not customer else {"name": "张三"})  # the caller's dict is left as it was

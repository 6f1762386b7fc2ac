"""The interpreter: advance an instance's state by one event until every token waits.

``advance(flow, state, event, ctx)`` is pure: it returns the new state and the effects to apply
as data. Tokens are positions in the flow; a token stops at a wait state (task, wait, subflow,
an action that waits for delivery, a join waiting for its siblings, or an incident).

Rules worth knowing when reading the flows:

* an ``end`` step ends the whole instance, cancelling any other token;
* every move of a token bumps its ``gen``; a timer or task answer carrying an older ``gen`` is
  stale and ignored, so a late timer can never move a token that has already moved on;
* a step that fails (an expression error, nobody in a role) parks its token in an incident that
  an admin can retry or skip; nothing is lost.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from engine import expr
from engine.calendar import BusinessCalendar
from engine.errors import ExpressionError
from engine.flow.model import Flow, Step
from engine.profile import CHOICES, choice_problems
from engine.runtime import effects as fx
from engine.runtime import events as ev
from engine.runtime.state import Status, check_transition, new_state
from engine.runtime.timing import add_duration, subtract_duration

#: Steps one advance may run before it is treated as a runaway loop.
MAX_STEPS_PER_ADVANCE = 1000

PickUser = Callable[[str, str, Mapping[str, Any]], str | None]

_RUNNING = Status.RUNNING.value  # read after every step: an Enum's .value is a slow property
_STATUSES = {status.value: status for status in Status}  # Status(value), without the Enum call's cost
_VALUE_OF = {status: status.value for status in Status}


class StepFailed(Exception):
    """Raised inside the interpreter when a step cannot run; becomes an incident."""


@dataclass
class Context:
    """What the interpreter may read of the world during one advance."""

    now: datetime
    instance: Mapping[str, Any]
    customer: dict[str, Any] | None = None
    calendar: BusinessCalendar = field(default_factory=BusinessCalendar)
    pick_user: PickUser | None = None


@dataclass
class Outcome:
    state: dict[str, Any]
    effects: list[fx.Effect]
    history: list[dict[str, Any]]
    customer: dict[str, Any] | None

    @property
    def status(self) -> Status:
        return Status(self.state["status"])


def start_state(flow: Flow) -> dict[str, Any]:
    return new_state(flow.variables)


def advance(flow: Flow, state: Mapping[str, Any], event: ev.Event, ctx: Context) -> Outcome:
    """React to one event; the input state is not modified."""
    run = _Run(flow, _working_copy(state), ctx)
    run.handle(event)
    return Outcome(run.state, run.effects, run.history, run.customer)


def _working_copy(state: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``state`` that a run may change without touching the original.

    Copied are exactly the containers the run changes in place: the state, its variables, visits,
    tokens (each token and its wait) and splits (each split and its arrival list). Everything
    else, the variables' values above all, is shared: a run only ever replaces those, never
    changes them (see ``_Run.own_var``). Much cheaper than a deep copy of a large state.
    """
    work = dict(state)
    for key in ("vars", "visits"):
        if key in work:
            work[key] = dict(work[key])
    tokens, splits = work.get("tokens"), work.get("splits")
    if tokens is not None:
        work["tokens"] = {tid: _token_copy(token) for tid, token in tokens.items()} if tokens else {}
    if splits is not None:  # none but while parallel branches run
        work["splits"] = {sid: _split_copy(split) for sid, split in splits.items()} if splits else {}
    return work


def _token_copy(token: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(token)
    if copied.get("wait"):
        copied["wait"] = dict(copied["wait"])
    return copied


def _split_copy(split: Mapping[str, Any]) -> dict[str, Any]:
    copied = dict(split)
    if "arrived" in copied:
        copied["arrived"] = list(copied["arrived"])
    return copied


class _Run:
    def __init__(self, flow: Flow, state: dict[str, Any], ctx: Context):
        self.flow = flow
        self.state = state
        self.ctx = ctx
        # Only ever changed at the top level (keys replaced, never values changed in place).
        self.customer = dict(ctx.customer) if ctx.customer is not None else None
        self.effects: list[fx.Effect] = []
        self.history: list[dict[str, Any]] = []
        self.ready: list[str] = []
        self.steps_run = 0
        self._context: dict[str, Any] | None = None

    # ----- bookkeeping -------------------------------------------------------------------

    @property
    def tokens(self) -> dict[str, dict[str, Any]]:
        return self.state["tokens"]  # type: ignore[no-any-return]

    @property
    def running(self) -> bool:
        return self.state["status"] == _RUNNING

    def own_var(self, name: str, default: Any) -> Any:
        """A variable's value that this run may change in place: a copy of the one in the input
        state, which the run shares (see ``_working_copy``) and must leave as it was."""
        variables = self.state["vars"]
        variables[name] = copy.copy(variables.setdefault(name, default))
        return variables[name]

    def log(self, kind: str, **data: Any) -> None:
        self.history.append({"type": kind, **data})

    def new_token(self, step: str, splits: list[str]) -> str:
        self.state["seq"] += 1
        tid = f"t{self.state['seq']}"
        self.tokens[tid] = {"step": step, "gen": 0, "wait": None, "splits": splits}
        self.ready.append(tid)
        return tid

    def move(self, tid: str, step: str) -> None:
        token = self.state["tokens"][tid]
        wait = token["wait"]
        if wait and wait.get("timers"):
            self.effects.append(fx.CancelTimers(tid))
        token["step"] = step
        token["gen"] += 1
        token["wait"] = None
        self.ready.append(tid)

    def park(self, tid: str, wait: dict[str, Any]) -> None:
        self.state["tokens"][tid]["wait"] = wait

    def context(self) -> dict[str, Any]:
        """What expressions and templates see. Built once per run: the customer and the variables
        are changed in place, never replaced, and evaluation only reads the context (the sandbox
        is immutable, and Jinja evaluates in a copy of it)."""
        context = self._context
        if context is None:
            context = self._context = {
                # The run's own customer dict even when empty: an update later in the run shows.
                "customer": self.customer if self.customer is not None else {},
                "vars": self.state["vars"],
                "instance": dict(self.ctx.instance),
                "now": self.ctx.now,
            }
        return context

    def finish(self, outcome: str, status: Status = Status.COMPLETED) -> None:
        current = self.state["status"]
        check_transition(_STATUSES.get(current) or Status(current), status)
        value = _VALUE_OF[status]
        self.state["status"] = value
        self.state["outcome"] = outcome
        tokens = self.state["tokens"]
        for token in tokens.values():
            if token["wait"]:  # some token waits: its tasks and timers go
                self.effects.append(fx.CancelTasks(None, reason=outcome))
                self.effects.append(fx.CancelTimers(None))
                break
        tokens.clear()
        self.ready.clear()
        self.history.append({"type": "instance_ended", "outcome": outcome, "status": value})

    # ----- events --------------------------------------------------------------------------

    def handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.Start):
            data = event.data
            if not (type(data) is dict and not data):  # most starts carry no data
                self.state["vars"].update(_copied(_as_dict(data)))
            self.history.append({"type": "instance_started", "trigger": dict(event.trigger)})
            self.new_token(self.flow.start, [])
        elif self.state["status"] != _RUNNING:
            self.log("ignored", reason=f"instance is {self.state['status']}", event=type(event).__name__)
            return
        elif isinstance(event, ev.Cancel):
            self.finish(event.reason, Status.CANCELLED)
            return
        elif isinstance(event, ev.Message):
            self.on_message(event)
        elif isinstance(event, (ev.Retry, ev.Skip)):
            self.on_admin(event)
        else:
            self.on_token_event(event)
        self.run_ready()
        self.check_goal()

    def current(self, tid: str, gen: int, kind: str) -> dict[str, Any] | None:
        """The token if it still waits as the event expects; stale events get None."""
        token = self.tokens.get(tid)
        if token is None or token["gen"] != gen or not token["wait"] or token["wait"]["kind"] != kind:
            return None
        return token

    def on_token_event(self, event: ev.Event) -> None:
        kinds = _WAIT_KINDS
        if isinstance(event, ev.TimerFired):
            self.on_timer(event)
            return
        token = self.current(event.token, event.gen, kinds[type(event)])  # type: ignore[attr-defined]
        if token is None:
            self.log("ignored", reason="stale", event=type(event).__name__, token=event.token)  # type: ignore[attr-defined]
            return
        step = self.flow.step(token["step"])
        tid = event.token  # type: ignore[attr-defined]
        if isinstance(event, ev.TaskDone):
            self.on_task_done(tid, token, step, event)
        elif isinstance(event, ev.SendBack):
            self.effects.append(fx.CancelTasks(tid, reason="sent_back"))
            self.state["vars"]["_sent_back"] = {"from": step.id, "comment": event.comment, "by": event.user}
            self.log("sent_back", step=step.id, to=event.to_step, by=event.user, comment=event.comment)
            self.move(tid, event.to_step)
        elif isinstance(event, ev.ActionDone):
            if step.result:
                self.state["vars"][step.result] = dict(event.result)
            self.log("step_completed", step=step.id, token=tid)
            self.move(tid, step.next or "")
        elif isinstance(event, ev.ActionFailed):
            self.incident(tid, step, event.message, raise_effect=False)
        elif isinstance(event, ev.SubflowDone):
            self.state["vars"][step.result_name] = {"outcome": event.outcome, **dict(event.variables)}
            self.log("step_completed", step=step.id, token=tid, outcome=event.outcome)
            self.move(tid, step.next or "")

    def on_task_done(self, tid: str, token: dict[str, Any], step: Step, event: ev.TaskDone) -> None:
        wait = token["wait"]
        answer = _copied(_as_dict(event.data))
        self.state["vars"][step.result_name] = answer
        self.history.append({"type": "task_completed", "step": step.id, "token": tid, "by": event.user, "task": event.task_id})
        if wait.get("approval") == "all":
            approvals = self.own_var(f"{step.result_name}_approvals", [])
            approvals.append({"by": event.user, "data": answer})
            wait["pending"] -= 1
            if wait["pending"] > 0:
                return
        elif wait.get("tasks", 2) > 1:
            # The others' tasks for this step go. A step that made one task (the one answered) has
            # none left; a state saved before "tasks" was recorded counts as having several.
            self.effects.append(fx.CancelTasks(tid, reason="completed_by_other"))
        self.leave(tid, step)

    def on_timer(self, event: ev.TimerFired) -> None:
        token = self.tokens.get(event.token)
        if token is None or token["gen"] != event.gen or not token["wait"]:
            self.log("ignored", reason="stale timer", timer=event.kind, token=event.token)
            return
        step = self.flow.step(token["step"])
        if event.kind == "wait":
            self.log("step_completed", step=step.id, token=event.token)
            self.move(event.token, step.next or "")
        elif event.kind == "event_timeout":
            self.log("event_timeout", step=step.id, token=event.token, event=step.event)
            self.move(event.token, step.on_timeout or "")
        elif event.kind == "task_timeout":
            self.effects.append(fx.CancelTasks(event.token, reason="timeout"))
            self.log("task_timeout", step=step.id, token=event.token)
            self.move(event.token, step.timeout_next or "")
        elif event.kind == "task_reminder":
            self.effects.append(fx.RemindTasks(event.token, str(event.data.get("when", "after"))))
            self.log("task_reminder", step=step.id, token=event.token)
        elif event.kind == "task_escalation":
            level = int(event.data.get("level", 1))
            to_role = str(event.data["to_role"])
            self.effects.append(fx.EscalateTasks(event.token, to_role, level))
            self.log("task_escalated", step=step.id, token=event.token, to_role=to_role, level=level)

    def on_message(self, event: ev.Message) -> None:
        goal = self.flow.goal
        if goal and goal.event == event.name:
            self.state["vars"][event.name] = _copied(dict(event.data))
            self.log("goal_event", event=event.name)
            self.finish(goal.outcome)
            return
        matched = False
        for tid, token in list(self.tokens.items()):
            wait = token["wait"]
            if wait and wait["kind"] == "event" and wait["event"] == event.name:
                matched = True
                self.state["vars"][event.name] = _copied(dict(event.data))
                self.log("event_received", event=event.name, step=token["step"], token=tid)
                self.move(tid, self.flow.step(token["step"]).next or "")
        if not matched:
            self.log("ignored", reason="no step waits for this event", event=event.name)

    def on_admin(self, event: ev.Retry | ev.Skip) -> None:
        token = self.tokens.get(event.token)
        if token is None or not token["wait"] or token["wait"]["kind"] not in ("incident", "action"):
            self.log("ignored", reason="token is not in an incident", token=event.token)
            return
        step = self.flow.step(token["step"])
        self.effects.append(fx.ResolveIncidents(event.token, "retried" if isinstance(event, ev.Retry) else "skipped"))
        if isinstance(event, ev.Retry):
            self.log("step_retried", step=step.id, token=event.token)
            token["gen"] += 1
            token["wait"] = None
            self.ready.append(event.token)
        else:
            target = step.next or step.default or (step.cases[0].next if step.cases else None)
            self.log("step_skipped", step=step.id, token=event.token)
            if target is None:
                self.finish("skipped")
            else:
                self.move(event.token, target)

    # ----- running steps ---------------------------------------------------------------

    def run_ready(self) -> None:
        state, ready, steps, history = self.state, self.ready, self.flow.steps, self.history
        tokens = state["tokens"]  # changed in place by the steps, never replaced
        while ready and state["status"] == _RUNNING:
            tid = ready.pop(0)
            token = tokens.get(tid)
            if token is None or token["wait"]:
                continue
            self.steps_run += 1
            step = steps[token["step"]]
            if self.steps_run > MAX_STEPS_PER_ADVANCE:
                self.incident(tid, step, f"more than {MAX_STEPS_PER_ADVANCE} steps ran without waiting")
                continue
            step_id = step.id
            visits = state["visits"]
            visits[step_id] = visits.get(step_id, 0) + 1
            history.append({"type": "step_entered", "step": step_id, "token": tid})
            run = _STEP_RUNNERS.get(step.type)
            effects = len(self.effects)
            try:
                if run is None:
                    getattr(self, f"run_{step.type}")(tid, step)  # raises the AttributeError it always did
                else:
                    run(self, tid, step)
            except (ExpressionError, StepFailed, ValueError, TypeError, KeyError) as exc:
                # A failed step leaves none of its effects: a task step that made its tasks, then
                # failed to work out a reminder, would leave tasks that a retry makes again.
                del self.effects[effects:]
                self.incident(tid, step, str(exc))

    def incident(self, tid: str, step: Step, message: str, *, raise_effect: bool = True) -> None:
        self.park(tid, {"kind": "incident", "message": message})
        if raise_effect:
            # A failed delivery already has its incident, raised by the outbox.
            self.effects.append(fx.RaiseIncident(tid, step.id, message))
        self.log("incident", step=step.id, token=tid, message=message)

    def due(self, duration: Any) -> datetime:
        return add_duration(self.ctx.now, duration, self.flow.timezone, self.ctx.calendar)

    def leave(self, tid: str, step: Step) -> None:
        """The step is done: its token moves on to the next step. Most steps end so: ``move``'s body
        is repeated here to spare a call (test_interp_quick_steps.py compares the two)."""
        self.history.append({"type": "step_completed", "step": step.id, "token": tid})
        token = self.state["tokens"][tid]
        wait = token["wait"]
        if wait and wait.get("timers"):
            self.effects.append(fx.CancelTimers(tid))
        token["step"] = step.next or ""
        token["gen"] += 1
        token["wait"] = None
        self.ready.append(tid)

    def run_task(self, tid: str, step: Step) -> None:
        assert step.assignee is not None and step.form is not None
        plan = _plan(step)
        spec = plan.assignee_spec() if plan is not None else step.assignee.as_dict()
        if step.assignee.expr:
            assignee = plan.assignee if plan is not None else expr.compile_expression(step.assignee.expr)
            value = assignee.evaluate(self.context())
            if not value:
                raise StepFailed(f"assignee expression {step.assignee.expr!r} gave no user")
            if isinstance(value, (list, tuple)):
                spec["users"] = [str(v) for v in value]
            else:
                spec["user"] = str(value)
        if plan is not None:
            title = _rendered(plan.texts, self.context())
        else:
            title = {lang: expr.compile_template(t).render(self.context()) for lang, t in step.title.items()}
        if not step.due:
            due_at = None
        elif plan is not None:
            due_at = plan.due_at(self.ctx.now, self.flow.timezone, self.ctx.calendar)
        else:
            due_at = self.due(step.due)
        # Several named people each get a task: with "all" every one must answer, with "any"
        # the first answer cancels the others' tasks.
        people = spec.get("users")
        timers = False
        if people:
            for user in people:
                one = {**spec, "user": user}
                one.pop("users", None)
                self.effects.append(
                    fx.CreateTask(tid, step.id, step.form, title, one, due_at, step.approval, step.readonly, step.hidden)
                )
        else:
            self.effects.append(fx.CreateTask(tid, step.id, step.form, title, spec, due_at, "any", step.readonly, step.hidden))
        for reminder in step.reminders:
            if due_at is None:
                continue
            at = subtract_duration(due_at, reminder.offset) if reminder.before else self.add_to(due_at, reminder.offset)
            self.timer(tid, "task_reminder", at, {"when": "before" if reminder.before else "after"})
            timers = True
        for level, esc in enumerate(step.escalation, start=1):
            if due_at is not None:
                self.timer(tid, "task_escalation", self.add_to(due_at, esc.after), {"to_role": esc.to_role, "level": level})
                timers = True
        if step.timeout_after is not None:
            self.timer(tid, "task_timeout", self.due(step.timeout_after), {})
            timers = True
        all_must_answer = bool(people) and step.approval == "all"
        pending = len(people) if all_must_answer else 1
        self.park(tid, {"kind": "task", "approval": "all" if all_must_answer else "any", "pending": pending, "timers": timers,
                        "tasks": len(people) if people else 1})

    def add_to(self, start: datetime, duration: Any) -> datetime:
        return add_duration(start, duration, self.flow.timezone, self.ctx.calendar)

    def timer(self, tid: str, kind: str, at: datetime, data: Mapping[str, Any]) -> None:
        gen = self.tokens[tid]["gen"]
        self.effects.append(fx.SetTimer(tid, kind, at, {**data, "gen": gen, "step": self.tokens[tid]["step"]}))

    def run_action(self, tid: str, step: Step) -> None:
        language = (self.customer or {}).get("language") or "zh"
        plan = _plan(step)
        if plan is not None:
            params = plan.params_in(language)(self.context())
        else:
            params = expr.render_value(localize(dict(step.params), language), self.context())
        visit = self.state["visits"][step.id]
        key = f"{self.ctx.instance.get('id')}:{step.id}:{visit}"
        backoff = plan.backoff if plan is not None else _backoff_seconds(step)
        self.effects.append(
            fx.SendMessage(tid, step.id, step.connector or "", params, key, step.max_attempts, backoff, step.wait)
        )
        if step.wait:
            self.park(tid, {"kind": "action", "effect_key": key})
        else:
            self.leave(tid, step)

    def run_decision(self, tid: str, step: Step) -> None:
        ctx = self.context()
        plan = _plan(step)
        whens = plan.cases if plan is not None else [None] * len(step.cases)
        for case, when in zip(step.cases, whens):
            if (when or expr.compile_expression(case.when)).evaluate(ctx):
                self.history.append({"type": "step_completed", "step": step.id, "token": tid, "chose": case.next})
                self.move(tid, case.next)
                return
        self.history.append({"type": "step_completed", "step": step.id, "token": tid, "chose": step.default})
        self.move(tid, step.default or "")

    def run_parallel(self, tid: str, step: Step) -> None:
        token = self.tokens.pop(tid)
        split_id = f"{step.id}#{self.state['seq'] + 1}"
        self.state["splits"][split_id] = {"count": len(step.branches), "arrived": []}
        self.log("step_completed", step=step.id, token=tid)
        for branch in step.branches:
            self.new_token(branch, [*token["splits"], split_id])

    def run_join(self, tid: str, step: Step) -> None:
        token = self.tokens[tid]
        if not token["splits"]:
            raise StepFailed(f"join {step.id!r} reached without a parallel split")
        split_id = token["splits"][-1]
        split = self.state["splits"][split_id]
        split["arrived"].append(tid)
        self.park(tid, {"kind": "join"})
        if len(split["arrived"]) < split["count"]:
            return
        for arrived in split["arrived"]:
            self.tokens.pop(arrived, None)
        del self.state["splits"][split_id]
        self.log("step_completed", step=step.id, token=tid)
        self.new_token(step.next or "", token["splits"][:-1])

    def run_wait(self, tid: str, step: Step) -> None:
        if step.duration is not None:
            self.timer(tid, "wait", self.due(step.duration), {})
            self.park(tid, {"kind": "timer", "timers": True})
        elif step.until:
            value = expr.compile_expression(step.until).evaluate(self.context())
            self.timer(tid, "wait", _as_datetime(value, self.flow.timezone), {})
            self.park(tid, {"kind": "timer", "timers": True})
        else:
            wait: dict[str, Any] = {"kind": "event", "event": step.event, "timers": False}
            self.park(tid, wait)
            if step.timeout is not None:
                self.timer(tid, "event_timeout", self.due(step.timeout), {})
                wait["timers"] = True

    def run_set(self, tid: str, step: Step) -> None:
        values = _stored(expr.render_value(dict(step.values), self.context()))
        self.state["vars"].update(values)
        self.leave(tid, step)

    def run_update_customer(self, tid: str, step: Step) -> None:
        if self.customer is None:
            raise StepFailed("this instance has no customer to update")
        plan = _plan(step)
        if plan is not None:
            values = plan.stored_fields(self.context())
            problems = choice_problems(values) if plan.may_break_choices(values) else None
        else:
            values = _stored(expr.render_value(dict(step.fields), self.context()))
            problems = choice_problems(values)
        if problems:
            raise StepFailed("; ".join(f"{field}: {message}" for field, message in problems))
        self.customer.update(values)
        if step.add_tags or step.remove_tags:
            tags = [t for t in self.customer.get("tags") or [] if t not in step.remove_tags]
            tags += [t for t in step.add_tags if t not in tags]
            self.customer["tags"] = tags
        if plan is None:
            note = {lang: expr.compile_template(t).render(self.context()) for lang, t in step.timeline.items()}
        elif plan.texts:
            note = _rendered(plan.texts, self.context())
        else:
            note = {}
        self.effects.append(fx.UpdateCustomer(values, step.add_tags, step.remove_tags, note))
        self.leave(tid, step)

    def run_assign_owner(self, tid: str, step: Step) -> None:
        if self.customer is None:
            raise StepFailed("this instance has no customer to assign")
        if self.ctx.pick_user is None:
            raise StepFailed("no user directory is available to pick an owner")
        user = self.ctx.pick_user(step.role or "", step.strategy or "region_then_least_loaded", self.customer)
        if user is None:
            raise StepFailed(f"no active user has the role {step.role!r}")
        self.customer["owner"] = user
        self.effects.append(fx.UpdateCustomer({"owner": user}))
        self.leave(tid, step)

    def run_subflow(self, tid: str, step: Step) -> None:
        data = expr.render_value(dict(step.data), self.context())
        self.effects.append(fx.StartSubflow(tid, step.flow or "", data, step.wait))
        if step.wait:
            self.park(tid, {"kind": "subflow"})
        else:
            self.leave(tid, step)

    def run_end(self, tid: str, step: Step) -> None:
        self.history.append({"type": "step_completed", "step": step.id, "token": tid})
        self.finish(step.outcome)

    def check_goal(self) -> None:
        goal = self.flow.goal
        if not (goal and goal.when and self.running):
            return
        try:
            reached = expr.compile_expression(goal.when).evaluate(self.context())
        except ExpressionError as exc:
            self.log("goal_error", message=str(exc))
            return
        if reached:
            self.finish(goal.outcome)


#: The wait a token must be in for each token event.
_WAIT_KINDS: dict[type, str] = {
    ev.TaskDone: "task",
    ev.SendBack: "task",
    ev.ActionDone: "action",
    ev.ActionFailed: "action",
    ev.SubflowDone: "subflow",
}

#: ``run_<type>`` of each step type, looked up once instead of by name for every step.
_STEP_RUNNERS: dict[str, Callable[[_Run, str, Step], None]] = {
    name[len("run_"):]: function for name, function in vars(_Run).items() if name.startswith("run_") and name != "run_ready"
}

class _Plan:
    """What running a step needs of its definition, worked out once: its templates and expressions
    compiled, its values' structure walked (``expr.value_renderer``). Rendering them is all that is
    left per run, which gives what compiling them each time gives, errors included."""

    __slots__ = ("fields", "texts", "assignee", "cases", "backoff", "_text_keys", "_choices", "_spec", "_params",
                 "_step", "_due")

    def __init__(self, step: Step) -> None:
        self._step = step
        self.fields = expr.value_renderer(dict(step.fields))  # update_customer
        # Rendered fields whose keys are all text and values all atoms are stored as they are.
        self._text_keys = all(type(key) is str for key in step.fields)
        # The enumerated profile fields among them, the only ones choice_problems can object to.
        names = {str(key) for key in step.fields}
        self._choices = tuple((key, allowed) for key, allowed in CHOICES.items() if key in names)
        self.backoff = _backoff_seconds(step)  # action
        self._due: tuple[datetime, str, BusinessCalendar, datetime] | None = None  # task: the last due time
        # The per-language texts of a step: a task's title, an update_customer's timeline note.
        texts = step.title if step.type == "task" else step.timeline if step.type == "update_customer" else {}
        self.texts = [(lang, expr.compile_template(t)) for lang, t in texts.items()]
        self.assignee = (expr.compile_expression(step.assignee.expr)
                         if step.type == "task" and step.assignee is not None and step.assignee.expr else None)
        self.cases = [expr.compile_expression(case.when) for case in step.cases] if step.type == "decision" else []
        self._spec = step.assignee.as_dict() if step.type == "task" and step.assignee is not None else None
        self._params: dict[str, Callable[[Mapping[str, Any]], Any]] = {}

    def stored_fields(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """``_stored(self.fields(context))``: the rendered dict itself (new at each render) when
        ``_stored`` would copy it unchanged."""
        values = self.fields(context)
        if not self._text_keys:
            return _stored(values)  # type: ignore[no-any-return]
        for value in values.values():
            if type(value) not in _ATOMS:
                return _stored(values)  # type: ignore[no-any-return]
        return values  # type: ignore[no-any-return]

    def may_break_choices(self, values: Mapping[str, Any]) -> bool:
        """Whether ``choice_problems(values)`` (of this step's stored fields) may find a problem."""
        for key, allowed in self._choices:
            value = values.get(key)
            if value is not None and value not in allowed:
                return True
        return False

    def due_at(self, now: datetime, tz: str, calendar: BusinessCalendar) -> datetime:
        """A task's due time from ``now``: the one worked out last when ``now`` and the calendar are
        the same objects (a batch's requests share them), else ``add_duration``'s."""
        last = self._due
        if last is not None and last[0] is now and last[1] == tz and last[2] is calendar:
            return last[3]
        assert self._step.due is not None
        due = add_duration(now, self._step.due, tz, calendar)
        self._due = (now, tz, calendar, due)
        return due

    def assignee_spec(self) -> dict[str, Any]:
        """A task's ``assignee.as_dict()``, a copy the run may change (its list of users too)."""
        assert self._spec is not None
        spec = dict(self._spec)
        if "users" in spec:
            spec["users"] = list(spec["users"])
        return spec

    def params_in(self, language: str) -> Callable[[Mapping[str, Any]], Any]:
        """An action's parameters in the customer's language, as a renderer."""
        render = self._params.get(language)
        if render is None:
            render = expr.value_renderer(localize(dict(self._step.params), language))
            if len(self._params) < 16:  # languages are few; any other text is not kept
                self._params[language] = render
        return render


#: The plan of each step run lately, by the Step object's id (the Step is kept in the entry, so
#: its id cannot be reused meanwhile). Flow versions are never changed, only deployed anew, with
#: Step objects of their own: a redeployed version gets plans of its own.
_PLANS: dict[int, tuple[Step, _Plan | None]] = {}
_MAX_PLANS = 4096


def _plan(step: Step) -> _Plan | None:
    """The step's plan; None if one of its templates or expressions does not compile, in which
    case the step compiles them as it runs, and so fails as it always did."""
    entry = _PLANS.get(id(step))
    if entry is not None and entry[0] is step:
        return entry[1]
    try:
        plan: _Plan | None = _Plan(step)
    except Exception:  # noqa: BLE001 - raised again by the step itself when it runs
        plan = None
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[id(step)] = (step, plan)
    return plan


LANGUAGES = frozenset({"zh", "en"})
_ATOMS = frozenset({str, int, float, bool, type(None)})


def _rendered(texts: list[tuple[str, expr.Template]], context: Mapping[str, Any]) -> dict[str, str]:
    """A plan's per-language texts rendered: ``{lang: template.render(context) for ...}`` as a loop,
    one Python frame where the comprehension makes two."""
    rendered = {}
    for lang, template in texts:
        rendered[lang] = template.render(context)
    return rendered


def _backoff_seconds(step: Step) -> float:
    """Seconds between an action's delivery attempts."""
    return step.backoff.plain.total_seconds() if step.backoff else 60.0


def _as_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    """``dict(data)``; a dict as it is, for ``_copied`` to copy it once rather than twice."""
    return data if type(data) is dict else dict(data)


def _copied(value: Any) -> Any:
    """``copy.deepcopy`` of event data: JSON values (dicts, lists, text, numbers) copied directly,
    without deepcopy's per-object bookkeeping; anything else by deepcopy itself."""
    kind = type(value)
    if kind is dict:
        copied = {}  # a loop, atoms kept without a call each: no frame per item, none for a comprehension
        for key, item in value.items():
            copied[key] = item if type(item) in _ATOMS else _copied(item)
        return copied
    if kind is list:
        return [_copied(item) for item in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def _stored(value: Any) -> Any:
    """A computed value as the instance state stores it: JSON only, dates as ISO-8601 text."""
    if type(value) in _ATOMS:
        return value  # as the last test below, without the tests before it
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):  # atoms kept as they are without a call each, as above
        return {str(k): v if type(v) in _ATOMS else _stored(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stored(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise StepFailed(f"a value of type {type(value).__name__} cannot be stored in a variable")


def localize(value: Any, language: str) -> Any:
    """Pick the customer's language wherever a value is given per language (``{zh: …, en: …}``)."""
    if isinstance(value, dict):
        if value and set(value) <= LANGUAGES:
            return value.get(language, value.get("zh", next(iter(value.values()))))
        return {k: localize(v, language) for k, v in value.items()}
    if isinstance(value, list):
        return [localize(v, language) for v in value]
    return value


def _as_datetime(value: Any, tz: str) -> datetime:
    """A wait-until value: an aware/naive datetime, a date, or an ISO-8601 string."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise StepFailed(f"'until' gave {value!r}, which is not an ISO-8601 date or time") from exc
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise StepFailed(f"'until' gave {value!r}, not a date or time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(tz))
    return value.astimezone(timezone.utc)

"""Checks of meaning that a JSON Schema cannot express: references, reachability, loops, expressions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from engine import expr
from engine.cron import parse_cron
from engine.errors import ExpressionError, Problem
from engine.flow.messages import check_params
from engine.flow.model import CONFIGURATION_NAME, WAIT_STATES, Flow, Step, split_connector
from engine.flow.yaml_loader import Located, json_path
from engine.problem_text import Text, did_you_mean, t


@dataclass(frozen=True, slots=True)
class Catalog:
    """What exists outside the flow; ``None`` means "do not check this kind"."""

    forms: frozenset[str] | None = None
    connectors: frozenset[str] | None = None  # connector types and channels
    roles: frozenset[str] | None = None
    flows: frozenset[str] | None = None
    #: Each connector type's message schema: the ``params`` its action steps may pass.
    message_schemas: Mapping[str, Mapping[str, Any]] | None = None
    #: The types that can be addressed by configuration name (``feishu/care-team``).
    configurable: frozenset[str] | None = None
    #: Attached configurations, name -> type; known at deploy, not offline.
    configurations: Mapping[str, str] | None = None
    segments: frozenset[str] | None = None


class _Checker:
    def __init__(self, flow: Flow, located: Located, catalog: Catalog):
        self.flow = flow
        self.located = located
        self.catalog = catalog
        self.problems: list[Problem] = []
        self.index = {}
        for i, raw in enumerate(located.data["steps"]):
            self.index.setdefault(raw["id"], i)

    def report(self, path: tuple[Any, ...], message: Text) -> None:
        line, col = self.located.position(path)
        self.problems.append(Problem(self.flow.source, line, col, message, json_path(path)))

    def report_key(self, path: tuple[Any, ...], message: Text) -> None:
        """A problem with a mapping key itself (an unknown parameter): point at the key."""
        found = self.located.key_positions.get(tuple(path))
        if found is None:
            self.report(path, message)
            return
        self.problems.append(Problem(self.flow.source, found[0], found[1], message, json_path(path)))

    def step_path(self, step: Step, *rest: Any) -> tuple[Any, ...]:
        return ("steps", self.index[step.id], *rest)


def check_flow(flow: Flow, located: Located, catalog: Catalog) -> list[Problem]:
    """Every problem of meaning in the flow, located."""
    c = _Checker(flow, located, catalog)
    _check_duplicates(c)
    _check_references(c)
    if not c.problems:
        # Graph checks on a graph with dangling edges would only repeat the reference errors.
        _check_reachability(c)
        _check_loops(c)
        _check_joins(c)
    _check_steps(c)
    _check_triggers(c)
    _check_goal(c)
    if flow.timezone and not _valid_tz(flow.timezone):
        c.report(("timezone",), t("flow.unknown_time_zone", name=flow.timezone))
    return c.problems


def _did_you_mean(word: str, options: Iterable[str]) -> Text:
    return did_you_mean(word, options)


def _valid_tz(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _check_duplicates(c: _Checker) -> None:
    seen: dict[str, int] = {}
    for i, raw in enumerate(c.located.data["steps"]):
        sid = raw["id"]
        if sid in seen:
            first_line = c.located.position(("steps", seen[sid]))[0]
            c.report(("steps", i, "id"), t("flow.duplicate_step", id=sid, first=first_line))
        else:
            seen[sid] = i


def _references(step: Step) -> Iterator[tuple[tuple[Any, ...], str]]:
    """(relative path, target id) of every step reference in a step."""
    if step.next:
        yield ("next",), step.next
    for i, case in enumerate(step.cases):
        yield ("cases", i, "next"), case.next
    if step.default:
        yield ("default",), step.default
    for i, b in enumerate(step.branches):
        yield ("branches", i), b
    if step.timeout_next:
        yield ("on_timeout", "next"), step.timeout_next
    if step.on_timeout:
        yield ("on_timeout",), step.on_timeout
    for i, s in enumerate(step.send_back_to):
        yield ("send_back_to", i), s


def _check_references(c: _Checker) -> None:
    ids = c.flow.steps.keys()
    if c.flow.start not in ids:
        c.report(("start",), t("flow.unknown_step", id=c.flow.start, hint=_did_you_mean(c.flow.start, ids)))
    for step in c.flow.steps.values():
        for rel, target in _references(step):
            if target not in ids:
                c.report(c.step_path(step, *rel), t("flow.unknown_step", id=target, hint=_did_you_mean(target, ids)))
            elif target == step.id and rel[0] != "send_back_to":
                c.report(c.step_path(step, *rel), t("flow.self_loop", id=step.id))


def _reachable(flow: Flow, start: str) -> set[str]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in flow.steps[todo.pop()].successors():
            # An unknown step is reported by the reference check; it leads nowhere.
            if nxt not in seen and nxt in flow.steps:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _check_reachability(c: _Checker) -> None:
    reached = _reachable(c.flow, c.flow.start)
    for step in c.flow.steps.values():
        if step.id not in reached:
            c.report(c.step_path(step, "id"), t("flow.unreachable", id=step.id, start=c.flow.start))
    # A step from which no end can be reached is a loop without an exit.
    preds: dict[str, set[str]] = {s: set() for s in c.flow.steps}
    for step in c.flow.steps.values():
        for nxt in step.successors():
            preds[nxt].add(step.id)
    ends = [s.id for s in c.flow.steps.values() if s.type == "end"]
    can_end = set(ends)
    todo = list(ends)
    while todo:
        for p in preds[todo.pop()]:
            if p not in can_end:
                can_end.add(p)
                todo.append(p)
    if not ends:
        c.report(("steps",), t("flow.no_end"))
        return
    for step in c.flow.steps.values():
        if step.id in reached and step.id not in can_end:
            c.report(c.step_path(step, "id"), t("flow.no_exit", id=step.id))


def _strongly_connected(flow: Flow) -> list[list[str]]:
    """Tarjan's algorithm, iterative so that long flows cannot exhaust the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in flow.steps:
        if root in index:
            continue
        work = [(root, iter(flow.steps[root].successors()))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(flow.steps[child].successors())))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    item = stack.pop()
                    on_stack.discard(item)
                    component.append(item)
                    if item == node:
                        break
                result.append(component)
    return result


def _waits(step: Step) -> bool:
    return step.type in WAIT_STATES or (step.type == "action" and step.wait)


def _check_loops(c: _Checker) -> None:
    for component in _strongly_connected(c.flow):
        if len(component) < 2:
            continue
        if not any(_waits(c.flow.steps[s]) for s in component):
            first = min(component, key=lambda s: c.index[s])
            names = ", ".join(sorted(component, key=lambda s: c.index[s]))
            c.report(
                c.step_path(c.flow.steps[first], "id"),
                t("flow.busy_loop", names=names),
            )


def _check_joins(c: _Checker) -> None:
    fed_by_split: set[str] = set()
    for step in c.flow.steps.values():
        if step.type == "parallel":
            for branch in step.branches:
                fed_by_split |= _reachable(c.flow, branch)
    for step in c.flow.steps.values():
        if step.type == "join" and step.id not in fed_by_split:
            c.report(c.step_path(step, "id"), t("flow.join_without_split", id=step.id))


def _check_expression(c: _Checker, path: tuple[Any, ...], source: str, *, expression: bool) -> None:
    try:
        expr.check_syntax(source, expression=expression)
    except ExpressionError as exc:
        c.report(path, t("flow.expression", detail=str(exc)))


def _check_templates(c: _Checker, path: tuple[Any, ...], value: Any) -> None:
    if isinstance(value, str):
        if expr.is_template(value):
            _check_expression(c, path, value, expression=False)
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_templates(c, (*path, k), v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_templates(c, (*path, i), v)


def _check_known(c: _Checker, path: tuple[Any, ...], kind: str, name: str, known: frozenset[str] | None) -> None:
    if known is not None and name not in known:
        c.report(path, t(f"flow.unknown_{kind}", name=name, hint=_did_you_mean(name, known)))


def _check_steps(c: _Checker) -> None:
    cat = c.catalog
    for step in c.flow.steps.values():
        p = lambda *rest: c.step_path(step, *rest)  # noqa: E731
        if step.type == "task":
            if step.form:
                _check_known(c, p("form"), "form", step.form, cat.forms)
            a = step.assignee
            if a is not None:
                if not (a.role or a.user or a.users or a.expr):
                    c.report(p("assignee"), t("flow.assignee_empty"))
                if a.role:
                    _check_known(c, p("assignee", "role"), "role", a.role, cat.roles)
                if a.expr:
                    _check_expression(c, p("assignee", "expr"), a.expr, expression=True)
            for i, e in enumerate(step.escalation):
                _check_known(c, p("escalation", i, "to_role"), "role", e.to_role, cat.roles)
            if any(r.before for r in step.reminders) and step.due is None:
                c.report(p("reminders"), t("flow.reminder_without_due"))
            if step.escalation and step.due is None:
                c.report(p("escalation"), t("flow.escalation_without_due"))
            for i, target in enumerate(step.send_back_to):
                if target in c.flow.steps and step.id not in _reachable(c.flow, target):
                    c.report(p("send_back_to", i), t("flow.send_back_not_before", target=target, id=step.id))
            for key in ("title",):
                for lang, text in getattr(step, key).items():
                    if expr.is_template(text):
                        _check_expression(c, p(key), text, expression=False)
        elif step.type == "action":
            if _check_connector(c, step, p("connector")):
                _check_message(c, step, p("params"))
            _check_templates(c, p("params"), dict(step.params))
        elif step.type == "decision":
            for i, case in enumerate(step.cases):
                _check_expression(c, p("cases", i, "when"), case.when, expression=True)
        elif step.type == "wait":
            kinds = [k for k in ("duration", "until", "event") if getattr(step, k)]
            if len(kinds) != 1:
                c.report(p(), t("flow.wait_kind"))
            if step.until:
                _check_expression(c, p("until"), step.until, expression=True)
            if (step.timeout is None) != (step.on_timeout is None):
                c.report(p(), t("flow.timeout_pair"))
            if step.timeout is not None and not step.event:
                c.report(p("timeout"), t("flow.timeout_event_only"))
        elif step.type == "set":
            _check_templates(c, p("values"), dict(step.values))
        elif step.type == "update_customer":
            _check_templates(c, p("fields"), dict(step.fields))
            if not (step.fields or step.add_tags or step.remove_tags):
                c.report(p(), t("flow.update_customer_empty"))
        elif step.type == "assign_owner":
            _check_known(c, p("role"), "role", step.role or "", cat.roles)
        elif step.type == "subflow":
            _check_known(c, p("flow"), "flow", step.flow or "", cat.flows)
            if step.flow == c.flow.id:
                c.report(p("flow"), t("flow.subflow_self"))
            _check_templates(c, p("data"), dict(step.data))


def _check_connector(c: _Checker, step: Step, path: tuple[Any, ...]) -> bool:
    """Whether the connector reference is sound (``type`` or ``type/configuration``)."""
    cat = c.catalog
    reference = step.connector or ""
    type_, config = split_connector(reference)
    known = cat.connectors
    if config is None:
        if known is None or type_ in known:
            return True
        hint = _did_you_mean(type_, known)
        owner = (cat.configurations or {}).get(type_)
        if owner is not None:
            hint = t("hint.configuration_of", name=type_, owner=owner)
        elif not hint:
            hint = t("hint.configuration_syntax")
        c.report(path, t("flow.unknown_connector", name=type_, hint=hint))
        return False
    if known is not None and type_ not in known:
        c.report(path, t("flow.unknown_connector_type", name=type_, reference=reference, hint=_did_you_mean(type_, known)))
        return False
    if cat.configurable is not None and type_ not in cat.configurable:
        c.report(path, t("flow.not_configurable", name=type_))
        return False
    if not CONFIGURATION_NAME.fullmatch(config):
        c.report(path, t("flow.configuration_name", name=config))
        return False
    actual = (cat.configurations or {}).get(config)
    if actual is not None and actual != type_:
        c.report(path, t("flow.configuration_type", name=config, actual=actual, type=type_))
        return False
    return True


def _check_message(c: _Checker, step: Step, path: tuple[Any, ...]) -> None:
    schemas = c.catalog.message_schemas
    type_, _config = split_connector(step.connector or "")
    if schemas is None or type_ not in schemas:
        return
    for problem in check_params(schemas[type_], dict(step.params), step.connector or ""):
        if problem.at_key:
            c.report_key((*path, *problem.path), problem.message)
        else:
            c.report((*path, *problem.path), problem.message)


def _check_triggers(c: _Checker) -> None:
    for i, trig in enumerate(c.flow.triggers):
        path = ("triggers", i)
        if trig.type == "form" and trig.form:
            _check_known(c, (*path, "form"), "form", trig.form, c.catalog.forms)
        if trig.cron:
            zone = trig.timezone or c.flow.timezone
            try:
                # An unknown zone is its own problem (below, or the flow's); the expression is still checked.
                parse_cron(trig.cron, zone if zone and _valid_tz(zone) else "UTC")
            except ValueError as exc:
                c.report((*path, "cron"), t("flow.bad_cron", cron=trig.cron, detail=exc.args[0] if exc.args and isinstance(exc.args[0], Text) else str(exc)))
        if trig.timezone and not _valid_tz(trig.timezone):
            c.report((*path, "timezone"), t("flow.unknown_time_zone", name=trig.timezone))
        for key in ("customers", "when"):
            source = getattr(trig, key)
            if source:
                _check_expression(c, (*path, key), source, expression=True)
        if trig.type == "segment" and trig.segment:
            _check_known(c, (*path, "segment"), "segment", trig.segment, c.catalog.segments)
        if trig.type == "customer_event" and trig.event == "field_changed" and not trig.field:
            c.report(path, t("flow.field_changed_field"))


def _check_goal(c: _Checker) -> None:
    goal = c.flow.goal
    if goal and goal.when:
        _check_expression(c, ("goal", "when"), goal.when, expression=True)

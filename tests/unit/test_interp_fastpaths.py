"""The interpreter's and the effects' quick paths against the slow ones they stand for.

Each quick path must give exactly what the general code gives, errors included: random inputs are
run through both and compared. A divergence fails here before it can change a stored row.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import random
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect as sa_inspect

from engine import expr, forms
from engine.calendar import birthday_key
from engine.errors import ExpressionError
from engine.flow.loader import load_flow
from engine.runtime import effects as fx
from engine.runtime import events as ev
from engine.runtime import interpreter
from engine.runtime.interpreter import Context, advance, start_state
from engine.runtime.records import quick_init
from engine.store import customers
from engine.store import instances
from engine.store.models import Customer

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 24, 1, 0, tzinfo=timezone.utc)

# --- expressions and templates: the plain-Python evaluator against Jinja ------------------------

NAMES = ["customer.name", "customer.phone", "customer.email", "customer.grade", "customer.owner", "customer.count",
         "customer.score", "customer.flag", "customer.address.city", "customer.missing", "vars.answer.channel",
         "vars.answer", "vars.n", "vars.none", "vars.gone.deeper", "customer['name']"]
CONSTANTS = ["0", "1", "20000", "2.5", "'A'", "'sms'", "''", "none", "true", "false"]
COMPARISONS = ["==", "!=", "<", "<=", ">", ">=", "in", "not in"]
FILTERS = ["e164", "normalize_email", "lower", "upper", "trim"]


def random_expression(rng: random.Random, depth: int = 0) -> str:
    choice = rng.randrange(9 if depth < 3 else 2)
    if choice == 0:
        return rng.choice(NAMES)
    if choice == 1:
        return rng.choice(CONSTANTS)
    if choice == 2:
        parts = [random_expression(rng, depth + 1) for _ in range(rng.choice([2, 2, 3]))]
        ops = [rng.choice(COMPARISONS) for _ in parts[1:]]
        return "(" + parts[0] + "".join(f" {op} {part}" for op, part in zip(ops, parts[1:])) + ")"
    if choice == 3:
        return f"({random_expression(rng, depth + 1)} or {random_expression(rng, depth + 1)})"
    if choice == 4:
        return f"({random_expression(rng, depth + 1)} and {random_expression(rng, depth + 1)})"
    if choice == 5:
        return f"(not {random_expression(rng, depth + 1)})"
    if choice == 6:
        return (f"({random_expression(rng, depth + 1)} if {random_expression(rng, depth + 1)} "
                f"else {random_expression(rng, depth + 1)})")
    if choice == 7:
        return f"({random_expression(rng, depth + 1)} | default({random_expression(rng, depth + 1)}))"
    return f"({random_expression(rng, depth + 1)} | {rng.choice(FILTERS)})"


def random_context(rng: random.Random) -> dict[str, Any]:
    def value() -> Any:
        return rng.choice([None, "", "sms", "A", "138 0013 8000", "+8613800138000", " Wang.Li@Example.COM ", 0, 1, 7,
                           20000, 2.5, True, False, ["vip"], {"city": "上海"}])

    customer = {key: value() for key in ("name", "phone", "email", "grade", "owner", "count", "score", "flag")}
    if rng.random() < 0.7:
        customer["address"] = rng.choice([{"city": "上海"}, {}, "no address", None])
    variables: dict[str, Any] = {"n": value(), "none": None}
    if rng.random() < 0.7:
        variables["answer"] = {"channel": value()}
    return {"customer": customer, "vars": variables, "instance": {"id": 7}}


def jinja_only(compiled: Any) -> Any:
    if isinstance(compiled, expr.Expression):
        return expr.Expression(compiled.source, compiled._template, compiled._paths, compiled._line)
    return expr.Template(compiled.source, compiled._template, compiled._paths, autoescape=False)


def outcome(run: Any) -> tuple[str, Any]:
    try:
        value = run()
    except ExpressionError as exc:
        return "error", str(exc)
    return "value", (type(value), value)


def test_random_expressions_evaluate_as_jinja_evaluates_them() -> None:
    rng = random.Random(20261205)
    fast_seen = 0
    for _ in range(1500):
        source = random_expression(rng)
        compiled = expr.compile_expression(source)
        fast_seen += compiled._fast is not None
        slow = jinja_only(compiled)
        for _ in range(3):
            context = random_context(rng)
            assert outcome(lambda: compiled.evaluate(context)) == outcome(lambda: slow.evaluate(context)), source
    assert fast_seen > 1000  # the quick path was exercised, not only Jinja against itself


@pytest.mark.parametrize("shape", ["{}", "前缀 {}", "{} 后缀", "前 {} 后", "{}{}", "a {} b {} c", "{}\n"])
def test_random_templates_render_as_jinja_renders_them(shape: str) -> None:
    rng = random.Random(shape)
    for _ in range(300):
        source = shape.format(*("{{ " + random_expression(rng, 2) + " }}" for _ in range(shape.count("{}"))))
        compiled = expr.compile_template(source)
        slow = jinja_only(compiled)
        for _ in range(3):
            context = random_context(rng)
            assert outcome(lambda: compiled.render(context)) == outcome(lambda: slow.render(context)), source


# --- the interpreter: step plans against compiling each template as the step runs ---------------


def random_customer(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "id": i, "name": rng.choice([f"客户{i:06d}", "", "Wang"]),
        "phone": rng.choice([f"138 {i % 10000:04d} {i % 7777:04d}", "12345", None, "+14155552671"]),
        "email": rng.choice([f" Customer{i}@Example.COM ", "not an address", None]),
        "expected_value": rng.choice([None, 0, 20000.0, 150000, "x"]),
        "owner": rng.choice(["wang", None, ""]), "preferred_channel": rng.choice(["email", "sms", None]),
        "tags": rng.choice([[], ["vip"]]), "language": rng.choice(["zh", "en", None]),
    }


def run_bench_flow(customer: dict[str, Any], answer: dict[str, Any]) -> list[Any]:
    flow = load_flow(ROOT / "bench/flows/bench_onboarding.yaml")
    info = {"id": 7, "flow": flow.id, "started_at": NOW.isoformat(), "parent_id": None}
    seen = []
    first = advance(flow, start_state(flow), ev.Start({}, {"type": "manual"}), Context(NOW, info, customer))
    seen.append((first.state, first.effects, first.history, first.customer))
    for tid, token in first.state["tokens"].items():
        if token["wait"] and token["wait"]["kind"] == "task":
            done = advance(flow, first.state, ev.TaskDone(tid, token["gen"], answer, "wang", 1),
                           Context(NOW, info, first.customer))
            seen.append((done.state, done.effects, done.history, done.customer))
    return seen


def test_step_plans_give_the_outcomes_of_compiling_as_the_steps_run(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    cases = []
    for i in range(60):
        answer = {"reached": True, "preferred_channel": rng.choice(["sms", "phone", "fax"]), "call_notes": "好"}
        if rng.random() < 0.3:
            del answer["preferred_channel"]
        cases.append((random_customer(rng, i), answer))
    planned = [run_bench_flow(copy.deepcopy(c), a) for c, a in cases]
    monkeypatch.setattr(interpreter, "_plan", lambda step: None)
    compiled = [run_bench_flow(copy.deepcopy(c), a) for c, a in cases]
    assert planned == compiled
    assert any(len(runs) == 2 for runs in planned) and any(
        entry["type"] == "incident" for runs in planned for run in runs for entry in run[2])


def test_a_task_assignee_spec_from_the_plan_is_a_copy_each_run() -> None:
    flow = load_flow(ROOT / "bench/flows/bench_onboarding.yaml")
    plan = interpreter._plan(flow.steps["welcome_call"])
    assert plan is not None
    first = plan.assignee_spec()
    first["user"] = "changed"
    assert plan.assignee_spec() == flow.steps["welcome_call"].assignee.as_dict()


# --- events and effects: quick_init against the dataclass __init__ ------------------------------

RECORDS = [cls for module in (fx, ev) for cls in vars(module).values()
           if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == module.__name__]


def twin(cls: type) -> type:
    """The same record with the __init__ that @dataclass generates."""
    specs = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            specs.append((f.name, f.type, dataclasses.field(default=f.default)))
        elif f.default_factory is not dataclasses.MISSING:
            specs.append((f.name, f.type, dataclasses.field(default_factory=f.default_factory)))
        else:
            specs.append((f.name, f.type))
    return dataclasses.make_dataclass(cls.__name__, specs, frozen=True, slots=True)


def hashed(record: Any) -> Any:
    try:
        return hash(record)
    except TypeError as exc:  # a dict among the values
        return str(exc)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda cls: cls.__name__)
def test_records_are_built_as_the_dataclass_builds_them(cls: type) -> None:
    reference = twin(cls)
    assert [p.name for p in inspect.signature(cls).parameters.values()] == \
        [p.name for p in inspect.signature(reference).parameters.values()]
    rng = random.Random(cls.__name__)
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    for _ in range(20):
        values = [rng.choice(["t1", 3, None, {"a": 1}, ("x",), 2.5]) for _ in fields]
        given = rng.randrange(len(required), len(fields) + 1)
        by_keyword = rng.random() < 0.5
        args, kwargs = ([], {f.name: v for f, v in zip(fields[:given], values)}) if by_keyword else (values[:given], {})
        ours, theirs = cls(*args, **kwargs), reference(*args, **kwargs)
        assert dataclasses.astuple(ours) == dataclasses.astuple(theirs)
        assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
        assert ours == cls(*args, **kwargs) and hashed(ours) == hashed(theirs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(ours, fields[0].name, "changed")
    if required:
        with pytest.raises(TypeError):
            cls()
    with pytest.raises(TypeError):
        cls(*([None] * (len(fields) + 1)))
    for f in fields:
        if f.default_factory is not dataclasses.MISSING:
            args = [None] * len(required)
            assert getattr(cls(*args), f.name) == f.default_factory()
            assert getattr(cls(*args), f.name) is not getattr(cls(*args), f.name)  # a new one each time


def test_quick_init_refuses_what_it_cannot_build() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (NoSlots, NotFrozen):
        with pytest.raises(TypeError):
            quick_init(cls)


# --- applying effects: by type, a subclass by its base's applier ---------------------------------


def test_every_effect_type_has_an_applier() -> None:
    effect_types = {cls for cls in RECORDS if cls.__module__ == fx.__name__}
    assert set(instances._APPLIERS) == effect_types


def test_an_effect_of_a_derived_type_is_applied_as_its_base(monkeypatch: pytest.MonkeyPatch) -> None:
    applied = []
    monkeypatch.setitem(instances._APPLIERS, fx.Timeline, lambda *args: applied.append(args[5]))

    @dataclasses.dataclass(frozen=True, slots=True)
    class Special(fx.Timeline):
        extra: int = 0

    effect = Special("note", {"zh": "x"})
    instances._apply(None, None, None, None, None, effect, None)  # type: ignore[arg-type]
    assert applied == [effect]


# --- customers: the changes of an update, the dict flows see -------------------------------------


def old_changes(customer: Customer, values: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """customers._changes as it was written first: the reference."""
    changed: list[str] = []
    columns: dict[str, Any] = {}
    loaded = customer.__dict__
    current = lambda name: loaded[name] if name in loaded else getattr(customer, name)  # noqa: E731
    attributes = dict(current("attributes") or {})
    for key, value in values.items():
        if key in customers._PROFILE_FIELD_SET:
            if current(key) != value:
                columns[key] = value
                changed.append(key)
        elif key not in ("id", "created_at"):
            if attributes.get(key) != value:
                attributes[key] = value
                changed.append(key)
    if attributes != (current("attributes") or {}):
        columns["attributes"] = attributes
    birthday = columns["birthday"] if "birthday" in columns else current("birthday")
    calendar = columns["birthday_calendar"] if "birthday_calendar" in columns else current("birthday_calendar")
    key = birthday_key(birthday, calendar or "solar") if birthday is not None else None
    if key != current("birthday_key"):
        columns["birthday_key"] = key
    return changed, columns


def loaded_customer(values: dict[str, Any]) -> Customer:
    customer = sa_inspect(Customer).class_manager.new_instance()
    customer.__dict__.update({key: None for key in customers._DICT_COLUMNS})
    customer.__dict__.update(values)
    return customer


def result(changes: Any, stored: dict[str, Any], values: dict[str, Any]) -> Any:
    try:
        return changes(loaded_customer(stored), values)
    except Exception as exc:  # noqa: BLE001 - a bad birthday calendar: the same error either way
        return type(exc), str(exc)


def test_customer_changes_are_those_of_the_reference() -> None:
    rng = random.Random(3)
    birthdays = [None, date(1990, 2, 3), date(2000, 12, 31)]
    for _ in range(2000):
        stored = {"name": rng.choice(["王", "李"]), "grade": rng.choice([None, "A", "B"]), "birthday": rng.choice(birthdays),
                  "birthday_calendar": rng.choice([None, "solar", "lunar"]), "attributes": rng.choice([None, {}, {"vip": 1}])}
        stored["birthday_key"] = rng.choice([None, "02-03", birthday_key(stored["birthday"], "solar")
                                             if stored["birthday"] else None])
        if rng.random() < 0.2:
            del stored["birthday_key"]  # not loaded: read through the attribute
        keys = rng.sample(["name", "grade", "birthday", "birthday_calendar", "vip", "size", "id", "created_at"],
                          rng.randrange(0, 5))
        values = {key: rng.choice([None, "A", "王", 1, date(1990, 2, 3), "lunar"]) for key in keys}
        assert result(customers._changes, stored, values) == result(old_changes, stored, values)


def test_customer_dict_reads_a_value_not_loaded_through_the_orm() -> None:
    full = {"id": 5, "name": "王", "tags": ["vip"], "consent": {"sms": True}, "attributes": {"size": "L"},
            "created_at": NOW, "birthday": date(1990, 2, 3)}
    whole = customers.customer_dict(loaded_customer(full))
    partial = loaded_customer(full)
    del partial.__dict__["grade"], partial.__dict__["last_nps"]  # as if expired: the ORM gives None here
    assert customers.customer_dict(partial) == whole
    assert list(customers.customer_dict(partial)) == list(whole)


# --- forms: the flat-submission checks ------------------------------------------------------------


def walked_size_problem(data: Any) -> str | None:
    """forms._size_problem without its quick look at flat dicts."""
    stack = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > forms._MAX_DATA_NODES:
            return "too_large"
        if depth > forms._MAX_DATA_DEPTH:
            return "too_deep"
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((child, depth + 1) for child in value)
    return None


def test_size_problems_are_those_of_the_walk() -> None:
    rng = random.Random(11)
    deep: Any = "leaf"
    for _ in range(40):
        deep = {"d": deep}
    samples = [{}, {"a": 1}, {"a": deep}, {str(i): i for i in range(forms._MAX_DATA_NODES - 1)},
               {str(i): i for i in range(forms._MAX_DATA_NODES)}, {str(i): [i] for i in range(6000)}, [1, 2], "text"]
    for _ in range(500):
        samples.append({f"k{i}": rng.choice([1, "x", None, 2.5, True, [1], {"a": {"b": 1}}, (1,)]) for i in range(5)})
    for data in samples:
        assert forms._size_problem(data) == walked_size_problem(data)


def test_whether_a_form_prefills_is_its_own_answer_for_each_form() -> None:
    form = forms.load_form(ROOT / "bench/forms/bench_call.schema.json")
    with_prefill = dataclasses.replace(
        form, fields=(dataclasses.replace(form.fields[0], prefill="{{ customer.name }}"), *form.fields[1:]))
    for _ in range(2):
        assert instances._prefills(form) is False
        assert instances._prefills(with_prefill) is True
        assert instances._prefills(forms.view(with_prefill, readonly=[form.fields[1].name])) is True

"""Tests for engine.expr: the sandboxed expression and template language (T19 included)."""

from __future__ import annotations

import secrets
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import expr
from engine.errors import ExpressionError
from engine.expr import (
    check_syntax,
    compile_expression,
    compile_template,
    is_template,
    render_value,
    single_line,
    undeclared_names,
)

UTC = timezone.utc
SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture
def ctx() -> dict[str, Any]:
    """A typical instance context: customer record, flow variables and the clock."""
    return {
        "customer": {
            "name": "张三",
            "grade": "A",
            "owner": "u-17",
            "phone": "138 0013 8000",
            "email": "Zhang.San@Example.COM",
            "address": {"city": "上海", "zip": None},
            "tags": ["vip", "renewal"],
        },
        "vars": {"score": 4, "attempts": 0, "notes": "{{ 7 * 7 }}"},
        "now": datetime(2024, 5, 10, 1, 0, tzinfo=SHANGHAI),
    }


def ev(source: str, context: dict[str, Any] | None = None) -> Any:
    """Evaluate an expression."""
    return compile_expression(source).evaluate(context or {})


def rd(source: str, context: dict[str, Any] | None = None, *, autoescape: bool = False) -> str:
    """Render a template."""
    return compile_template(source, autoescape=autoescape).render(context or {})


# --- conditions and values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("customer.grade == 'A' and vars.score >= 4", True),
        ("customer.grade == 'B' or vars.score > 4", False),
        ("customer.address.city == '上海'", True),
        ("customer['address']['city'] != '上海'", False),
        ("'vip' in customer.tags", True),
        ("'churn' in customer.tags", False),
        ("customer.address.zip is none", True),
        ("vars.attempts < 3 and not (customer.grade in ['C', 'D'])", True),
        ("customer.tags | length > 2", False),
    ],
)
def test_conditions_over_nested_dicts(ctx: dict[str, Any], source: str, expected: bool) -> None:
    assert ev(source, ctx) is expected


def test_assignee_and_computed_values(ctx: dict[str, Any]) -> None:
    assert ev("customer.owner", ctx) == "u-17"
    assert ev("vars.score * 10 + 1", ctx) == 41
    assert ev("customer.name ~ '-' ~ customer.grade", ctx) == "张三-A"
    assert ev("'high' if vars.score >= 4 else 'low'", ctx) == "high"


def test_optional_data_helpers(ctx: dict[str, Any]) -> None:
    assert ev("foo is defined", ctx) is False
    assert ev("customer.grade is defined", ctx) is True
    assert ev("customer.missing is defined", ctx) is False
    # Chained access through a missing key stays testable instead of raising.
    assert ev("customer.missing.deeper is defined", ctx) is False
    assert ev("customer.missing.deeper | default('-')", ctx) == "-"
    assert ev("foo | default(3)", ctx) == 3
    assert ev("customer.get('vip_level', 0)", ctx) == 0
    assert ev("customer.get('grade')", ctx) == "A"


def test_template_renders_message(ctx: dict[str, Any]) -> None:
    source = "您好 {{ customer.name }}，您的等级是 {{ customer.grade }}。{% if vars.score >= 4 %}感谢！{% endif %}"
    assert rd(source, ctx) == "您好 张三，您的等级是 A。感谢！"
    assert rd("{% for t in customer.tags %}{{ loop.index }}.{{ t }} {% endfor %}", ctx) == "1.vip 2.renewal "


def test_whitespace_follows_jinja_defaults() -> None:
    """Pinned: no trim_blocks/lstrip_blocks, and a single trailing newline is dropped."""
    assert rd("a\n{% if true %}\nb\n{% endif %}\nc\n") == "a\n\nb\n\nc"
    assert rd("a\n{%- if true %}\nb{%- endif %}") == "a\nb"


def test_customer_data_is_never_reinterpreted(ctx: dict[str, Any]) -> None:
    assert rd("{{ vars.notes }}", ctx) == "{{ 7 * 7 }}"
    assert render_value("{{ vars.notes }}", ctx) == "{{ 7 * 7 }}"
    assert render_value("note: {{ vars.notes }}", ctx) == "note: {{ 7 * 7 }}"


# --- render_value ---------------------------------------------------------------------------


def test_render_value_returns_native_types(ctx: dict[str, Any]) -> None:
    assert render_value("{{ vars.score }}", ctx) == 4
    assert isinstance(render_value("{{vars.score}}", ctx), int)
    assert render_value("{{  vars.score >= 4  }}", ctx) is True
    assert render_value("{{ none }}", ctx) is None
    assert render_value("{{ 1.5 }}", ctx) == 1.5
    assert render_value("{{ customer.address }}", ctx) == {"city": "上海", "zip": None}
    assert render_value("{{ {'k': {'j': [1, 2]}} }}", ctx) == {"k": {"j": [1, 2]}}
    assert render_value("{{ range(3) }}", ctx) == [0, 1, 2]
    assert render_value("{{ customer.tags | map('upper') }}", ctx) == ["VIP", "RENEWAL"]
    assert render_value("{{ customer.address.keys() }}", ctx) == ["city", "zip"]
    assert type(render_value("{{ 'x' | e }}", ctx)) is str


def test_render_value_native_result_is_a_copy(ctx: dict[str, Any]) -> None:
    result = render_value("{{ customer.address }}", ctx)
    result["city"] = "北京"
    assert ctx["customer"]["address"]["city"] == "上海"


def test_render_value_mixed_text_is_a_string(ctx: dict[str, Any]) -> None:
    assert render_value("{{ vars.score }} points", ctx) == "4 points"
    assert render_value(" {{ vars.score }}", ctx) == " 4"
    assert render_value("{{ vars.score }}{{ vars.score }}", ctx) == "44"
    assert render_value("{% if true %}{{ vars.score }}{% endif %}", ctx) == "4"


def test_render_value_recurses_and_leaves_non_strings(ctx: dict[str, Any]) -> None:
    value = {
        "to": "{{ customer.owner }}",
        "score": "{{ vars.score }}",
        "items": ["plain", "{{ customer.grade }}!", 7, None, True, {"deep": ["{{ vars.attempts }}"]}],
        "pair": ("{{ vars.score }}", "x"),
        "n": 3.5,
    }
    assert render_value(value, ctx) == {
        "to": "u-17",
        "score": 4,
        "items": ["plain", "A!", 7, None, True, {"deep": [0]}],
        "pair": (4, "x"),
        "n": 3.5,
    }
    assert render_value(42, ctx) == 42
    assert render_value(None, ctx) is None
    assert render_value("no markup {# here", ctx) == "no markup {# here"


def test_value_renderer_renders_what_render_value_renders(ctx: dict[str, Any]) -> None:
    value = {
        "to": "{{ customer.owner }}",
        "items": ["plain", "{{ customer.grade }}!", 7, None, {"deep": ["{{ vars.attempts }}"]}],
        "pair": ("{{ vars.score }}", "x"),
        "phone": "{{ customer.phone | e164 }}",
        "note": "no markup {# here",
    }
    render = expr.value_renderer(value)
    first = render(ctx)
    assert first == render_value(value, ctx)
    ctx["customer"]["owner"] = "u-18"  # the context is read at each rendering
    again = render(ctx)
    assert again["to"] == "u-18" and again["items"] is not first["items"]  # new containers each time
    assert expr.value_renderer(42)(ctx) == 42


def test_value_renderer_raises_what_render_value_raises_when_rendering() -> None:
    render = expr.value_renderer({"ok": "fine", "bad": "{{ 1 +* 2 }}"})  # nothing raised yet
    with pytest.raises(ExpressionError) as by_renderer:
        render({})
    with pytest.raises(ExpressionError) as by_render_value:
        render_value({"ok": "fine", "bad": "{{ 1 +* 2 }}"}, {})
    assert str(by_renderer.value) == str(by_render_value.value)


def test_render_value_rejects_undefined_inside_a_native_result() -> None:
    with pytest.raises(ExpressionError, match="'missing' is undefined"):
        render_value("{{ [1, missing] }}", {})


def test_is_template() -> None:
    assert is_template("hi {{ x }}")
    assert is_template("{% if x %}y{% endif %}")
    assert not is_template("plain text")
    assert not is_template("{ x }")


# --- errors ---------------------------------------------------------------------------------


def test_undefined_name_is_named() -> None:
    with pytest.raises(ExpressionError, match="'foo' is undefined") as info:
        ev("foo == 1", {})
    assert info.value.line == 1
    with pytest.raises(ExpressionError, match="'foo' is undefined"):
        rd("hello {{ foo }}", {})
    with pytest.raises(ExpressionError, match="'foo' is undefined"):
        ev("foo", {})


def test_undefined_attribute_names_the_path(ctx: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"^'customer' has no attribute 'grad'$"):
        ev("customer.grad == 'A'", ctx)
    with pytest.raises(ExpressionError, match=r"'customer.address' has no attribute 'street'"):
        rd("{{ customer.address.street }}", ctx)
    with pytest.raises(ExpressionError, match="has no attribute 'grad'"):
        ev("customer.grad", ctx)


def test_syntax_error_reports_the_line() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_template("line one\n{{ x + }}")
    assert info.value.line == 2
    assert "syntax error" in str(info.value)
    with pytest.raises(ExpressionError) as info:
        compile_expression("a and\n(b or")
    assert info.value.line == 2
    with pytest.raises(ExpressionError, match="after the expression"):
        compile_expression("a b")
    with pytest.raises(ExpressionError) as info:
        check_syntax("ok\nok\n{% for %}", expression=False)
    assert info.value.line == 3


def test_runtime_error_reports_the_line() -> None:
    with pytest.raises(ExpressionError, match="division by zero") as info:
        rd("line1\n{% for i in range(3) %}\n{{ 1 / (2 - i - 0) if i < 2 else 1 / 0 }}{% endfor %}")
    assert info.value.line == 3
    assert info.value.source.startswith("line1")


class _Exploding:
    """A context object whose conversion to text fails with a non-Jinja error."""

    def __str__(self) -> str:
        raise ValueError("boom")


@pytest.mark.parametrize(
    "source",
    [
        "1 + 'a'",
        "none.x",
        "[1][5]",
        "{}['x']",
        "'a' < 1",
        "1 // 0",
        "5 % 0",
        "(10 ** 400) * 1.5",
        "2.5 ** 5000",
        "range('x')",
        "dict(1)",
        "customer()",
        "customer.tags(1)",
        "bad ~ 'x'",
        "boom ~ 'x'",
        "'%d' % 'x'",
        "'%s %s' % (1,)",
        "now | add_days(10 ** 9)",
    ],
)
def test_evaluation_errors_are_expression_errors(ctx: dict[str, Any], source: str) -> None:
    with pytest.raises(ExpressionError):
        ev(source, {**ctx, "bad": jinja2.Undefined(), "boom": _Exploding()})


@pytest.mark.parametrize(
    "source",
    [
        "{{ boom }}",
        "{% for x in 5 %}{% endfor %}",
        "{{ customer.tags|sum }}",
        "{{ 'x'|int + [] }}",
        "{{ [1, 'a']|sort }}",
        "{{ customer|tojson }}",
        "{% macro m(a) %}{% endmacro %}{{ m(1, 2, 3) }}",
    ],
)
def test_render_errors_are_expression_errors(ctx: dict[str, Any], source: str) -> None:
    context = {**ctx, "boom": _Exploding(), "customer": {"when": datetime(2024, 1, 1), "tags": ["a"]}}
    with pytest.raises(ExpressionError):
        rd(source, context)


@settings(
    max_examples=300, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.lists(
        st.sampled_from(list("{}%#()[]'\"|.~*+-/ \nabxyz019_=<>!") + ["{{", "}}", "{%", "%}"]),
        max_size=30,
    ).map("".join)
)
def test_fuzzed_sources_fail_only_with_expression_error(source: str) -> None:
    context = {"a": 1, "b": "x", "x": [1, 2], "y": {"z": 0}}
    for attempt in (lambda: rd(source, context), lambda: ev(source, context)):
        try:
            attempt()
        except ExpressionError:
            pass


# --- sandbox (T19, PIT-T1) -------------------------------------------------------------------

CANARY_VAR = "CAREFLOW_TEST_CANARY"

SSTI_PAYLOADS = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.environ." + CANARY_VAR + " }}",
    "{{ joiner.__init__.__globals__.os.environ }}",
    "{{ lipsum.__globals__['os'].environ }}",
    "{{ lipsum() }}",
    "{{ namespace.__init__.__globals__.os.environ }}",
    "{{ namespace.mro() }}",
    "{{ range.__self__ }}",
    "{{ dict.__init__.__globals__ }}",
    "{{ dict.fromkeys(range(10)) }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{{ '{0.__class__}'.format(1) }}",
    "{{ '{0.__init__.__globals__}'.format(cycler) }}",
    "{{ '{0.__class__}'.format_map({}) }}",
    "{{ 'x'|attr('format') }}",
    "{{ ('x'|attr('format'))('{0.__class__}') }}",
    "{{ 'x'|attr('__class__') }}",
    "{{ '%s'|format(self) }}",
    "{{ [].append(1) }}",
    "{{ {}.update(a=1) }}",
    "{% set d = {} %}{{ d.setdefault('a', 1) }}",
    "{% set x = [1] %}{{ x.pop() }}",
    "{{ config }}",
    "{{ config.items() }}",
    "{{ request }}",
    "{{ request.application.__globals__ }}",
    "{{ url_for.__globals__ }}",
    "{{ get_flashed_messages.__globals__ }}",
    "{{ environ }}",
    "{{ loop }}",
    "{% for x in [1] %}{{ loop.__class__.__init__.__globals__ }}{% endfor %}",
    "{% macro m() %}{% endmacro %}{{ m.__globals__ }}",
    "{% macro m() %}{% endmacro %}{{ m._func.__globals__ }}",
    "{{ range(10**9)|list }}",
    "{{ range(100001)|list|length }}",
    "{{ 'a' * 10**8 }}",
    "{{ 'x' * 10**9 }}",
    "{{ [1] * 10**8 }}",
    "{{ 9**9**9 }}",
    "{{ 2**10**10 }}",
    "{{ 2 ** 100000 }}",
    "{{ (10 ** 999) ** 999 }}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% macro f(n) %}{{ f(n) ~ f(n) }}{% endmacro %}{{ f(1) }}",
    "{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}",
    "{% include '../../.env' %}",
    "{% import 'os' as os %}",
    "{% extends '/etc/passwd' %}",
    "{% from 'x' import y %}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'.ljust(999999999) }}",
    "{{ 'x\ty'.expandtabs(999999999) }}",
    "{{ 'x'|batch(999999999, 'y')|list }}",
    "{{ range(10)|slice(999999999)|list }}",
    "{{ 'x'|wordwrap(1, wrapstring='y' * 99999) }}",
    "{{ 'x'|indent(999999999) }}",
    "{{ 'aaaa'|replace('a', 'b' * 99999) }}",
    "{{ range(10000)|join('x' * 99999) }}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "{{ customer.note }}",
]


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payload_is_refused_or_harmless(monkeypatch: pytest.MonkeyPatch, payload: str) -> None:
    canary = "canary-" + secrets.token_hex(8)
    monkeypatch.setenv(CANARY_VAR, canary)
    context = {"customer": {"note": "{{ cycler.__init__.__globals__.os.environ }}"}}
    started = time.perf_counter()
    try:
        output = rd(payload, context)
    except ExpressionError:
        output = ""
    assert time.perf_counter() - started < 5.0
    assert canary not in output
    assert "<class" not in output
    assert "environ" not in output or output == context["customer"]["note"]
    assert len(output) <= expr.MAX_OUTPUT_CHARS


def test_ssti_corpus_would_catch_a_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus is meaningful: unsandboxed Jinja leaks the canary with these payloads."""
    canary = "canary-" + secrets.token_hex(8)
    monkeypatch.setenv(CANARY_VAR, canary)
    plain = jinja2.Environment()
    leaked = [p for p in SSTI_PAYLOADS[:10] if canary in _render_plain(plain, p)]
    assert leaked, "expected the plain environment to leak through at least one payload"


def _render_plain(env: jinja2.Environment, source: str) -> str:
    """Render with an unsandboxed environment, swallowing its errors."""
    try:
        return env.from_string(source).render()
    except Exception:
        return ""


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{{ ''.__class__ }}", "unsafe"),
        ("{{ '{0.__class__}'.format(1) }}", "unsafe"),
        ("{{ '{}'.format(1) }}", "unsafe"),  # str.format is refused outright, not just sandboxed
        ("{{ 'x'|attr('format') }}", "no filter named 'attr'"),
        ("{{ [].append(1) }}", "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "'cycler' is undefined"),
        ("{{ joiner() }}", "'joiner' is undefined"),
        ("{{ lipsum() }}", "'lipsum' is undefined"),
        ("{{ self._TemplateReference__context }}", "unsafe"),
        ("{% include 'x.html' %}", "'include' is not allowed"),
        ("{% autoescape false %}{% endautoescape %}", "'autoescape' is not allowed"),
        ("{{ x|safe }}", "no filter named 'safe'"),
    ],
)
def test_sandbox_refusals_say_why(payload: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        rd(payload, {"x": "<b>"})


def test_namespace_and_allowed_methods_still_work(ctx: dict[str, Any]) -> None:
    source = (
        "{% set ns = namespace(n=0) %}{% for t in customer.tags %}{% set ns.n = ns.n + 1 %}"
        "{% endfor %}{{ ns.n }} {{ customer.name.strip() }} {{ 'A-B'.lower().split('-') }}"
        " {{ customer.address.items()|list|length }} {{ 'a-b'.replace('-', '+') }}"
    )
    assert rd(source, ctx) == "2 张三 ['a', 'b'] 2 a+b"
    assert rd("{% for t in customer.tags %}{{ loop.cycle('o', 'e') }}{% endfor %}", ctx) == "oe"
    assert ev("now.strftime('%Y') ~ now.date().isoformat()", ctx) == "20242024-05-10"


def test_html_autoescape_escapes_data_but_not_template_text() -> None:
    context = {"name": "<script>alert(1)</script>", "tags": ["<i>"]}
    out = rd("<p>{{ name }}</p><p>{{ 'x' ~ name }}</p>{{ tags|join(',') }}", context, autoescape=True)
    assert out == (
        "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        "<p>x&lt;script&gt;alert(1)&lt;/script&gt;</p>&lt;i&gt;"
    )
    assert rd("<p>{{ name }}</p>", context) == "<p><script>alert(1)</script></p>"


# --- caps -------------------------------------------------------------------------------------


def test_source_length_cap() -> None:
    ok = "1" + " " * (expr.MAX_SOURCE_CHARS - 1)
    assert compile_expression(ok).evaluate({}) == 1
    with pytest.raises(ExpressionError, match="limit of 20000"):
        compile_expression(ok + " ")
    with pytest.raises(ExpressionError, match="limit of 20000"):
        compile_template("x" * (expr.MAX_SOURCE_CHARS + 1))
    with pytest.raises(ExpressionError, match="limit of 20000"):
        render_value("{{ 1 }}" + " " * expr.MAX_SOURCE_CHARS, {})


def test_output_cap() -> None:
    assert len(rd("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}")) == 100_000
    with pytest.raises(ExpressionError, match="template output exceeds 100000"):
        rd("{% for i in range(1000) %}{{ 'x' * 100 }}{% endfor %}!")


def test_range_cap() -> None:
    assert len(ev("range(10000)|list")) == 10_000
    with pytest.raises(ExpressionError, match="exceeds the limit of 10000"):
        ev("range(10001)")
    with pytest.raises(ExpressionError, match="exceeds the limit of 10000"):
        ev("range(0, 10**9, 2)")


def test_repetition_cap() -> None:
    assert len(ev("'a' * 100000")) == 100_000
    assert len(ev("100000 * 'a'")) == 100_000
    with pytest.raises(ExpressionError, match="exceeds the limit of 100000"):
        ev("'a' * 100001")
    with pytest.raises(ExpressionError, match="exceeds the limit of 100000"):
        ev("'ab' * 50001")
    with pytest.raises(ExpressionError, match="exceeds the limit of 100000"):
        ev("['abc'] * 40000")
    with pytest.raises(ExpressionError, match="exceeds the limit of 100000"):
        ev("('a' * 60000) + ('b' * 60000)")
    with pytest.raises(ExpressionError, match="exceeds the limit of 100000"):
        ev("('a' * 60000) ~ ('b' * 60000)")


def test_power_and_integer_caps() -> None:
    assert ev("2 ** 10") == 1024
    assert ev("9**9**9") == 9**81  # Jinja's ** is left-associative: (9**9)**9
    assert ev("2 ** -1") == 0.5
    with pytest.raises(ExpressionError, match="exponent 1001 exceeds"):
        ev("1 ** 1001")
    with pytest.raises(ExpressionError, match="exceeds 4096 bits"):
        ev("(10 ** 999) ** 999")
    with pytest.raises(ExpressionError, match="exceeds 4096 bits"):
        ev("(2 ** 1000) ** 2 * (2 ** 1000) ** 2 * (2 ** 1000) ** 2")


def test_growth_filters_and_methods_are_capped() -> None:
    assert ev("'ab'|replace('a', 'xy')") == "xyb"
    assert ev("'x'|center(5)") == "  x  "
    assert ev("'a\nb'|indent(2)") == "a\n  b"
    assert ev("'%s=%d'|format('n', 3)") == "n=3"
    assert ev("'%05d' % 42") == "00042"
    assert len(ev("('a' * 50000).replace('a', 'bc')")) == 100_000
    for source in [
        "'aaaa'|replace('a', 'b' * 99999)",
        "('a' * 50000).replace('a', 'bcd')",
        "'x'|center(100001)",
        "('a\n' * 30000)|indent(100)",
        "'%0100001d'|format(1)",
        "'%0100001d' % 1",
        "'%*d' % (5, 1)",
        "range(10000)|join('x' * 20)",
    ]:
        with pytest.raises(ExpressionError, match="limit|not allowed"):
            ev(source)
    with pytest.raises(ExpressionError, match="unsafe"):
        ev("'x'.ljust(10)")


def test_work_budget_stops_cpu_runaway() -> None:
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match="work limit"):
        rd("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}")
    with pytest.raises(ExpressionError, match="work limit"):
        rd(
            "{% set r = range(3000)|list %}{% for i in r %}{% for j in r %}{% if i == j %}"
            "{% endif %}{% endfor %}{% endfor %}"
        )
    with pytest.raises(ExpressionError, match="work limit"):
        rd("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}")
    with pytest.raises(ExpressionError, match="work limit"):
        # Buffered (macro) output is not streamed, so it is charged too.
        rd(
            "{% set a = 'x' * 100000 %}{% macro m() %}{% for i in range(10000) %}{{ a }}"
            "{% endfor %}{% endmacro %}{{ m()|length }}"
        )
    assert time.perf_counter() - started < 10.0
    # A normal loop well inside the budget still works.
    assert rd("{% for i in range(10000) %}{% endfor %}{{ range(100)|sum }}") == "4950"


def test_endless_recursion_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="recursion"):
        rd("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}")


# --- caching, validation helpers ----------------------------------------------------------------


def test_compiled_sources_are_cached() -> None:
    assert compile_expression("a == 1") is compile_expression("a == 1")
    assert compile_template("hi {{ a }}") is compile_template("hi {{ a }}")
    assert compile_template("hi {{ a }}") is not compile_template("hi {{ a }}", autoescape=True)
    assert compile_expression("a == 1").source == "a == 1"
    assert compile_template("hi {{ a }}").source == "hi {{ a }}"


def test_undeclared_names() -> None:
    assert undeclared_names("customer.grade == 'A' and vars.score >= x", expression=True) == {
        "customer",
        "vars",
        "x",
    }
    assert undeclared_names("range(3)|list", expression=True) == set()
    assert undeclared_names(
        "{% set y = 1 %}{{ y }}{% for t in customer.tags %}{{ t }}{% endfor %}{{ z }}",
        expression=False,
    ) == {"customer", "z"}
    with pytest.raises(ExpressionError) as info:
        undeclared_names("{{ x", expression=False)
    assert info.value.line == 1
    with pytest.raises(ExpressionError):
        undeclared_names("a b", expression=True)


def test_check_syntax() -> None:
    check_syntax("a and b", expression=True)
    check_syntax("hello {{ name|upper }}", expression=False)
    with pytest.raises(ExpressionError, match="no filter named 'nope'") as info:
        # Jinja would only fail at run time inside an if; authors learn at validation time.
        check_syntax("x\n{% if false %}{{ a|nope }}{% endif %}", expression=False)
    assert info.value.line == 2
    with pytest.raises(ExpressionError, match="no test named 'nope'"):
        check_syntax("a is nope", expression=True)
    with pytest.raises(ExpressionError, match="'import' is not allowed"):
        check_syntax("{% import 'a' as b %}", expression=False)
    with pytest.raises(ExpressionError):
        check_syntax("a ==", expression=True)


# --- filters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("138 0013 8000", "+8613800138000"),
        ("13800138000", "+8613800138000"),
        ("+86 138-0013-8000", "+8613800138000"),
        (13800138000, "+8613800138000"),
        ("+1 650 253 0000", "+16502530000"),
        ("6502530000", None),  # a non-CN number needs its + prefix
        ("12345", None),
        ("not a phone", None),
        ("", None),
        (None, None),
        (True, None),
        ("1" * 300, None),
    ],
)
def test_e164(value: Any, expected: str | None) -> None:
    assert ev("v | e164", {"v": value}) == expected


def test_e164_other_region() -> None:
    assert ev("'020 7946 0018' | e164('GB')") == "+442079460018"
    # Without a + the default region CN applies: 020 is Guangzhou.
    assert ev("'020 7946 0018' | e164") == "+862079460018"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Zhang.San@Example.COM", "zhang.san@example.com"),  # whole address lower-cased for de-duplication
        ("  li@EXAMPLE.cn ", "li@example.cn"),
        ("  a@b.co  ", "a@b.co"),
        ("not-an-email", None),
        ("a@", None),
        ("a@@b.com", None),
        (None, None),
        (123, None),
    ],
)
def test_normalize_email(value: Any, expected: str | None) -> None:
    assert ev("v | normalize_email", {"v": value}) == expected


def test_date_filter() -> None:
    assert ev("v | date", {"v": date(2024, 5, 1)}) == "2024-05-01"
    assert ev("v | date('%Y/%m/%d %H:%M')", {"v": datetime(2024, 5, 1, 9, 30)}) == "2024/05/01 09:30"
    assert ev("'2024-05-01T09:30:00+08:00' | date('%d.%m.%Y %H')") == "01.05.2024 09"
    assert ev("'2024-05-01' | date('%d/%m')") == "01/05"
    assert ev("none | date") is None
    with pytest.raises(ExpressionError, match="not a date"):
        ev("'yesterday' | date")
    with pytest.raises(ExpressionError, match="not a date"):
        ev("42 | date")
    with pytest.raises(ExpressionError, match="format must be a string"):
        ev("'2024-05-01' | date(3)")


def test_days_since(ctx: dict[str, Any]) -> None:
    assert ev("'2024-05-01' | days_since(now)", ctx) == 9
    assert ev("v | days_since(now)", {**ctx, "v": date(2024, 4, 10)}) == 30
    # Calendar days in now's zone: 20:00 UTC on the 9th is already the 10th in Shanghai.
    assert ev("'2024-05-09T20:00:00+00:00' | days_since(now)", ctx) == 0
    assert ev("'2024-05-09T15:00:00Z' | days_since(now)", ctx) == 1
    assert ev("'2024-05-09T15:00:00' | days_since(now)", ctx) == 1  # naive = UTC
    assert ev("v | days_since(now)", {**ctx, "v": datetime(2024, 5, 20, tzinfo=UTC)}) == -10
    assert ev("none | days_since(now)", ctx) is None
    assert ev("customer.last_contact | default(none) | days_since(now)", ctx) is None
    with pytest.raises(ExpressionError, match="not a date"):
        ev("'soon' | days_since(now)", ctx)
    with pytest.raises(ExpressionError, match="'now' is undefined"):
        ev("'2024-05-01' | days_since(now)", {})


def test_add_days() -> None:
    assert ev("'2024-05-01' | add_days(3)") == "2024-05-04"
    assert ev("'2024-05-01T10:00:00+08:00' | add_days(-1)") == "2024-04-30T10:00:00+08:00"
    assert ev("v | add_days(30)", {"v": date(2024, 1, 31)}) == date(2024, 3, 1)
    moment = datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert ev("v | add_days(1)", {"v": moment}) == moment + timedelta(days=1)
    assert ev("none | add_days(1)") is None
    with pytest.raises(ExpressionError, match="must be an integer"):
        ev("'2024-05-01' | add_days('3')")
    with pytest.raises(ExpressionError, match="must be an integer"):
        ev("'2024-05-01' | add_days(1.5)")
    with pytest.raises(ExpressionError, match="out of range"):
        ev("'9999-12-31' | add_days(1)")
    with pytest.raises(ExpressionError, match="not a date"):
        ev("'never' | add_days(1)")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+8613800138000", "+86138****8000"),
        ("138 0013 8000", "+86138****8000"),
        ("+1 650 253 0000", "+1650***0000"),
        ("12345", "*****"),
        ("abcdefgh12", "******gh12"),
        (None, None),
    ],
)
def test_mask_phone(value: Any, expected: str | None) -> None:
    assert ev("v | mask_phone", {"v": value}) == expected


def test_filters_reject_undefined_input() -> None:
    for name in ["e164", "normalize_email", "date", "mask_phone", "add_days(1)", "single_line"]:
        with pytest.raises(ExpressionError, match="'missing' is undefined"):
            ev(f"missing | {name}")


# --- header injection (PIT-E1) --------------------------------------------------------------


def test_single_line() -> None:
    assert single_line("续约提醒：张三") == "续约提醒：张三"
    assert single_line("") == ""
    for bad in ["a\r\nBcc: x@evil", "a\nb", "a\rb", "a\u2028b", "a\x85b", "a\x0bb", "end\n"]:
        with pytest.raises(ExpressionError, match="single line"):
            single_line(bad)
    with pytest.raises(ExpressionError):
        single_line(None)  # type: ignore[arg-type]


def test_single_line_on_rendered_subject() -> None:
    subject = compile_template("关于 {{ customer.name }} 的回访")
    assert single_line(subject.render({"customer": {"name": "张三"}})) == "关于 张三 的回访"
    evil = subject.render({"customer": {"name": "x\r\nBcc: x@evil"}})
    with pytest.raises(ExpressionError):
        single_line(evil)
    with pytest.raises(ExpressionError, match="single line"):
        rd("{{ name | single_line }}", {"name": "x\r\nBcc: x@evil"})


# --- purity ---------------------------------------------------------------------------------


def test_module_imports_only_allowed_packages() -> None:
    import ast
    from pathlib import Path

    tree = ast.parse(Path(expr.__file__).read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    allowed_third_party = {"jinja2", "phonenumbers", "email_validator", "engine"}
    import sys

    assert roots - allowed_third_party <= set(sys.stdlib_module_names)
    assert "flask" not in roots

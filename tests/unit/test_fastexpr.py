"""The plain-Python evaluator (engine/fastexpr.py) against Jinja: same value, or it steps aside.

Each expression is evaluated both ways: through the fast path (``Expression.evaluate`` uses it
when the tree is simple) and through Jinja alone (the same compiled expression without it).
"""

from __future__ import annotations

from typing import Any

import pytest

from engine import expr
from engine.errors import ExpressionError

CONTEXT: dict[str, Any] = {
    "customer": {"name": "张伟", "phone": "138 0013 8000", "email": " Zhang.Wei@Example.COM ", "expected_value": 30000.0,
                 "owner": "wang", "grade": None, "tags": ["vip"], "address": {"city": "上海"}, "items": "shadowed"},
    "vars": {"welcome_call": {"preferred_channel": "sms", "call_notes": "很满意"}, "count": 3, "flag": False},
    "instance": {"id": 7},
}

SIMPLE = [
    "customer.owner",
    "customer['name']",
    "customer.address.city",
    "customer.grade",
    "vars.count >= 3",
    "vars.count > 1 and vars.count < 5",
    "1 < vars.count < 3",
    "not vars.flag",
    "vars.flag or customer.owner",
    "'A' if (customer.expected_value or 0) >= 100000 else ('B' if (customer.expected_value or 0) >= 20000 else 'C')",
    "customer.phone | e164",
    "(customer.email | normalize_email) or customer.email",
    "vars.welcome_call.preferred_channel | default(customer.owner)",
    "vars.missing.deeper | default('none')",
    "customer.address.zip | default(customer.grade)",
    "'vip' in customer.tags",
    "customer.name | upper",
    "customer.email | trim | lower",
]

LEFT_TO_JINJA = ["customer.items", "customer.name ~ '!'", "vars.count + 1", "range(3) | list", "customer.tags[0]",
                 "customer.name.startswith('张')", "dict(a=1)"]

FAILING = ["customer.missing == 1", "vars.missing", "customer.nope.deeper | upper", "customer.expected_value < 'x'",
           "customer.missing or 1"]


def without_fast(compiled: expr.Expression) -> expr.Expression:
    return expr.Expression(compiled.source, compiled._template, compiled._paths, compiled._line)


@pytest.mark.parametrize("source", SIMPLE)
def test_a_simple_expression_is_evaluated_without_jinja_to_the_same_value(source: str) -> None:
    compiled = expr.compile_expression(source)
    assert compiled._fast is not None
    assert compiled.evaluate(CONTEXT) == without_fast(compiled).evaluate(CONTEXT)


@pytest.mark.parametrize("source", LEFT_TO_JINJA)
def test_anything_else_is_left_to_jinja(source: str) -> None:
    assert expr.compile_expression(source)._fast is None


@pytest.mark.parametrize("source", FAILING)
def test_a_failing_expression_fails_as_in_jinja(source: str) -> None:
    compiled = expr.compile_expression(source)
    with pytest.raises(ExpressionError) as fast:
        compiled.evaluate(CONTEXT)
    with pytest.raises(ExpressionError) as jinja:
        without_fast(compiled).evaluate(CONTEXT)
    assert str(fast.value) == str(jinja.value)


@pytest.mark.parametrize("source", [
    "{{ customer.name }}：欢迎加入 / welcome aboard",
    "欢迎电话：{{ vars.welcome_call.call_notes }} ({{ vars.count }}, {{ customer.grade }}, {{ vars.flag }})",
    "{{ customer.expected_value }} {{ customer.address.city | default('-') }}",
])
def test_a_simple_template_renders_without_jinja_to_the_same_text(source: str) -> None:
    compiled = expr.compile_template(source)
    assert compiled._fast is not None
    jinja = expr.Template(source, compiled._template, compiled._paths, autoescape=False)
    assert compiled.render(CONTEXT) == jinja.render(CONTEXT)


def test_a_template_printing_a_missing_value_fails_as_in_jinja() -> None:
    compiled = expr.compile_template("你好 {{ customer.nickname }}")
    with pytest.raises(ExpressionError, match="nickname"):
        compiled.render(CONTEXT)


def test_html_templates_are_always_rendered_by_jinja() -> None:
    assert expr.compile_template("<p>{{ customer.name }}</p>", autoescape=True)._fast is None

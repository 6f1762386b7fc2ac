"""Plain-Python evaluation of the simplest expressions and templates, with Jinja as the reference.

Most expressions in flows are a path into the data (``customer.owner``), a comparison, a choice
(``'A' if … else 'B'``) or one of a few filters (``e164``, ``default``), and most templates are
text with such expressions in ``{{ }}``. Rendering those through the sandboxed Jinja environment
costs 30-60 µs each (a new context, the work budget, the generated code); evaluated here from
the same parsed tree they cost a few µs.

This is an optimisation only, never a second semantics: ``compile_expression`` /
``compile_template`` return None for any tree using something not listed here, and at run time
anything unusual (a missing name used other than through ``default``, a value that is not plain
data, an error of any kind) raises ``Fallback``, upon which ``engine.expr`` evaluates the same
source with Jinja, which gives the answer or the error. What is evaluated here follows the
sandbox exactly:

* a name is looked up in the context; ``a.b`` / ``a['b']`` on a dict is its item (a name that is
  also a dict method, or a private one, is left to Jinja); a missing one is undefined, which only
  ``default`` may take (Jinja's undefined is chainable but strict on any other use);
* constants, comparisons, ``and`` / ``or`` / ``not``, ``x if c else y``, and the filters
  ``default``/``d`` (one argument), ``e164``, ``normalize_email``, ``lower``, ``upper``, ``trim``
  on plain values;
* template output of text, numbers, booleans and None, as Jinja's ``str()``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes

Evaluator = Callable[[Mapping[str, Any]], Any]

#: Inputs longer than this (to a filter, or output) are left to Jinja and its work budget.
MAX_PLAIN_CHARS = 10_000


class Fallback(Exception):
    """This evaluation needs Jinja."""


class _Unsupported(Exception):
    """This tree needs Jinja."""


class _Undefined:
    __slots__ = ()


UNDEFINED = _Undefined()

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "lteq": operator.le, "gt": operator.gt,
    "gteq": operator.ge, "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}
_PLAIN = (str, int, float, bool, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)


def _defined(value: Any) -> Any:
    if value is UNDEFINED:
        raise Fallback
    return value


def _text(value: Any) -> str:
    if type(value) is not str or len(value) > MAX_PLAIN_CHARS:
        raise Fallback
    return value


def _filters() -> dict[str, Callable[..., Any]]:
    from engine import expr  # the sandbox's own filter functions (engine.expr imports this module)

    return {
        "e164": lambda value, *args: expr._filter_e164(_text(value), *args),
        "normalize_email": lambda value: expr._filter_normalize_email(_text(value)),
        "lower": lambda value: _text(value).lower(),
        "upper": lambda value: _text(value).upper(),
        "trim": lambda value: _text(value).strip(),
    }


def _text_filters() -> dict[str, Callable[[str], Any]]:
    """The filters above without arguments, as functions of a text ``_text`` has let through: what
    the sandbox's filter gives for a defined string, without its checks of other values."""
    from engine import expr

    return {
        "e164": expr.e164_of_text,
        "normalize_email": expr.normalized_email_of_text,
        "lower": str.lower,
        "upper": str.upper,
        "trim": str.strip,
    }


_FILTERS: dict[str, Callable[..., Any]] = {}
_TEXT_FILTERS: dict[str, Callable[[str], Any]] = {}


def compile_expression(node: nodes.Node, reserved: frozenset[str]) -> Evaluator | None:
    """An evaluator of an expression tree, or None if it needs Jinja. ``reserved``: global names."""
    try:
        return _compile(node, reserved)
    except _Unsupported:
        return None


def compile_template(tree: nodes.Template, reserved: frozenset[str]) -> Evaluator | None:
    """A renderer of a template made only of text and supported expressions, or None."""
    parts: list[str | Evaluator] = []
    try:
        for output in tree.body:
            if not isinstance(output, nodes.Output):
                return None
            for node in output.nodes:
                if isinstance(node, nodes.TemplateData):
                    parts.append(node.data)
                else:
                    parts.append(_compile(node, reserved))
    except _Unsupported:
        return None
    evaluators = [part for part in parts if not isinstance(part, str)]
    if len(evaluators) == 1:
        return _one_value_renderer(parts, evaluators[0])

    def render(context: Mapping[str, Any]) -> str:
        pieces = []
        for part in parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            value = part(context)
            if type(value) not in _PLAIN:
                raise Fallback
            pieces.append(str(value))
        text = "".join(pieces)
        if len(text) > MAX_PLAIN_CHARS:
            raise Fallback
        return text

    return render


def _one_value_renderer(parts: list[str | Evaluator], value_of: Evaluator) -> Evaluator:
    """``render`` of a template with one ``{{ }}``, the commonest (a name in a sentence): the text
    around it joined once, here, instead of piece by piece at each render."""
    at = parts.index(value_of)
    before, after = "".join(parts[:at]), "".join(parts[at + 1:])  # type: ignore[arg-type]

    def render(context: Mapping[str, Any]) -> str:
        value = value_of(context)
        if type(value) not in _PLAIN_TYPES:
            raise Fallback
        text = before + str(value) + after
        if len(text) > MAX_PLAIN_CHARS:
            raise Fallback
        return text

    return render


def _compile(node: nodes.Node, reserved: frozenset[str]) -> Evaluator:  # noqa: C901 - one case per node type
    if isinstance(node, nodes.Const):
        value = node.value
        if type(value) not in _PLAIN:
            raise _Unsupported
        return lambda ctx: value
    if isinstance(node, nodes.Name):
        name = node.name
        if node.ctx != "load" or name in reserved:
            raise _Unsupported
        return lambda ctx: ctx.get(name, UNDEFINED)
    if isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            key = node.attr
        elif isinstance(node.arg, nodes.Const) and type(node.arg.value) is str:
            key = node.arg.value
        else:
            raise _Unsupported
        if node.ctx != "load" or key.startswith("_") or hasattr(dict, key):
            raise _Unsupported
        if isinstance(node.node, nodes.Name) and node.node.ctx == "load" and node.node.name not in reserved:
            return _name_item(node.node.name, key)
        inner = _compile(node.node, reserved)

        def item(ctx: Mapping[str, Any]) -> Any:
            obj = inner(ctx)
            if obj is UNDEFINED:
                return UNDEFINED  # chainable: customer.address.city with no address
            if type(obj) is not dict:
                raise Fallback
            return obj.get(key, UNDEFINED)

        return item
    if isinstance(node, nodes.Compare):
        first = _compile(node.expr, reserved)
        ops = [(_COMPARE[o.op], _compile(o.expr, reserved)) for o in node.ops if o.op in _COMPARE]
        if len(ops) != len(node.ops):
            raise _Unsupported
        if len(ops) == 1:
            return _compare_one(first, *ops[0])

        def compare(ctx: Mapping[str, Any]) -> Any:
            left = _defined(first(ctx))
            result: Any = True
            for op, right_of in ops:
                right = _defined(right_of(ctx))
                result = op(left, right)
                if not result:
                    return result
                left = right
            return result

        return compare
    if isinstance(node, nodes.And):
        left_and, right_and = _compile(node.left, reserved), _compile(node.right, reserved)
        return lambda ctx: _defined(left_and(ctx)) and _defined(right_and(ctx))
    if isinstance(node, nodes.Or):
        return _or(_compile(node.left, reserved), _compile(node.right, reserved))
    if isinstance(node, nodes.Not):
        operand = _compile(node.node, reserved)
        return lambda ctx: not _defined(operand(ctx))
    if isinstance(node, nodes.CondExpr):
        if node.expr2 is None:
            raise _Unsupported
        test, yes, no = (_compile(n, reserved) for n in (node.test, node.expr1, node.expr2))

        def choice(ctx: Mapping[str, Any]) -> Any:
            chosen = test(ctx)
            if chosen is UNDEFINED:
                raise Fallback
            return yes(ctx) if chosen else no(ctx)

        return choice
    if isinstance(node, nodes.Filter):
        return _compile_filter(node, reserved)
    raise _Unsupported


def _compare_one(first: Evaluator, op: Callable[[Any, Any], Any], right_of: Evaluator) -> Evaluator:
    """``a < b``: the loop of ``compare`` for one comparison."""

    def compare(ctx: Mapping[str, Any]) -> Any:
        left = first(ctx)
        if left is UNDEFINED:
            raise Fallback
        right = right_of(ctx)
        if right is UNDEFINED:
            raise Fallback
        return op(left, right)

    return compare


def _or(left_of: Evaluator, right_of: Evaluator) -> Evaluator:
    """``a or b``: ``a`` if true, else ``b``; either undefined (when evaluated) needs Jinja."""

    def either(ctx: Mapping[str, Any]) -> Any:
        left = left_of(ctx)
        if left is UNDEFINED:
            raise Fallback
        if left:
            return left
        right = right_of(ctx)
        if right is UNDEFINED:
            raise Fallback
        return right

    return either


def _name_item(name: str, key: str) -> Evaluator:
    """``name.key``: the Name's evaluator and the item's in one call (the commonest expression)."""

    def name_item(ctx: Mapping[str, Any]) -> Any:
        obj = ctx.get(name, UNDEFINED)
        if obj is UNDEFINED:
            return UNDEFINED
        if type(obj) is not dict:
            raise Fallback
        return obj.get(key, UNDEFINED)

    return name_item


def _compile_filter(node: nodes.Filter, reserved: frozenset[str]) -> Evaluator:
    if node.node is None or node.kwargs or node.dyn_args is not None or node.dyn_kwargs is not None:
        raise _Unsupported
    value_of = _compile(node.node, reserved)
    args = [_compile(arg, reserved) for arg in node.args]
    if node.name in ("default", "d"):
        if len(args) != 1:
            raise _Unsupported
        fallback = args[0]

        def default(ctx: Mapping[str, Any]) -> Any:
            value = value_of(ctx)
            other = fallback(ctx)  # evaluated either way, as Jinja does
            return other if value is UNDEFINED else value

        return default
    if not _FILTERS:
        _FILTERS.update(_filters())
        _TEXT_FILTERS.update(_text_filters())
    function = _FILTERS.get(node.name)
    if function is None:
        raise _Unsupported
    if not args:  # a filter without arguments (e164, lower...): the text checked here, in one call
        return _text_filter(value_of, _TEXT_FILTERS[node.name])
    return lambda ctx: function(_defined(value_of(ctx)), *(_defined(arg(ctx)) for arg in args))


def _text_filter(value_of: Evaluator, function: Callable[[str], Any]) -> Evaluator:
    """``value | filter`` for a filter of ``_TEXT_FILTERS``: Fallback unless the value is a text
    within the size limit (undefined included, as ``_defined`` and ``_text`` would have it)."""

    def text_filter(ctx: Mapping[str, Any]) -> Any:
        value = value_of(ctx)
        if type(value) is not str or len(value) > MAX_PLAIN_CHARS:
            raise Fallback
        return function(value)

    return text_filter

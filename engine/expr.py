"""The one expression and template language: sandboxed Jinja2 for conditions, values and messages.

Flow authors (operations staff) write Jinja expressions (``customer.grade == 'A'``) and templates
(``您好 {{ customer.name }}``). Their text runs in an ``ImmutableSandboxedEnvironment`` with a
strict-but-chainable undefined, an allow-list of filters, globals and methods, and caps on source
size, output size, ``range()``, string/list growth, integer size and total work per evaluation.
Customer data passed in the context is only ever data: it is never parsed as a template.

Every failure, at compile or at run time, surfaces as :class:`~engine.errors.ExpressionError`
carrying the 1-based line in the source (0 when unknown).

This module is pure: it imports only the standard library, jinja2, phonenumbers, email_validator,
engine.errors and engine.fastexpr (which evaluates the simplest trees without Jinja, same results).
"""

from __future__ import annotations

import contextvars
import functools
import re
import types
from collections.abc import Callable, Iterator, Mapping, MappingView
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import jinja2
import phonenumbers
from jinja2 import nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.filters import FILTERS as _JINJA_FILTERS
from jinja2.meta import find_undeclared_variables
from jinja2.parser import Parser
from jinja2.runtime import (
    ChainableUndefined,
    Context,
    LoopContext,
    Macro,
    Markup,
    StrictUndefined,
    Undefined,
)
from jinja2.runtime import markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context, pass_eval_context
from jinja2.visitor import NodeTransformer

from engine import contact, fastexpr
from engine.errors import ExpressionError

__all__ = [
    "Expression",
    "Template",
    "check_syntax",
    "compile_expression",
    "compile_template",
    "is_template",
    "render_value",
    "single_line",
    "undeclared_names",
]


def _version_tuple(text: str) -> tuple[int, ...]:
    """Turn '3.1.6' (or '3.2.0rc1') into a comparable tuple of its leading integers."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


# Four sandbox escapes were fixed up to 3.1.6 (CVE-2025-27516 via |attr): refuse older ones.
if _version_tuple(jinja2.__version__) < (3, 1, 6):  # pragma: no cover - depends on the install
    raise ImportError(f"engine.expr needs jinja2 >= 3.1.6, found {jinja2.__version__}")

MAX_SOURCE_CHARS = 20_000
MAX_OUTPUT_CHARS = 100_000
MAX_RANGE = 10_000
MAX_EXPONENT = 1_000
MAX_INT_BITS = 4_096
# Loop iterations + characters produced + filter/method input sizes, per evaluation. The sandbox
# does not bound CPU; this keeps nested loops and repeated growth from running away.
MAX_WORK = 2_000_000
_MACRO_CALL_COST = 100  # a macro call costs microseconds; binary recursion must stop early
_MAX_DEPTH = 100
_CACHE_SIZE = 4_096

_RESULT = "_careflow_result"
_OUT_FILTER = "careflow:out"  # not a valid identifier, so authors cannot name these filters
_ITER_FILTER = "careflow:iter"
_CONCAT_FILTER = "careflow:concat"
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # everything str.splitlines() splits on
_FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
    # {% autoescape false %} would let customer data through unescaped into HTML.
    nodes.ScopedEvalContextModifier: "autoescape",
    nodes.EvalContextModifier: "autoescape",
}


# ---------------------------------------------------------------------------------------------
# Work budget
# ---------------------------------------------------------------------------------------------


class _Budget:
    """Remaining work units for one evaluation or render."""

    __slots__ = ("remaining",)

    def __init__(self, units: int) -> None:
        self.remaining = units


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "careflow_expr_budget", default=None
)


def _charge(units: int) -> None:
    """Spend work units; compile-time constant folding runs without a budget and is not charged."""
    budget = _BUDGET.get()
    if budget is None:
        return
    budget.remaining -= units
    if budget.remaining < 0:
        raise ExpressionError(
            f"expression exceeds the work limit of {MAX_WORK} steps (loop or output too large)"
        )


def _size(value: Any) -> int:
    """Cheap size estimate: length of strings and containers, 0 for anything else."""
    if isinstance(value, (str, list, tuple, dict, set, frozenset, range)):
        return len(value)
    return 0


def _cost(value: Any) -> int:
    """Work to scan ``value``: items are visited in Python, while C scans strings ~100x faster."""
    if isinstance(value, str):
        return len(value) // 100
    return _size(value)


def _approx_chars(value: Any) -> int:
    """Approximate footprint of a sequence: items, counting a string item by its length."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return sum(max(1, _size(item)) for item in value)
    return 1


def _check_growth(size: int, what: str) -> None:
    """Refuse an operation whose result would exceed the output cap, before it is built."""
    if size > MAX_OUTPUT_CHARS:
        raise ExpressionError(
            f"{what} result of size {size} exceeds the limit of {MAX_OUTPUT_CHARS}"
        )
    _charge(size)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.S)


def _check_percent_format(fmt: str) -> None:
    """Refuse %-format widths/precisions that would blow up the output."""
    for match in _PERCENT_SPEC.finditer(fmt):
        for number in match.group(1, 2):
            if number == "*":
                raise ExpressionError("'*' width or precision is not allowed in % formatting")
            if number is not None and int(number) > MAX_OUTPUT_CHARS:
                raise ExpressionError(
                    f"format width {number} exceeds the limit of {MAX_OUTPUT_CHARS}"
                )


def _check_replace(text: str, old: Any, new: Any, count: Any) -> None:
    """Refuse a str.replace whose result would exceed the output cap."""
    old_s, new_s = str(old), str(new)
    hits = text.count(old_s) if old_s else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_growth(len(text) + hits * (len(new_s) - len(old_s)), "replace()")


# ---------------------------------------------------------------------------------------------
# Undefined, sandbox and environment
# ---------------------------------------------------------------------------------------------


class _Undefined(ChainableUndefined, StrictUndefined):
    """Strict on use (print, test, compare, iterate) but chainable on access.

    ``customer.address.city is defined`` and ``... | default('-')`` work when ``address`` is
    missing, while printing or comparing a missing value still raises.
    """

    __slots__ = ()


# Which methods authors may call, by receiver type. Anything else callable is refused: the
# sandbox's deny-list alone has been escaped four times [PIT-T1].
_SAFE_METHODS: tuple[tuple[type | tuple[type, ...], frozenset[str]], ...] = (
    (
        str,
        frozenset(
            {
                "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum",
                "isalpha", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "isupper",
                "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind",
                "rindex", "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith",
                "strip", "swapcase", "title", "upper",
            }
        ),
    ),
    (Mapping, frozenset({"get", "items", "keys", "values"})),
    ((list, tuple), frozenset({"count", "index"})),
    (datetime, frozenset({"date", "time", "timestamp"})),
    ((date, time), frozenset({"isoformat", "isoweekday", "replace", "strftime", "weekday"})),
    (LoopContext, frozenset({"changed", "cycle"})),
)


def _method_allowed(obj: Any, attr: str) -> bool:
    """Whether ``obj.attr`` is an allow-listed method."""
    return any(isinstance(obj, kind) and attr in names for kind, names in _SAFE_METHODS)


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with an attribute allow-list and operators that cannot run away."""

    intercepted_binops = frozenset({"+", "*", "**", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Refuse private/internal/mutating attributes, and any method not on the allow-list."""
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(value, Undefined):
            return True
        if callable(value):
            return _method_allowed(obj, attr)
        return True

    def getattr(self, obj: Any, attribute: str) -> Any:
        """Chain through undefined values so the error names the missing root, not a dunder."""
        if isinstance(obj, Undefined):
            return obj
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Same as getattr for ``x[key]``."""
        if isinstance(obj, Undefined):
            return obj
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Never hand out str.format/format_map: every sandbox escape so far went through them."""
        return None

    def call(  # noqa: N805 - dunder names as in Jinja, so kwargs cannot collide
        __self, __context: Context, __obj: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """Charge the call, bound str.replace growth and refuse format methods."""
        receiver = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(receiver, str):
            if name in ("format", "format_map"):
                raise SecurityError("str.format is not allowed; use the 'format' filter")
            if name == "replace" and len(args) >= 2:
                _check_replace(receiver, args[0], args[1], args[2] if len(args) > 2 else -1)
        _charge(_MACRO_CALL_COST if isinstance(__obj, Macro) else 1 + _cost(receiver))
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """Apply + * ** % with size checks made before the result is built."""
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int):
                if abs(right) > MAX_EXPONENT:
                    raise ExpressionError(f"exponent {right} exceeds the limit of {MAX_EXPONENT}")
                if right > 0 and abs(left).bit_length() * right > MAX_INT_BITS:
                    raise ExpressionError(f"result of ** exceeds {MAX_INT_BITS} bits")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise ExpressionError(f"result of * exceeds {MAX_INT_BITS} bits")
            elif isinstance(right, int) and isinstance(left, (str, list, tuple)):
                _check_growth(_approx_chars(left) * max(right, 0), "repetition")
            elif isinstance(left, int) and isinstance(right, (str, list, tuple)):
                _check_growth(_approx_chars(right) * max(left, 0), "repetition")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_growth(_approx_chars(left) + _approx_chars(right), "concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_percent_format(left)
            result = self.binop_table[operator](left, right)
            _check_growth(len(result), "% formatting")
            return result
        _charge(1)
        return self.binop_table[operator](left, right)


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def _require_defined(*values: Any) -> None:
    """Raise the undefined error of the first undefined argument."""
    for value in values:
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()


def _metered(func: Callable[..., Any], *, constant_time: bool = False) -> Callable[..., Any]:
    """Wrap a filter so each call spends work in proportion to its input."""
    offset = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(func)  # copies jinja_pass_arg, so Jinja passes context the same way
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        scanned = 0 if constant_time or len(args) <= offset else _cost(args[offset])
        _charge(1 + scanned)
        return func(*args, **kwargs)

    return wrapper


def _filter_e164(value: Any, region: str = "CN") -> str | None:
    """Phone number in E.164 ('+8613800138000'), or None when it is not a valid number."""
    _require_defined(value, region)
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return contact.e164(value, str(region))


def _filter_normalize_email(value: Any) -> str | None:
    """Normalised e-mail address, or None when it is not valid (no DNS lookup)."""
    _require_defined(value)
    if not isinstance(value, str):
        return None
    return contact.normalize_email(value)


def e164_of_text(text: str) -> str | None:
    """``_filter_e164(text)`` for a str: nothing of it to check (engine.fastexpr's quick filter)."""
    return contact.e164(text, "CN")


def normalized_email_of_text(text: str) -> str | None:
    """``_filter_normalize_email(text)`` for a str (engine.fastexpr's quick filter)."""
    return contact.normalize_email(text)


def _as_temporal(value: Any, what: str) -> date:
    """A date or datetime from a date, datetime or ISO-8601 string."""
    _require_defined(value)
    if isinstance(value, date):  # datetime is a date subclass
        return value
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        for parse in (date.fromisoformat, datetime.fromisoformat):
            try:
                return parse(text)
            except ValueError:
                continue
    raise ExpressionError(f"{what}: {value!r} is not a date, datetime or ISO-8601 string")


def _filter_date(value: Any, fmt: str = "%Y-%m-%d") -> str | None:
    """Format a date, datetime or ISO-8601 string with strftime; None stays None."""
    _require_defined(value, fmt)
    if value is None:
        return None
    if not isinstance(fmt, str):
        raise ExpressionError("date: the format must be a string")
    result = _as_temporal(value, "date").strftime(fmt)
    _check_growth(len(result), "date()")
    return result


def _filter_days_since(value: Any, now: Any) -> int | None:
    """Calendar days from ``value`` to ``now`` in now's time zone (naive datetimes taken as UTC)."""
    _require_defined(value, now)
    if value is None:
        return None
    then = _as_temporal(value, "days_since")
    current = _as_temporal(now, "days_since (now)")
    if isinstance(current, datetime):
        if isinstance(then, datetime):
            if (then.tzinfo is None) != (current.tzinfo is None):
                # Mixing naive and aware: the engine stores UTC, so a naive value is UTC.
                then = then if then.tzinfo else then.replace(tzinfo=timezone.utc)
                current = current if current.tzinfo else current.replace(tzinfo=timezone.utc)
            if current.tzinfo is not None:
                then = then.astimezone(current.tzinfo)
            then = then.date()
        current = current.date()
    elif isinstance(then, datetime):
        then = then.date()
    return (current - then).days


def _filter_add_days(value: Any, days: Any) -> Any:
    """Add whole days; a string comes back as an ISO string, a date/datetime as the same type."""
    _require_defined(value, days)
    if value is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int):
        raise ExpressionError(f"add_days: the number of days must be an integer, not {days!r}")
    moment = _as_temporal(value, "add_days")
    try:
        result = moment + timedelta(days=days)
    except OverflowError:
        raise ExpressionError("add_days: the date is out of range") from None
    return result.isoformat() if isinstance(value, str) else result


def _filter_mask_phone(value: Any) -> str | None:
    """Hide the middle digits of a phone number ('+8613800138000' -> '+86138****8000')."""
    _require_defined(value)
    if value is None:
        return None
    text = str(value).strip()
    e164 = _filter_e164(text)
    if e164 is not None:
        number = phonenumbers.parse(e164)
        prefix = f"+{number.country_code}"
        national = e164[len(prefix) :]
        if len(national) > 7:
            return prefix + national[:3] + "*" * (len(national) - 7) + national[-4:]
        return prefix + "*" * (len(national) - 2) + national[-2:]
    # Not a recognisable number: show at most the last 4 characters, none of a short one.
    if len(text) <= 7:
        return "*" * len(text)
    return "*" * (len(text) - 4) + text[-4:]


def single_line(text: str) -> str:
    """Return ``text``; raise ExpressionError if it has a line break (header injection, PIT-E1)."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected text for a single-line value, got {type(text).__name__}")
    for char in _LINE_BREAKS:
        if char in text:
            raise ExpressionError(
                f"value must be a single line but contains {char!r} (header injection?)"
            )
    return text


def _filter_single_line(value: Any) -> str:
    """Filter form of single_line for subjects and headers."""
    _require_defined(value)
    return single_line(str(value))


@pass_eval_context
def _filter_join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    """Jinja's join, refusing results over the output cap."""
    _require_defined(value)
    items = list(value)
    _check_growth(len(items) * len(str(d)) + sum(_size(item) for item in items), "join")
    result = _JINJA_FILTERS["join"](eval_ctx, items, d, attribute)
    _check_growth(len(result), "join")
    return result


@pass_eval_context
def _filter_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> str:
    """Jinja's replace, refusing results over the output cap."""
    _require_defined(value)
    _check_replace(str(value), old, new, count)
    return _JINJA_FILTERS["replace"](eval_ctx, value, old, new, count)


def _filter_center(value: Any, width: int = 80) -> str:
    """Jinja's center with a bounded width."""
    _require_defined(value)
    if isinstance(width, int):
        _check_growth(max(width, len(str(value))), "center")
    return _JINJA_FILTERS["center"](value, width)


def _filter_indent(
    value: Any, width: int | str = 4, first: bool = False, blank: bool = False
) -> str:
    """Jinja's indent with a bounded result."""
    _require_defined(value)
    text = str(value)
    pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _check_growth(len(text) + (text.count("\n") + 1) * max(pad, 0), "indent")
    return _JINJA_FILTERS["indent"](value, width, first, blank)


def _filter_format(value: Any, *args: Any, **kwargs: Any) -> str:
    """Jinja's %-style format with bounded widths and result."""
    _require_defined(value)
    _check_percent_format(str(value))
    result = _JINJA_FILTERS["format"](value, *args, **kwargs)
    _check_growth(len(result), "format")
    return result


@pass_context
def _internal_out(context: Context, value: Any) -> Any:
    """Charge one output piece (also inside macros, set-blocks and call-blocks) and pass it on."""
    _charge(1 + _size(value))
    return value


@pass_context
def _internal_iter(context: Context, iterable: Any) -> Iterator[Any]:
    """Charge each loop iteration."""
    for item in iterable:
        _charge(1)
        yield item


@pass_eval_context
def _internal_concat(eval_ctx: Any, parts: tuple[Any, ...]) -> str:
    """The ``~`` operator, refusing results over the output cap before joining."""
    _require_defined(*parts)
    texts = [part if isinstance(part, str) else str(part) for part in parts]
    _check_growth(sum(len(text) for text in texts), "~")
    # Same join Jinja uses for ~: escapes the plain parts when any part is markup.
    result = markup_join(parts) if eval_ctx.autoescape else str_join(parts)
    _check_growth(len(result), "~")
    return result


# Built-in filters that are harmless (bounded by their input); dropped: attr (CVE-2025-27516
# route), batch/slice (fill and count arguments allocate unboundedly), wordwrap/urlize/pprint/
# xmlattr (growth or noise), random (non-deterministic), safe (would unescape customer data).
_PLAIN_FILTERS = (
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "filesizeformat",
    "first", "float", "forceescape", "groupby", "int", "items", "last", "length", "list",
    "lower", "map", "max", "min", "reject", "rejectattr", "reverse", "round", "select",
    "selectattr", "sort", "string", "striptags", "sum", "title", "tojson", "trim", "truncate",
    "unique", "upper", "urlencode", "wordcount",
)
_OWN_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _filter_center,
    "format": _filter_format,
    "indent": _filter_indent,
    "join": _filter_join,
    "replace": _filter_replace,
    "e164": _filter_e164,
    "normalize_email": _filter_normalize_email,
    "date": _filter_date,
    "days_since": _filter_days_since,
    "add_days": _filter_add_days,
    "mask_phone": _filter_mask_phone,
    "single_line": _filter_single_line,
}


_CONSTANT_TIME_FILTERS = frozenset({"abs", "count", "d", "default", "first", "length"})


def _range(*args: Any) -> range:
    """range() capped at MAX_RANGE items."""
    _require_defined(*args)
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise ExpressionError(f"range() of {len(rng)} items exceeds the limit of {MAX_RANGE}")
    _charge(len(rng))
    return rng


def _make_env(*, autoescape: bool) -> _Sandbox:
    """One configured sandbox; globals and filters are replaced by allow-lists."""
    env = _Sandbox(undefined=_Undefined, autoescape=autoescape)
    env.globals.clear()  # drops lipsum, cycler, joiner
    env.globals.update({"range": _range, "dict": dict, "namespace": Namespace})
    filters: dict[str, Callable[..., Any]] = {name: _JINJA_FILTERS[name] for name in _PLAIN_FILTERS}
    filters.update(_OWN_FILTERS)
    env.filters.clear()
    env.filters.update(
        {
            name: _metered(func, constant_time=name in _CONSTANT_TIME_FILTERS)
            for name, func in filters.items()
        }
    )
    env.filters.update(
        {_OUT_FILTER: _internal_out, _ITER_FILTER: _internal_iter, _CONCAT_FILTER: _internal_concat}
    )
    return env


_ENV = _make_env(autoescape=False)
_HTML_ENV = _make_env(autoescape=True)
_RESERVED = frozenset(_ENV.globals)  # names the plain-Python evaluator leaves to Jinja


# ---------------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------------


def _internal_filter(name: str, node: nodes.Expr, lineno: int) -> nodes.Filter:
    """A call of one of the metering filters around ``node``."""
    return nodes.Filter(node, name, [], [], None, None, lineno=lineno)


class _Guard(NodeTransformer):
    """Rejects forbidden tags and unknown filters; routes loops, output and ~ through the meters."""

    def __init__(self, env: _Sandbox) -> None:
        self.env = env
        self.paths: dict[str, set[str]] = {}

    def generic_visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> nodes.Node:
        """Reject forbidden nodes anywhere in the tree."""
        for kind, tag in _FORBIDDEN_NODES.items():
            if isinstance(node, kind):
                raise ExpressionError(f"'{tag}' is not allowed in flow templates", line=node.lineno)
        return super().generic_visit(node, *args, **kwargs)

    def visit_Filter(self, node: nodes.Filter) -> nodes.Node:
        """Unknown filters fail at compile time, even inside an if (Jinja would defer those)."""
        if node.name not in self.env.filters or node.name.startswith("careflow:"):
            raise ExpressionError(f"no filter named {node.name!r}", line=node.lineno)
        return self.generic_visit(node)

    def visit_Test(self, node: nodes.Test) -> nodes.Node:
        """Unknown tests fail at compile time."""
        if node.name not in self.env.tests:
            raise ExpressionError(f"no test named {node.name!r}", line=node.lineno)
        return self.generic_visit(node)

    def visit_Getattr(self, node: nodes.Getattr) -> nodes.Node:
        """Remember which static path each attribute hangs off, to name it in undefined errors."""
        path = _static_path(node.node)
        if path is not None:
            self.paths.setdefault(node.attr, set()).add(path)
        return self.generic_visit(node)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Node:
        """Same as visit_Getattr for ``x['key']``."""
        path = _static_path(node.node)
        key = node.arg.value if isinstance(node.arg, nodes.Const) else None
        if path is not None and isinstance(key, str):
            self.paths.setdefault(node.arg.value, set()).add(path)
        return self.generic_visit(node)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        """Charge every iteration."""
        node = self.generic_visit(node)
        node.iter = _internal_filter(_ITER_FILTER, node.iter, node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        """Charge every output piece, template text included (loops repeat it)."""
        node = self.generic_visit(node)
        wrapped: list[nodes.Expr] = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                # Template text is trusted markup: keep it unescaped under autoescape.
                text = nodes.Const(child.data, lineno=child.lineno)
                child = nodes.MarkSafeIfAutoescape(text, lineno=child.lineno)
            wrapped.append(_internal_filter(_OUT_FILTER, child, child.lineno))
        node.nodes = wrapped
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        """Bound ``~`` before the joined string is built."""
        node = self.generic_visit(node)
        parts = nodes.Tuple(list(node.nodes), "load", lineno=node.lineno)
        return _internal_filter(_CONCAT_FILTER, parts, node.lineno)


def _static_path(node: nodes.Node) -> str | None:
    """'customer.address' for a chain of names, attributes and constant keys; None otherwise."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        base = _static_path(node.node)
        return None if base is None else f"{base}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        base = _static_path(node.node)
        return None if base is None else f"{base}[{node.arg.value!r}]"
    return None


def _check_source(source: Any) -> None:
    """Type and size of a source before parsing."""
    if not isinstance(source, str):
        raise ExpressionError(f"expected expression/template text, got {type(source).__name__}")
    if len(source) > MAX_SOURCE_CHARS:
        raise ExpressionError(
            f"source is {len(source)} characters, more than the limit of {MAX_SOURCE_CHARS}"
        )


def _syntax_error(exc: TemplateSyntaxError, source: str) -> ExpressionError:
    """ExpressionError for a Jinja syntax error, keeping its line."""
    return ExpressionError(f"syntax error: {exc.message}", line=exc.lineno or 0, source=source)


def _parse_expression(env: _Sandbox, source: str) -> nodes.Expr:
    """Parse expression syntax (no braces), rejecting trailing text."""
    try:
        parser = Parser(env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError(
                "unexpected text after the expression", parser.stream.current.lineno
            )
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source) from None
    except Exception as exc:  # RecursionError on absurd nesting, MemoryError...
        raise ExpressionError(f"cannot parse expression: {_describe(exc)}", source=source) from None
    return expr


def _parse_template(env: _Sandbox, source: str) -> nodes.Template:
    """Parse template syntax."""
    try:
        return env.parse(source)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source) from None
    except Exception as exc:
        raise ExpressionError(f"cannot parse template: {_describe(exc)}", source=source) from None


def _build(
    env: _Sandbox, tree: nodes.Template, source: str
) -> tuple[jinja2.Template, dict[str, set[str]]]:
    """Guard-transform and compile a parsed tree."""
    guard = _Guard(env)
    tree = guard.visit(tree)
    tree.set_environment(env)
    try:
        return env.from_string(tree), guard.paths
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source) from None
    except Exception as exc:  # Python's own compiler can fail on deep nesting
        raise ExpressionError(f"cannot compile: {_describe(exc)}", source=source) from None


def _expression_tree(expr: nodes.Expr) -> nodes.Template:
    """Wrap an expression as ``{% set _careflow_result = expr %}``."""
    assign = nodes.Assign(nodes.Name(_RESULT, "store"), expr, lineno=expr.lineno)
    return nodes.Template([assign], lineno=1)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    """A clear one-line message for an exception raised while parsing or evaluating."""
    if isinstance(exc, ExpressionError):
        return str(exc)
    if isinstance(exc, SecurityError):
        return f"not allowed: {exc}"
    if isinstance(exc, UndefinedError):
        return str(exc)
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, RecursionError):
        return "recursion too deep (a macro or recursive loop that never ends?)"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_NO_ATTRIBUTE = re.compile(r"^'.*' has no attribute '(?P<name>.*)'$", re.S)


def _template_line(exc: BaseException) -> int:
    """The template line of the innermost template frame in a (Jinja-rewritten) traceback."""
    line = 0
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _translate(
    exc: BaseException, source: str, paths: Mapping[str, set[str]], default_line: int = 0
) -> ExpressionError:
    """Turn any evaluation failure into an ExpressionError naming the missing name and line."""
    message = _describe(exc)
    if isinstance(exc, UndefinedError) and not isinstance(exc, SecurityError):
        match = _NO_ATTRIBUTE.match(message)
        if match is not None:
            owners = paths.get(match.group("name"), set())
            if len(owners) == 1:
                message = f"'{next(iter(owners))}' has no attribute '{match.group('name')}'"
    line = exc.line if isinstance(exc, ExpressionError) and exc.line else _template_line(exc)
    return ExpressionError(message, line=line or default_line, source=source)


def _run(template: jinja2.Template, context: Mapping[str, Any]) -> Iterator[str]:
    """Yield rendered pieces with Jinja's traceback rewriting (for line numbers)."""
    ctx = template.new_context(dict(context))
    try:
        yield from template.root_render_func(ctx)
    except Exception:
        template.environment.handle_exception()  # re-raises with template line numbers


def _native(value: Any, depth: int = 0) -> Any:
    """Plain Python data for an expression result: no Undefined, no lazy iterators, no Markup."""
    if type(value) in _NATIVE_ATOMS and depth <= _MAX_DEPTH:
        return value  # what the checks below return for it, without testing it against the ABCs
    if depth > _MAX_DEPTH:
        raise ExpressionError(f"result is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, dict):
        return {key: _native(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [_native(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_native(item, depth + 1) for item in value)
    if isinstance(value, (range, types.GeneratorType, Iterator, MappingView)):
        items = []
        for item in value:
            _charge(1)
            items.append(_native(item, depth + 1))
        return items
    return value


_NATIVE_ATOMS = frozenset({str, int, float, bool, type(None)})


class Expression:
    """A compiled condition/value expression (Jinja expression syntax, no braces)."""

    __slots__ = ("source", "_template", "_paths", "_line", "_fast")

    def __init__(
        self, source: str, template: jinja2.Template, paths: Mapping[str, set[str]], line: int,
        fast: fastexpr.Evaluator | None = None,
    ) -> None:
        self.source = source
        self._template = template
        self._paths = paths
        self._line = line  # where the expression starts, for errors found in its final value
        self._fast = fast  # plain-Python evaluator of the same tree, when it is simple enough

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate against ``context`` and return the native value; raises only ExpressionError."""
        if self._fast is not None:
            try:
                value = self._fast(context)
                if type(value) in _NATIVE_ATOMS:
                    return value  # what _native gives for it, without the call
                if value is not fastexpr.UNDEFINED:
                    return _native(value)
            except Exception:  # noqa: BLE001 - Jinja evaluates it again and gives the answer or the error
                pass
        token = _BUDGET.set(_Budget(MAX_WORK))
        try:
            ctx = self._template.new_context(dict(context))
            try:
                for _ in self._template.root_render_func(ctx):
                    pass
                return _native(ctx.vars[_RESULT])
            except Exception:
                self._template.environment.handle_exception()  # re-raises with template lines
        except Exception as exc:
            raise _translate(exc, self.source, self._paths, self._line) from None
        finally:
            _BUDGET.reset(token)


class Template:
    """A compiled text template ({{ }} / {% %})."""

    __slots__ = ("source", "autoescape", "_template", "_paths", "_plain", "_fast")

    def __init__(
        self,
        source: str,
        template: jinja2.Template,
        paths: Mapping[str, set[str]],
        *,
        autoescape: bool,
        fast: fastexpr.Evaluator | None = None,
    ) -> None:
        self.source = source
        self.autoescape = autoescape
        self._template = template
        self._paths = paths
        self._plain = _plain_text(source)
        self._fast = None if autoescape else fast  # see Expression._fast

    def __repr__(self) -> str:
        return f"Template({self.source!r}, autoescape={self.autoescape})"

    def render(self, context: Mapping[str, Any]) -> str:
        """Render against ``context``; too much output or any failure raises ExpressionError."""
        if self._plain is not None:
            return self._plain
        if self._fast is not None:
            try:
                return str(self._fast(context))
            except Exception:  # noqa: BLE001 - Jinja renders it again and gives the answer or the error
                pass
        token = _BUDGET.set(_Budget(MAX_WORK))
        try:
            pieces: list[str] = []
            total = 0
            for piece in _run(self._template, context):
                total += len(piece)
                if total > MAX_OUTPUT_CHARS:
                    raise ExpressionError(f"template output exceeds {MAX_OUTPUT_CHARS} characters")
                pieces.append(piece)
            return str("".join(pieces))
        except Exception as exc:
            raise _translate(exc, self.source, self._paths) from None
        finally:
            _BUDGET.reset(token)


def _plain_text(source: str) -> str | None:
    """What a template without any markup renders to, or None if it has markup.

    Text with no ``{`` has no tag, expression or comment: Jinja outputs it as it is, except that it
    drops one trailing newline (``keep_trailing_newline`` is off) and turns ``\r\n`` and ``\r``
    into ``\n`` (text holding ``\r`` is left to Jinja). Such text is within the size caps (the
    source cap is below the output cap), so rendering it needs no context, sandbox or budget.
    """
    if "{" in source or "\r" in source:
        return None
    return source[:-1] if source.endswith("\n") else source


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_expression(source: str) -> Expression:
    """Cached body of compile_expression."""
    expr = _parse_expression(_ENV, source)
    fast = fastexpr.compile_expression(expr, _RESERVED)  # before _build, which rewrites the tree
    template, paths = _build(_ENV, _expression_tree(expr), source)
    return Expression(source, template, paths, expr.lineno, fast)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_template(source: str, autoescape: bool) -> Template:
    """Cached body of compile_template."""
    env = _HTML_ENV if autoescape else _ENV
    tree = _parse_template(env, source)
    fast = None if autoescape else fastexpr.compile_template(tree, _RESERVED)
    template, paths = _build(env, tree, source)
    return Template(source, template, paths, autoescape=autoescape, fast=fast)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _compile_value(source: str) -> Expression | Template:
    """A value string: a lone ``{{ expr }}`` becomes an Expression, anything else a Template."""
    tree = _parse_template(_ENV, source)
    body = tree.body
    if (
        len(body) == 1
        and isinstance(body[0], nodes.Output)
        and len(body[0].nodes) == 1
        and not isinstance(body[0].nodes[0], nodes.TemplateData)
    ):
        expr = body[0].nodes[0]
        fast = fastexpr.compile_expression(expr, _RESERVED)
        template, paths = _build(_ENV, _expression_tree(expr), source)
        return Expression(source, template, paths, expr.lineno, fast)
    fast = fastexpr.compile_template(tree, _RESERVED)
    template, paths = _build(_ENV, tree, source)
    return Template(source, template, paths, autoescape=False, fast=fast)


# ---------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------


def compile_expression(source: str) -> Expression:
    """Compile (cached) a Jinja expression; a syntax error raises ExpressionError with its line."""
    _check_source(source)
    return _compile_expression(source)


def compile_template(source: str, *, autoescape: bool = False) -> Template:
    """Compile (cached) a text template; ``autoescape=True`` for HTML bodies."""
    _check_source(source)
    return _compile_template(source, bool(autoescape))


def is_template(text: str) -> bool:
    """Whether ``text`` contains template markup ({{ or {%)."""
    return isinstance(text, str) and ("{{" in text or "{%" in text)


def is_lone_expression(text: str) -> bool:
    """Whether a value string is one ``{{ expr }}`` and nothing else, so it renders to a native value."""
    if not is_template(text):
        return False
    try:
        _check_source(text)
        return isinstance(_compile_value(text), Expression)
    except (ExpressionError, TemplateSyntaxError):
        return False


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string in dicts/lists/tuples; a lone ``{{ expr }}`` yields its native value."""
    kind = type(value)
    if kind is str:
        if "{{" not in value and "{%" not in value:  # is_template
            return value
        compiled = _VALUES.get(value)
        if compiled is None:
            compiled = _value_of(value)
        if type(compiled) is Expression:
            return compiled.evaluate(context)
        return compiled.render(context)
    if kind is dict:
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, str):
        if not is_template(value):
            return value
        _check_source(value)
        compiled = _compile_value(value)
        if isinstance(compiled, Expression):
            return compiled.evaluate(context)
        return compiled.render(context)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, tuple):
        return tuple(render_value(item, context) for item in value)
    return value


def value_renderer(value: Any) -> Callable[[Mapping[str, Any]], Any]:
    """``lambda context: render_value(value, context)`` with the work that does not depend on the
    context done now: the value's structure walked and its template strings compiled once, for a
    value rendered over and over (a flow step's fields or parameters). The value must not change
    afterwards. Should a template string not compile, rendering it raises the error
    ``render_value`` raises, when ``render_value`` would."""
    if isinstance(value, str):
        if not is_template(value):
            return lambda context: value
        try:
            _check_source(value)
            compiled = _compile_value(value)
        except Exception:  # noqa: BLE001 - raised again, at render time, by render_value itself
            return lambda context: render_value(value, context)
        return compiled.evaluate if isinstance(compiled, Expression) else compiled.render
    if isinstance(value, dict):
        items = [(key, value_renderer(item)) for key, item in value.items()]

        def render_dict(context: Mapping[str, Any]) -> dict[Any, Any]:
            rendered = {}  # a loop rather than a comprehension in a lambda: one Python frame, not two
            for key, render in items:
                rendered[key] = render(context)
            return rendered

        return render_dict
    if isinstance(value, (list, tuple)):
        renders = [value_renderer(item) for item in value]
        if isinstance(value, list):
            return lambda context: [render(context) for render in renders]
        return lambda context: tuple(render(context) for render in renders)
    return lambda context: value


#: Template value strings already compiled, as ``_compile_value`` gave them. A flow's values are
#: a few dozen templates rendered over and over: this spares the source check and the LRU cache's
#: bookkeeping each time (a source that fails its check or its compilation is never kept).
_VALUES: dict[str, Expression | Template] = {}


def _value_of(source: str) -> Expression | Template:
    """``_compile_value(source)`` for a template value string, after its source check, remembered."""
    _check_source(source)
    compiled = _compile_value(source)
    if len(_VALUES) >= _CACHE_SIZE:
        _VALUES.clear()  # bounded like the compile caches; refilled by the next renders
    _VALUES[source] = compiled
    return compiled


def undeclared_names(source: str, *, expression: bool) -> set[str]:
    """Top-level context names ``source`` reads (globals such as range excluded), for validation."""
    _check_source(source)
    if expression:
        tree = nodes.Template([nodes.Output([_parse_expression(_ENV, source)])], lineno=1)
        tree.set_environment(_ENV)
    else:
        tree = _parse_template(_ENV, source)
    try:
        names = find_undeclared_variables(tree)
    except TemplateSyntaxError as exc:
        raise _syntax_error(exc, source) from None
    except Exception as exc:
        raise ExpressionError(f"cannot analyse: {_describe(exc)}", source=source) from None
    return set(names) - set(_ENV.globals)


def check_syntax(source: str, *, expression: bool) -> None:
    """Raise ExpressionError (with its line) unless ``source`` compiles, filters and tags too."""
    if expression:
        compile_expression(source)
    else:
        compile_template(source)

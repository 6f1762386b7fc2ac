"""Checking an action step's ``params`` against the message schema of the connector it names.

The params are what the flow author wrote, not what will be sent: strings may be templates and
values may be given per language (``{zh: …, en: …}``). So the check runs once per language the
step uses, on the params as the interpreter would localise them, and a template counts as a
string whose content is unknown: its type is checked, its length, pattern, format or enum are
not. A lone ``{{ expr }}`` renders to a native value (a list, a number…), so it passes any type.

Problems come back with the path of the offending value in the params *as written* (language
key included), so the validator can point at its line and column.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, validators

from engine import expr

#: The languages a value may be given in; the same rule as the interpreter's ``localize``.
LANGUAGES = frozenset({"zh", "en"})
_TYPE_NAMES = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "null"}


@dataclass(frozen=True, slots=True)
class ParamProblem:
    path: tuple[str | int, ...]  # relative to params, as written (language keys included)
    message: str
    at_key: bool = False  # point at the key (an unknown parameter) rather than its value
    kind: str = ""  # the schema keyword that failed


class Templated(str):
    """A template in the params: a string of unknown content (``native``: any value at all)."""

    native: bool = False


def _skip_templates(check: Any) -> Any:
    def keyword(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, Templated):
            return iter(())
        return check(validator, value, instance, schema)  # type: ignore[no-any-return]

    return keyword


def _native_or(type_name: str) -> Any:
    base = _BASE.TYPE_CHECKER
    return lambda checker, instance: (isinstance(instance, Templated) and instance.native) or base.is_type(instance, type_name)


_BASE = Draft202012Validator
_TYPES = _BASE.TYPE_CHECKER.redefine_many({name: _native_or(name) for name in _TYPE_NAMES})
ParamsValidator = validators.extend(
    _BASE,
    {name: _skip_templates(check) for name, check in _BASE.VALIDATORS.items() if name != "type"},
    type_checker=_TYPES,
)


def check_params(schema: Mapping[str, Any], params: Mapping[str, Any], connector: str) -> list[ParamProblem]:
    """Every way ``params`` breaks ``schema``, once each, in the order found."""
    validator = ParamsValidator(dict(schema), format_checker=_BASE.FORMAT_CHECKER)
    found: dict[tuple[tuple[str | int, ...], str], ParamProblem] = {}
    mistyped: set[tuple[str | int, ...]] = set()
    for language in sorted(_languages(params)) or ["zh"]:
        instance = _checkable(_localize(params, language))
        for error in validator.iter_errors(instance):
            for problem in _describe(error, connector):
                path = _as_written(params, problem.path, language, descend=not problem.at_key)
                found.setdefault((path, problem.message), ParamProblem(path, problem.message, problem.at_key, error.validator))
                if error.validator == "type":
                    mistyped.add(path)
    # A value of the wrong type also fails its enum or length; saying so adds nothing.
    return [p for p in found.values() if p.path not in mistyped or p.kind == "type"]


def _is_language_map(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= LANGUAGES


def _chosen(value: Mapping[str, Any], language: str) -> str:
    """The key the interpreter's ``localize`` takes from a language map."""
    if language in value:
        return language
    return "zh" if "zh" in value else next(iter(value))


def _localize(value: Any, language: str) -> Any:
    if _is_language_map(value):
        return _localize(value[_chosen(value, language)], language)
    if isinstance(value, dict):
        return {k: _localize(v, language) for k, v in value.items()}
    if isinstance(value, list):
        return [_localize(v, language) for v in value]
    return value


def _languages(value: Any) -> set[str]:
    if _is_language_map(value):
        return set(value) | set().union(*(_languages(v) for v in value.values()))
    if isinstance(value, dict):
        return set().union(set(), *(_languages(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(_languages(v) for v in value))
    return set()


def _checkable(value: Any) -> Any:
    if isinstance(value, str) and expr.is_template(value):
        templated = Templated(value)
        templated.native = expr.is_lone_expression(value)
        return templated
    if isinstance(value, dict):
        return {k: _checkable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_checkable(v) for v in value]
    return value


def _as_written(params: Any, path: tuple[str | int, ...], language: str, *, descend: bool = True) -> tuple[str | int, ...]:
    """``path`` in the localised params -> the same place in the params as written."""
    out: list[str | int] = []
    node = params
    for part in path:
        while _is_language_map(node):
            key = _chosen(node, language)
            out.append(key)
            node = node[key]
        out.append(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    while descend and _is_language_map(node):
        key = _chosen(node, language)
        out.append(key)
        node = node[key]
    return tuple(out)


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, [str(o) for o in options], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _name(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path) or "params"


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else type(value).__name__


def _describe(error: jsonschema.ValidationError, connector: str) -> Iterator[ParamProblem]:
    path = tuple(error.absolute_path)
    name = _name(path)
    kind, value, schema = error.validator, error.validator_value, error.schema
    if kind == "additionalProperties" and value is False and isinstance(error.instance, dict):
        known = list((schema.get("properties") or {}).keys())
        for key in error.instance:
            if key not in known:
                where = f"for connector {connector!r}" if not path else f"in {name!r}"
                hint = _did_you_mean(str(key), known) or f" (it takes {', '.join(map(repr, known))})"
                yield ParamProblem((*path, key), f"unknown parameter {key!r} {where}{hint}", at_key=True)
    elif kind == "required" and isinstance(error.instance, dict):
        for key in value:
            if key not in error.instance:
                where = f"connector {connector!r}" if not path else name
                yield ParamProblem(path, f"{where} needs the parameter {key!r}")
    elif kind == "anyOf" and all(set(branch) == {"required"} for branch in value):
        options = " or ".join(repr(branch["required"][0]) for branch in value)
        yield ParamProblem(path, f"connector {connector!r} needs the parameter {options}")
    elif kind == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        yield ParamProblem(path, f"parameter {name!r} must be {' or '.join(_TYPE_NAMES.get(t, t) for t in wanted)}, "
                                 f"not {_type_of(error.instance)}")
    elif kind == "enum":
        yield ParamProblem(path, f"parameter {name!r} must be one of {', '.join(map(repr, value))}, not {error.instance!r}"
                           + _did_you_mean(str(error.instance), value))
    elif kind == "pattern" and schema.get("x-hint"):
        yield ParamProblem(path, f"parameter {name!r} {schema['x-hint']}, not {error.instance!r}")
    elif kind == "format":
        yield ParamProblem(path, f"parameter {name!r}: {error.instance!r} is not a valid {value}")
    elif kind == "minLength" and value == 1:
        yield ParamProblem(path, f"parameter {name!r} must not be empty")
    else:
        yield ParamProblem(path, f"parameter {name!r}: {error.message}")

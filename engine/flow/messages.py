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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator, validators

from engine import expr
from engine.problem_text import TYPE_WORDS, Both, Text, did_you_mean, t

#: The languages a value may be given in; the same rule as the interpreter's ``localize``.
LANGUAGES = frozenset({"zh", "en"})
_TYPE_NAMES = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "null"}


@dataclass(frozen=True, slots=True)
class ParamProblem:
    path: tuple[str | int, ...]  # relative to params, as written (language keys included)
    message: Text
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


def _did_you_mean(word: str, options: Any) -> Text:
    return did_you_mean(word, options)


def _name(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path) or "params"


def _type_of(value: Any) -> Text:
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "integer"
    elif isinstance(value, float):
        kind = "number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, dict):
        kind = "object"
    elif isinstance(value, list):
        kind = "array"
    elif value is None:
        kind = "null"
    else:
        return Both(type(value).__name__, type(value).__name__)
    return Both(*TYPE_WORDS[kind])


def _describe(error: jsonschema.ValidationError, connector: str) -> Iterator[ParamProblem]:
    path = tuple(error.absolute_path)
    name = _name(path)
    kind, value, schema = error.validator, error.validator_value, error.schema
    if kind == "additionalProperties" and value is False and isinstance(error.instance, dict):
        known = list((schema.get("properties") or {}).keys())
        for key in error.instance:
            if key not in known:
                where = t("params.where_connector", connector=connector) if not path else t("params.where_name", name=name)
                hint = _did_you_mean(str(key), known) or t("hint.takes", names=", ".join(map(repr, known)))
                yield ParamProblem((*path, key), t("params.unknown", key=key, where=where, hint=hint), at_key=True)
    elif kind == "required" and isinstance(error.instance, dict):
        for key in value:
            if key not in error.instance:
                who = t("params.who_connector", connector=connector) if not path else t("params.who_name", name=name)
                yield ParamProblem(path, t("params.required", where=who, key=key))
    elif kind == "anyOf" and all(set(branch) == {"required"} for branch in value):
        options = " or ".join(repr(branch["required"][0]) for branch in value)
        yield ParamProblem(path, t("params.required_any", connector=connector, options=options))
    elif kind == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        words = [TYPE_WORDS.get(w, (w, w)) for w in wanted]
        wanted_words = Both(" or ".join(en for en, _ in words), " 或 ".join(zh for _, zh in words))
        yield ParamProblem(path, t("params.type", name=name, wanted=wanted_words, actual=_type_of(error.instance)))
    elif kind == "enum":
        yield ParamProblem(path, t("params.enum", name=name, options=", ".join(map(repr, value)), value=error.instance,
                                   hint=_did_you_mean(str(error.instance), value)))
    elif kind == "pattern" and schema.get("x-hint"):
        yield ParamProblem(path, t("params.pattern", name=name, rule=schema["x-hint"], value=error.instance))
    elif kind == "format":
        yield ParamProblem(path, t("params.format", name=name, value=error.instance, format=value))
    elif kind == "minLength" and value == 1:
        yield ParamProblem(path, t("params.empty", name=name))
    else:
        yield ParamProblem(path, t("params.other", name=name, detail=error.message))

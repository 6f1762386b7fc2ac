"""Forms: JSON Schema files with UI hints, checked at load, validated on submit with zh/en messages.

Form file format
================

A form is one file ``forms/<id>.schema.json``; its id is the file name without ``.schema.json``
and is what flows name in ``form:``. The file is a JSON Schema draft 2020-12 object schema::

    {
      "$schema": "https://json-schema.org/draft/2020-12/schema",
      "type": "object",
      "additionalProperties": false,
      "x-title": {"zh": "投诉处理结果", "en": "Complaint resolution"},
      "x-description": {"zh": "...", "en": "..."},
      "x-order": ["resolution", "compensation", "amount"],
      "required": ["resolution"],
      "properties": {
        "resolution": {"type": "string", "minLength": 1, "maxLength": 2000,
                       "x-label": {"zh": "处理结果", "en": "Resolution"}, "x-widget": "textarea"},
        "compensation": {"type": "string", "enum": ["none", "refund"], "default": "none",
                         "x-label": {"zh": "补偿方式", "en": "Compensation"}, "x-widget": "radio",
                         "x-enum-labels": {"none": {"zh": "无", "en": "None"},
                                           "refund": {"zh": "退款", "en": "Refund"}}},
        "amount": {"type": "number", "exclusiveMinimum": 0,
                   "x-label": {"zh": "退款金额（元）", "en": "Refund amount (CNY)"},
                   "x-show-if": {"field": "compensation", "equals": "refund"}}
      },
      "if": {"properties": {"compensation": {"const": "refund"}}, "required": ["compensation"]},
      "then": {"required": ["amount"]}
    }

Root (all required except ``x-description``; ``$schema`` may be left out, but if present it must be
the 2020-12 URI):

* ``"type": "object"``, ``"properties": {...}`` and ``"additionalProperties": false`` (a submission
  may not add fields the form does not have: mass assignment).
* ``x-title``: ``{"zh": ..., "en": ...}``; ``x-description``: the same shape, optional.
* ``x-order``: field names in display order; fields it leaves out follow in file order.
* Any other JSON Schema keyword works as usual: ``required``, ``if``/``then``/``else``, ``allOf``,
  ``anyOf`` (an ``anyOf`` whose branches are only ``required`` gets the message "fill in at least
  one of ..."), ``dependentRequired``, ``$defs`` with local ``$ref``.

Each property (field names are identifiers: a letter, then letters, digits or ``_``; not
``csrf_token``):

* ``x-label`` (required): ``{"zh": ..., "en": ...}``.
* ``x-widget``: one of text, textarea, number, select, radio, checkbox, checkboxes, date, datetime,
  phone, email, rating, file, hidden. Left out, it follows the schema: format email/phone/date/
  date-time -> email/phone/date/datetime, boolean -> checkbox, array -> checkboxes, enum ->
  select, integer/number -> number, else text. select/radio need an enum or a boolean;
  checkboxes need an array whose ``items`` have an enum; rating needs an integer with minimum
  and maximum.
* ``x-help``: ``{"zh", "en"}`` help text.
* ``x-enum-labels``: ``{"<value>": {"zh", "en"}}``, one per enum value (for arrays, the items'
  enum; for booleans, ``"true"``/``"false"``); non-string values are written as JSON (``"1"``).
  Values without a label show as themselves (booleans as 是/否, Yes/No).
* ``x-prefill``: a dotted path into ``{customer, vars, instance}``, e.g. ``"customer.phone"``.
* ``x-show-if``: ``{"field": "<other field>", "equals": <value>}``: shown only when that field has
  that value. Pair it with ``if``/``then`` for the requirement; values of fields that are not
  shown are dropped from a submission before it is validated.

Formats that are really checked: ``email`` (email-validator, no DNS), ``phone`` (phonenumbers;
numbers without ``+`` are read as mainland China numbers, others must start with ``+`` and the
country code; letters are refused; stored as E.164), ``date`` (``YYYY-MM-DD``, a real day) and
``date-time`` (RFC 3339; seconds and offset may be left out, as ``<input type=datetime-local>``
sends them). Any other format is refused at load, since jsonschema would silently ignore it.

Checked at load, all problems reported at once with line:column: JSON syntax, the draft 2020-12
meta-schema, the root shape, every rule above, unknown ``x-`` keywords, ``required`` naming
unknown fields, ``x-show-if`` cycles, nesting deeper than 32 levels, ``$ref``/``$dynamicRef``
other than local ``#/...`` (or pointing at nothing, or in a cycle), and regular expressions
(``pattern``, ``patternProperties``) longer than 500 characters or repeating a group that itself
repeats without bound, such as ``(a+)+``: those run on user input and can take exponential time.

Submissions: ``null`` for a field that does not allow null means "not answered" and is left out;
absent fields with a ``default`` get it; phones come back in E.164 and e-mails normalised. Errors
carry ``path`` (a JSON path; for a missing field, the path it should have, e.g. ``$.name``),
``field`` (the top-level field, or ``""`` for the whole form and for fields the form does not
have), a message in the user's language naming the field's label, and ``code`` (the JSON Schema
keyword, or ``too_deep``/``too_large``/``error`` for data the validator refuses to walk).

Views: ``view(form, readonly=..., hidden=...)`` gives a task step its variant of a form. On a
view, submitted values for read-only and hidden fields are ignored; they keep the task's
``current`` value, and errors about them are not reported, since the submitter cannot fix them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators

from engine.errors import FieldError, FormInvalid, Problem, SubmissionInvalid
from engine.problem_text import Text, did_you_mean, schema_text, t
from engine.flow.yaml_loader import Located, json_path, load_json

__all__ = [
    "FORM_SUFFIX",
    "WIDGETS",
    "Form",
    "FormField",
    "check_submission",
    "coerce_form_post",
    "load_form",
    "load_form_text",
    "prefill",
    "validate_submission",
    "view",
    "visible_fields",
]

FORM_SUFFIX = ".schema.json"
WIDGETS = (
    "text", "textarea", "number", "select", "radio", "checkbox", "checkboxes",
    "date", "datetime", "phone", "email", "rating", "file", "hidden",
)
FORMATS = ("email", "phone", "date", "date-time")
CSRF_FIELD = "csrf_token"

_SCHEMA_URIS = frozenset({
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
})
_MAX_SCHEMA_DEPTH = 32
_MAX_PATTERN_LENGTH = 500
# A repetition this large counts as unbounded: (a{1,1000}){1,1000} backtracks like (a+)+.
_UNBOUNDED_REPEAT = 100
_MAX_META_PROBLEMS = 50
# Submissions: a form answer never needs more; beyond it the validator itself would be the risk.
_MAX_DATA_DEPTH = 32
_MAX_DATA_NODES = 10_000
_MAX_FIELD_ERRORS = 100

_FORM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_FIELD_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_PREFILL_RE = re.compile(r"(?:customer|vars|instance)(?:\.[A-Za-z][A-Za-z0-9_]*)+")
_TOP_KEYWORDS = ("x-title", "x-description", "x-order")
_FIELD_KEYWORDS = ("x-label", "x-widget", "x-help", "x-enum-labels", "x-prefill", "x-show-if")
_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")

# Subschema positions, for walking a schema without the meta-schema's help.
_ONE_SCHEMA = (
    "additionalProperties", "items", "contains", "not", "if", "then", "else", "propertyNames",
    "unevaluatedItems", "unevaluatedProperties", "contentSchema",
)
_SCHEMA_MAPS = ("properties", "patternProperties", "dependentSchemas", "$defs", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")

_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
# Digits (also full-width ones), spaces and the usual punctuation; letters would be read as a keypad.
_PHONE_CHARS_RE = re.compile(r"[\d\s+＋\-－().（）]+")
_INT_TEXT_RE = re.compile(r"[-+]?\d+")
_NUMBER_TEXT_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_TRUE_TEXTS = frozenset({"on", "true", "1", "yes"})
_FALSE_TEXTS = frozenset({"off", "false", "0", "no"})


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FormField:
    """One field of a form: its schema plus the UI hints taken from the ``x-`` keywords."""

    name: str
    label: Mapping[str, str]
    widget: str
    required: bool
    schema: Mapping[str, Any]
    help: Mapping[str, str]
    options: tuple[tuple[Any, Mapping[str, str]], ...]
    show_if: Mapping[str, Any] | None
    prefill: str | None
    readonly: bool = False
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class Form:
    """A loaded, checked form; ``schema`` is the whole JSON Schema (treat it as read-only)."""

    id: str
    title: Mapping[str, str]
    schema: Mapping[str, Any]
    fields: tuple[FormField, ...]
    source: str
    content_hash: str

    def field(self, name: str) -> FormField:
        """The field called name; KeyError if the form has none."""
        for item in self.fields:
            if item.name == name:
                return item
        raise KeyError(f"the form {self.id!r} has no field {name!r}")


# --- loading ---------------------------------------------------------------------------------


def load_form(path: str | Path) -> Form:
    """Load and check one ``<id>.schema.json`` file; raises FormInvalid with every problem found."""
    file = Path(path)
    return load_form_text(file.read_bytes(), str(path), file.name.removesuffix(FORM_SUFFIX))


def load_form_text(text: str | bytes, source: str, form_id: str) -> Form:
    """Load and check a form from its text; raises FormInvalid with every located problem."""
    located = load_json(text, source, error_cls=FormInvalid)
    problems = _Checker(located, source).run(form_id)
    if problems:
        raise FormInvalid(problems)
    return _build_form(form_id, located.data, source, _content_hash(text))


def _content_hash(text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def _build_form(form_id: str, schema: dict[str, Any], source: str, digest: str) -> Form:
    """Assemble the Form from a schema that passed every check."""
    properties: dict[str, Any] = schema["properties"]
    required = set(schema.get("required", ()))
    order = list(dict.fromkeys(schema.get("x-order", ())))
    order += [name for name in properties if name not in order]
    fields = tuple(_build_field(name, properties[name], name in required) for name in order)
    return Form(form_id, schema["x-title"], schema, fields, source, digest)


def _build_field(name: str, schema: dict[str, Any], required: bool) -> FormField:
    labels: Mapping[str, Any] = schema.get("x-enum-labels", {})
    values = _option_values(schema) or []
    options = tuple((value, labels.get(_value_key(value)) or _default_label(value)) for value in values)
    return FormField(
        name=name,
        label=schema["x-label"],
        widget=schema.get("x-widget") or _default_widget(schema),
        required=required,
        schema=schema,
        help=schema.get("x-help", {}),
        options=options,
        show_if=schema.get("x-show-if"),
        prefill=schema.get("x-prefill"),
    )


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    return {item for item in declared if isinstance(item, str)} if isinstance(declared, list) else set()


def _default_widget(schema: Mapping[str, Any]) -> str:
    """The widget a property gets when it names none."""
    by_format = {"email": "email", "phone": "phone", "date": "date", "date-time": "datetime"}
    types = _types(schema)
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in by_format:
        return by_format[fmt]
    if "boolean" in types:
        return "checkbox"
    if "array" in types:
        return "checkboxes"
    if isinstance(schema.get("enum"), list):
        return "select"
    if types & {"integer", "number"}:
        return "number"
    return "text"


def _option_values(schema: Mapping[str, Any]) -> list[Any] | None:
    """The values a field can choose from: its enum, its items' enum, or true/false."""
    if isinstance(schema.get("enum"), list):
        return list(schema["enum"])
    items = schema.get("items")
    if "array" in _types(schema) and isinstance(items, dict) and isinstance(items.get("enum"), list):
        return list(items["enum"])
    if "boolean" in _types(schema):
        return [True, False]
    return None


def _value_key(value: Any) -> str:
    """How an option value is written as an ``x-enum-labels`` key."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _default_label(value: Any) -> Mapping[str, str]:
    if value is True:
        return {"zh": "是", "en": "Yes"}
    if value is False:
        return {"zh": "否", "en": "No"}
    return {"zh": _value_key(value), "en": _value_key(value)}


# --- load-time checks ------------------------------------------------------------------------


class _Checker:
    """Collects every located problem of one form file."""

    def __init__(self, located: Located, source: str):
        self.located = located
        self.source = source
        self.problems: list[Problem] = []

    def add(self, path: Sequence[str | int], message: Text, *, at_key: bool = False) -> None:
        """Record a problem at the value at path (or at its key, when at_key)."""
        key = tuple(path)
        where = self.located.key_positions.get(key) if at_key else None
        line, column = where or self.located.position(key)
        self.problems.append(Problem(self.source, line, column, message, json_path(key)))

    def run(self, form_id: str) -> list[Problem]:
        """Run every check and return the problems."""
        root = self.located.data
        if not _FORM_ID_RE.fullmatch(form_id):
            self.add((), t("form.id", id=form_id))
        if not isinstance(root, dict):
            self.add((), t("form.not_object"))
            return self.problems
        self.check_depth(root)
        self.check_meta(root)
        self.check_root(root)
        self.check_subschemas(root)
        properties = root.get("properties")
        if isinstance(properties, dict):
            self.check_fields(properties)
            self.check_required(root, properties)
            self.check_show_if_cycles(properties)
        self.check_top_hints(root, properties if isinstance(properties, dict) else {})
        return self.problems

    def check_depth(self, root: dict[str, Any]) -> None:
        """Report the first value nested deeper than the limit (validators recurse per level)."""
        stack: list[tuple[Any, tuple[str | int, ...]]] = [(root, ())]
        while stack:
            value, path = stack.pop()
            if len(path) >= _MAX_SCHEMA_DEPTH:
                self.add(path, t("form.too_deep", limit=_MAX_SCHEMA_DEPTH))
                return
            if isinstance(value, dict):
                stack.extend((child, (*path, key)) for key, child in value.items())
            elif isinstance(value, list):
                stack.extend((child, (*path, index)) for index, child in enumerate(value))

    def check_meta(self, root: dict[str, Any]) -> None:
        """Every draft 2020-12 meta-schema error (check_schema stops at the first)."""
        meta = Draft202012Validator(Draft202012Validator.META_SCHEMA, format_checker=_META_FORMATS)
        try:
            for error in itertools.islice(meta.iter_errors(root), _MAX_META_PROBLEMS):
                self.add(tuple(error.absolute_path), _meta_message(error))
        except RecursionError:
            self.add((), t("form.too_deep_to_check"))

    def check_root(self, root: dict[str, Any]) -> None:
        """The root must be a closed object schema."""
        if "$schema" in root and root["$schema"] not in _SCHEMA_URIS:
            self.add(("$schema",), t("form.draft"))
        if root.get("type") != "object":
            where: tuple[str, ...] = ("type",) if "type" in root else ()
            self.add(where, t("form.root_type"))
        if not isinstance(root.get("properties"), dict):
            where = ("properties",) if "properties" in root else ()
            self.add(where, t("form.properties"))
        if root.get("additionalProperties") is not False:
            where = ("additionalProperties",) if "additionalProperties" in root else ()
            self.add(where, t("form.additional_properties"))

    def check_subschemas(self, root: dict[str, Any]) -> None:
        """Patterns, references and formats in every subschema."""
        for path, schema in _walk_schemas(root):
            self.check_patterns(path, schema)
            for keyword in ("$ref", "$dynamicRef"):
                if isinstance(schema.get(keyword), str):
                    self.check_ref(root, (*path, keyword), schema[keyword])
            if "$id" in schema and path:
                self.add((*path, "$id"), t("form.id_keyword"))
            fmt = schema.get("format")
            if isinstance(fmt, str) and fmt not in FORMATS:
                self.add((*path, "format"), t("form.format", format=fmt, hint=_suggest(fmt, FORMATS)))

    def check_patterns(self, path: tuple[str | int, ...], schema: dict[str, Any]) -> None:
        """Refuse regular expressions that could backtrack for ages on a user's input (ReDoS)."""
        if isinstance(schema.get("pattern"), str):
            message = _regex_problem(schema["pattern"])
            if message:
                self.add((*path, "pattern"), message)
        if isinstance(schema.get("patternProperties"), dict):
            for regex in schema["patternProperties"]:
                message = _regex_problem(regex)
                if message:
                    self.add((*path, "patternProperties", regex), message, at_key=True)

    def check_ref(self, root: dict[str, Any], path: tuple[str | int, ...], ref: str) -> None:
        """A reference must be local, resolvable and not a loop that never reaches data."""
        keyword = path[-1]
        if ref != "#" and not ref.startswith("#/"):
            self.add(path, t("form.ref_outside", keyword=keyword, ref=ref))
            return
        target = _resolve_pointer(root, ref)
        if target is _MISSING:
            self.add(path, t("form.ref_nothing", keyword=keyword, ref=ref))
            return
        seen = {ref}
        while isinstance(target, dict) and isinstance(target.get("$ref"), str):
            following = target["$ref"]
            if following in seen:
                message = t("form.ref_loop", keyword=keyword, ref=ref, following=following)
                self.add(path, message)
                return
            seen.add(following)
            target = _resolve_pointer(root, following)

    def check_fields(self, properties: dict[str, Any]) -> None:
        """Every property's name, label and UI hints."""
        for name, schema in properties.items():
            path = ("properties", name)
            if name == CSRF_FIELD or not _FIELD_NAME_RE.fullmatch(name):
                self.add(path, t("form.field_name", name=name, reserved=CSRF_FIELD), at_key=True)
            if not isinstance(schema, dict):
                self.add(path, t("form.field_schema", name=name))
                continue
            self.check_field(name, schema, properties)

    def check_field(self, name: str, schema: dict[str, Any], properties: dict[str, Any]) -> None:
        """One property's UI hints."""
        path = ("properties", name)
        if "x-label" not in schema:
            self.add(path, t("form.no_label", name=name), at_key=True)
        for keyword in ("x-label", "x-help"):
            if keyword in schema:
                self.check_text((*path, keyword), schema[keyword])
        self.check_unknown_hints(path, schema, _FIELD_KEYWORDS)
        self.check_widget(name, schema)
        self.check_enum_labels(name, schema)
        prefill_path = schema.get("x-prefill")
        if "x-prefill" in schema and not (isinstance(prefill_path, str) and _PREFILL_RE.fullmatch(prefill_path)):
            self.add((*path, "x-prefill"), t("form.prefill"))
        if "x-show-if" in schema:
            self.check_show_if(name, schema["x-show-if"], properties)

    def check_text(self, path: tuple[str | int, ...], value: Any) -> None:
        """A localized text: an object with non-empty zh and en strings."""
        if not (
            isinstance(value, dict)
            and all(isinstance(value.get(lang), str) and value[lang].strip() for lang in ("zh", "en"))
            and all(isinstance(text, str) for text in value.values())
        ):
            self.add(path, t("form.text", keyword=path[-1]))

    def check_unknown_hints(self, path: tuple[str | int, ...], schema: dict[str, Any], known: Sequence[str]) -> None:
        """UI keywords are ignored by validators, so a typo would silently do nothing."""
        for key in schema:
            if key.startswith("x-") and key not in known:
                self.add((*path, key), t("form.unknown_hint", key=key, hint=_suggest(key, known)), at_key=True)

    def check_widget(self, name: str, schema: dict[str, Any]) -> None:
        """A known widget that suits the field's schema."""
        path = ("properties", name, "x-widget")
        widget = schema.get("x-widget", _default_widget(schema))
        if not isinstance(widget, str) or widget not in WIDGETS:
            self.add(path, t("form.unknown_widget", widget=widget, hint=_suggest(str(widget), WIDGETS)))
            return
        where = path if "x-widget" in schema else ("properties", name)
        items = schema.get("items")
        if widget in ("select", "radio") and _option_values(schema) is None:
            self.add(where, t("form.widget_options", widget=widget))
        elif widget == "checkboxes" and not (isinstance(items, dict) and isinstance(items.get("enum"), list)):
            self.add(where, t("form.checkboxes"))
        elif widget == "rating" and not ("integer" in _types(schema) and "minimum" in schema and "maximum" in schema):
            self.add(where, t("form.rating"))

    def check_enum_labels(self, name: str, schema: dict[str, Any]) -> None:
        """Every x-enum-labels key must be one of the field's values, each label a zh/en text."""
        if "x-enum-labels" not in schema:
            return
        path = ("properties", name, "x-enum-labels")
        labels = schema["x-enum-labels"]
        if not isinstance(labels, dict):
            self.add(path, t("form.enum_labels_object"))
            return
        values = _option_values(schema)
        if values is None:
            self.add(path, t("form.enum_labels_enum"))
            return
        keys = [_value_key(value) for value in values]
        for key, label in labels.items():
            if key not in keys:
                self.add((*path, key), t("form.enum_label_value", value=key, hint=_suggest(key, keys)), at_key=True)
            self.check_text((*path, key), label)

    def check_show_if(self, name: str, condition: Any, properties: dict[str, Any]) -> None:
        """The shape of x-show-if, its field, and a value that field can take."""
        path = ("properties", name, "x-show-if")
        if not (isinstance(condition, dict) and set(condition) == {"field", "equals"}):
            self.add(path, t("form.show_if_shape"))
            return
        target = condition["field"]
        others = [other for other in properties if other != name]
        if not isinstance(target, str) or target not in others:
            self.add((*path, "field"), t("form.show_if_field", field=target, hint=_suggest(str(target), others)))
            return
        target_schema = properties[target]
        values = _option_values(target_schema) if isinstance(target_schema, dict) else None
        wanted = condition["equals"]
        if values is not None and not any(_same(wanted, value) for value in values):
            keys = [_value_key(value) for value in values]
            never = t("form.show_if_never", field=target, value=_value_key(wanted), hint=_suggest(_value_key(wanted), keys))
            self.add((*path, "equals"), never)

    def check_required(self, root: dict[str, Any], properties: dict[str, Any]) -> None:
        """Field names in required, dependentRequired and if-conditions at the root level must exist."""
        known = list(properties)
        for path, schema in _root_level_schemas(root):
            required = schema.get("required")
            for index, name in enumerate(required if isinstance(required, list) else []):
                if isinstance(name, str) and name not in properties:
                    message = t("form.required_unknown", name=name, hint=_suggest(name, known))
                    self.add((*path, "required", index), message)
            conditions = schema.get("properties") if path else None
            for name in conditions if isinstance(conditions, dict) else {}:
                if name not in properties:
                    message = t("form.condition_unknown", name=name, hint=_suggest(name, known))
                    self.add((*path, "properties", name), message, at_key=True)
            dependent = schema.get("dependentRequired")
            for name, needed in dependent.items() if isinstance(dependent, dict) else ():
                for index, each in enumerate(needed if isinstance(needed, list) else []):
                    if isinstance(each, str) and each not in properties:
                        where = (*path, "dependentRequired", name, index)
                        self.add(where, t("form.not_a_field", name=each, hint=_suggest(each, known)))

    def check_show_if_cycles(self, properties: dict[str, Any]) -> None:
        """A field whose visibility depends on itself would never show."""
        def target(name: str) -> str | None:
            schema = properties.get(name)
            condition = schema.get("x-show-if") if isinstance(schema, dict) else None
            field = condition.get("field") if isinstance(condition, dict) else None
            return field if isinstance(field, str) and field in properties else None

        for start in properties:
            seen: list[str] = [start]
            name = target(start)
            while name is not None and name not in seen:
                seen.append(name)
                name = target(name)
            if name == start and len(seen) > 1:
                chain = " -> ".join([*seen, start])
                message = t("form.show_if_cycle", chain=chain)
                self.add(("properties", start, "x-show-if"), message)

    def check_top_hints(self, root: dict[str, Any], properties: dict[str, Any]) -> None:
        """x-title, x-description and x-order."""
        if "x-title" not in root:
            self.add((), t("form.no_title"))
        else:
            self.check_text(("x-title",), root["x-title"])
        if "x-description" in root:
            self.check_text(("x-description",), root["x-description"])
        self.check_unknown_hints((), root, _TOP_KEYWORDS)
        order = root.get("x-order")
        if "x-order" not in root:
            return
        if not isinstance(order, list):
            self.add(("x-order",), t("form.order_list"))
            return
        seen: set[str] = set()
        for index, name in enumerate(order):
            if not isinstance(name, str) or name not in properties:
                message = t("form.order_unknown", name=name, hint=_suggest(str(name), list(properties)))
                self.add(("x-order", index), message)
            elif name in seen:
                self.add(("x-order", index), t("form.order_twice", name=name))
            else:
                seen.add(name)


def _walk_schemas(root: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """Every (sub)schema object with its path, iteratively, in document order."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), root)]
    while stack:
        path, schema = stack.pop()
        if not isinstance(schema, dict):
            continue
        yield path, schema
        children: list[tuple[tuple[str | int, ...], Any]] = []
        for keyword in _ONE_SCHEMA:
            if keyword in schema:
                children.append(((*path, keyword), schema[keyword]))
        for keyword in _SCHEMA_MAPS:
            if isinstance(schema.get(keyword), dict):
                children.extend(((*path, keyword, key), value) for key, value in schema[keyword].items())
        for keyword in _SCHEMA_LISTS:
            if isinstance(schema.get(keyword), list):
                children.extend(((*path, keyword, index), value) for index, value in enumerate(schema[keyword]))
        stack.extend(reversed(children))


def _root_level_schemas(root: dict[str, Any]) -> Iterator[tuple[tuple[str | int, ...], dict[str, Any]]]:
    """The root and the subschemas that apply to the same object: allOf/anyOf/oneOf/not/if/then/else."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), root)]
    while stack:
        path, schema = stack.pop()
        if not isinstance(schema, dict):
            continue
        yield path, schema
        for keyword in ("not", "if", "then", "else"):
            if keyword in schema:
                stack.append(((*path, keyword), schema[keyword]))
        for keyword in ("allOf", "anyOf", "oneOf"):
            if isinstance(schema.get(keyword), list):
                stack.extend(((*path, keyword, index), value) for index, value in enumerate(schema[keyword]))
        if isinstance(schema.get("dependentSchemas"), dict):
            stack.extend(((*path, "dependentSchemas", key), value) for key, value in schema["dependentSchemas"].items())


_MISSING: Any = object()


def _resolve_pointer(root: Any, ref: str) -> Any:
    """The value a local "#/a/b" reference points at, or _MISSING."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return _MISSING
    node = root
    for raw in ref[2:].split("/"):
        token = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
    return node


def _suggest(word: str, choices: Iterable[str]) -> Text:
    """A "did you mean" tail for a message, or the list of choices when nothing is close."""
    options = [choice for choice in choices if isinstance(choice, str)]
    close = did_you_mean(word, options)
    if close:
        return close
    if options and len(options) <= 20:
        return t("hint.one_of", options=", ".join(options))
    return t("hint.none")


def _meta_message(error: ValidationError) -> Text:
    """A meta-schema error in words a form author understands."""
    path = list(error.absolute_path)
    if error.validator == "format" and error.validator_value == "regex":
        return t("form.bad_regex", value=error.instance, detail=_regex_error(error.instance))
    if error.validator == "anyOf" and path and path[-1] == "type":
        shown = json.dumps(error.instance, ensure_ascii=False)[:80]
        return t("form.unknown_type", type=shown, hint=_suggest(str(error.instance), _TYPES))
    message = error.message
    return schema_text(error, message if len(message) <= 300 else message[:297] + "...")


def _regex_error(pattern: Any) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        return str(exc)
    except (RecursionError, TypeError, ValueError, OverflowError) as exc:
        return type(exc).__name__
    return "unknown error"


def _is_regex(value: Any) -> bool:
    """The meta-schema's "regex" format, safe on hostile patterns."""
    if not isinstance(value, str) or len(value) > _MAX_PATTERN_LENGTH:
        return True  # too-long patterns are reported by the pattern check, without compiling them
    try:
        re.compile(value)
    except (re.error, RecursionError, ValueError, OverflowError):
        return False
    return True


_META_FORMATS = FormatChecker(formats=())
_META_FORMATS.checks("regex")(_is_regex)


def _regex_problem(pattern: str) -> Text | None:
    """Why a pattern is unsafe to run on user input, or None."""
    if len(pattern) > _MAX_PATTERN_LENGTH:
        return t("form.pattern_long", length=len(pattern), limit=_MAX_PATTERN_LENGTH)
    if _has_nested_quantifier(pattern):
        return t("form.pattern_redos", pattern=pattern)
    return None


def _has_nested_quantifier(pattern: str) -> bool:
    """True when a repeated group contains an unbounded repetition: (a+)+, (a*)*, (.*){2,} ..."""
    # One flag per open group: does it contain an unbounded repetition?
    groups: list[bool] = [False]
    atom_unbounded = False  # the atom just read (a closed group) contains one
    index, end = 0, len(pattern)
    while index < end:
        char = pattern[index]
        if char == "\\":
            index, atom_unbounded = index + 2, False
        elif char == "[":
            index, atom_unbounded = _skip_class(pattern, index), False
        elif char == "(":
            index = _open_group(pattern, index, groups)
            atom_unbounded = False
        elif char == ")":
            inner = groups.pop() if len(groups) > 1 else False
            groups[-1] = groups[-1] or inner
            index, atom_unbounded = index + 1, inner
        elif (bounds := _quantifier(pattern, index)) is not None:
            low_high, index = bounds
            high = low_high[1]
            if atom_unbounded and (high is None or high > 1):
                return True
            if high is None or high >= _UNBOUNDED_REPEAT:
                groups[-1] = True
            if index < end and pattern[index] in "?+":  # lazy or possessive suffix
                index += 1
            atom_unbounded = False
        else:
            index, atom_unbounded = index + 1, False
    return False


def _skip_class(pattern: str, index: int) -> int:
    """Index just past the character class starting at index."""
    index += 1
    if pattern.startswith("^", index):
        index += 1
    if pattern.startswith("]", index):
        index += 1
    while index < len(pattern) and pattern[index] != "]":
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def _open_group(pattern: str, index: int, groups: list[bool]) -> int:
    """Enter a group at index; return where its content starts (or past it, for (?#..), (?i), (?P=x))."""
    index += 1
    if not pattern.startswith("?", index):
        groups.append(False)
        return index
    index += 1
    if pattern.startswith(("#", "P="), index):  # a comment or a back-reference: no group content
        close = pattern.find(")", index)
        return len(pattern) if close < 0 else close + 1
    if pattern.startswith(("P<", "<"), index) and not pattern.startswith(("<=", "<!"), index):
        close = pattern.find(">", index)
        groups.append(False)
        return len(pattern) if close < 0 else close + 1
    while index < len(pattern) and pattern[index] in "aiLmsux-<":
        index += 1
    if pattern.startswith(")", index):  # inline flags such as (?i)
        return index + 1
    groups.append(False)
    return index + 1 if index < len(pattern) and pattern[index] in ":=!>" else index


_BRACES_RE = re.compile(r"\{([0-9]*)(?:(,)([0-9]*))?\}")


def _quantifier(pattern: str, index: int) -> tuple[tuple[int, int | None], int] | None:
    """((low, high or None), index after) for a quantifier at index, or None."""
    char = pattern[index]
    if char in "*+?":
        return {"*": (0, None), "+": (1, None), "?": (0, 1)}[char], index + 1
    match = _BRACES_RE.match(pattern, index) if char == "{" else None
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # a literal "{"
    low = int(match.group(1) or 0)
    if match.group(2) is None:
        return (low, low), match.end()
    return (low, int(match.group(3)) if match.group(3) else None), match.end()


# --- formats ---------------------------------------------------------------------------------


def _phone_e164(value: str) -> str | None:
    """The E.164 form of a valid phone number, or None; without + it must be a CN number."""
    text = value.strip()
    if not text or len(text) > 40 or not _PHONE_CHARS_RE.fullmatch(text):
        return None
    try:
        number = phonenumbers.parse(text, "CN")
    except phonenumbers.NumberParseException:
        return None
    international = text.startswith(("+", "＋"))
    if not phonenumbers.is_valid_number(number) or (number.country_code != 86 and not international):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _normal_email(value: str) -> str | None:
    """The normalised form of a valid e-mail address, or None (no DNS look-up)."""
    if len(value) > 320:
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return None


def _is_date(value: str) -> bool:
    if not _DATE_RE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_date_time(value: str) -> bool:
    if not _DATE_TIME_RE.fullmatch(value):
        return False
    text = value.replace("t", "T").replace(" ", "T")
    text = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _string_check(check: Any) -> Any:
    """Formats apply to strings only; other types are the "type" keyword's business."""
    return lambda instance: not isinstance(instance, str) or bool(check(instance))


_FORMAT_CHECKER = FormatChecker(formats=())
_FORMAT_CHECKER.checks("email")(_string_check(_normal_email))
_FORMAT_CHECKER.checks("phone")(_string_check(_phone_e164))
_FORMAT_CHECKER.checks("date")(_string_check(_is_date))
_FORMAT_CHECKER.checks("date-time")(_string_check(_is_date_time))


# --- the validator ---------------------------------------------------------------------------
# Three keywords are redefined so that each error points at the field it is about: jsonschema
# reports a missing or unexpected property at the parent object, with the name only in the text.


def _required(validator: Any, required: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for name in required:
        if name not in instance:
            yield ValidationError(f"{name!r} is a required property", path=(name,), validator_value=name)


def _dependent_required(validator: Any, dependent: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for name, needed in dependent.items():
        if name in instance:
            for each in needed:
                if each not in instance:
                    yield ValidationError(f"{each!r} is a dependency of {name!r}", path=(each,), validator_value=name)


_BASE_ADDITIONAL = Draft202012Validator.VALIDATORS["additionalProperties"]


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if allowed is not False or not validator.is_type(instance, "object"):
        yield from _BASE_ADDITIONAL(validator, allowed, instance, schema)
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    for name in instance:
        if name not in properties and not any(re.search(regex, name) for regex in patterns):
            yield ValidationError(f"{name!r} is not allowed", path=(name,), validator_value=name)


def _is_number(checker: Any, instance: Any) -> bool:
    """JSON numbers only: NaN and Infinity would pass every minimum and maximum."""
    if isinstance(instance, bool) or not isinstance(instance, (int, float)):
        return False
    return isinstance(instance, int) or math.isfinite(instance)


_Validator: Any = validators.extend(
    Draft202012Validator,
    validators={
        "required": _required,
        "dependentRequired": _dependent_required,
        "additionalProperties": _additional_properties,
    },
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("number", _is_number),
)


# --- submissions -----------------------------------------------------------------------------


def validate_submission(
    form: Form, data: Any, *, locale: str = "zh", current: Mapping[str, Any] | None = None
) -> list[FieldError]:
    """Every problem of a submission, as localized FieldErrors; never raises on bad data."""
    lang = _lang(locale)
    effective, errors = _prepare(form, data, current, lang)
    return errors if errors else _validate(form, effective, lang)


def check_submission(
    form: Form, data: Any, *, locale: str = "zh", current: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The cleaned submission (phones in E.164, e-mails normalised); raises SubmissionInvalid."""
    order = _plain_order_for(form)
    if order is not None and _flat(data):
        plain = _plain_check_for(form.schema)
        if plain is not None and plain(data):
            return {name: data[name] for name in order if name in data}  # see _plain_order
    lang = _lang(locale)
    effective, errors = _prepare(form, data, current, lang)
    errors = errors or _validate(form, effective, lang)
    if errors:
        raise SubmissionInvalid(errors)
    return _clean(form, effective)


def _lang(locale: str) -> str:
    return "zh" if (locale or "zh").lower().startswith("zh") else "en"


def _prepare(
    form: Form, data: Any, current: Mapping[str, Any] | None, lang: str
) -> tuple[dict[str, Any], list[FieldError]]:
    """What will be validated: readonly/hidden values from current, nulls dropped, defaults, show-if."""
    if not isinstance(data, Mapping):
        return {}, [FieldError("$", "", _text("not_object", lang), "type")]
    effective = dict(data)
    conditional = False  # whether any field has an x-show-if
    for item in form.fields:
        name = item.name
        if item.readonly or item.hidden:
            # Fields the user cannot edit keep the value the task already had.
            effective.pop(name, None)
            if current is not None and name in current:
                effective[name] = current[name]
        if name in effective and effective[name] is None and not _allows_null(item.schema):
            del effective[name]
        if name not in effective and "default" in item.schema:
            effective[name] = copy.deepcopy(item.schema["default"])
        if item.show_if is not None:
            conditional = True
    if conditional:  # else every field is shown and nothing is dropped
        shown = _shown_names(form.fields, effective)
        for item in form.fields:
            if item.show_if is not None and item.name not in shown:
                effective.pop(item.name, None)
    problem = _size_problem(effective)
    if problem:
        return {}, [FieldError("$", "", _text(problem, lang), problem)]
    return effective, []


def _allows_null(schema: Mapping[str, Any]) -> bool:
    enum = schema.get("enum")
    if "const" in schema and schema["const"] is None:
        return True
    return "null" in _types(schema) or (isinstance(enum, list) and None in enum)


def _size_problem(data: Any) -> str | None:
    """"too_deep" or "too_large" when the data could make the validator recurse or crawl."""
    if type(data) is dict and len(data) < _MAX_DATA_NODES:
        for value in data.values():
            kind = type(value)
            if not (kind is str or kind is int or kind is bool or kind is float or value is None):
                break
        else:
            return None  # flat (most submissions): 1 + len(data) nodes, 2 levels deep, within both limits
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_DATA_NODES:
            return "too_large"
        if depth > _MAX_DATA_DEPTH:
            return "too_deep"
        kind = type(value)
        if kind is str or kind is int or kind is bool or kind is float or value is None:
            continue  # the common leaves, without the costlier isinstance checks below
        if isinstance(value, Mapping):
            stack.extend((child, depth + 1) for child in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((child, depth + 1) for child in value)
    return None


# Building a validator costs more than running it on one submission; a loaded schema never changes
# (per-step views share it), so one validator serves every submission of it. Kept with its schema,
# so that the id cannot be reused while cached.
_VALIDATORS: dict[int, tuple[Any, Any]] = {}


def _validator_for(schema: Mapping[str, Any]) -> Any:
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    if len(_VALIDATORS) >= 256:
        _VALIDATORS.clear()
    validator = _Validator(schema, format_checker=_FORMAT_CHECKER)
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def _validate(form: Form, data: dict[str, Any], lang: str) -> list[FieldError]:
    """Run the schema over prepared data; a crash of the validator becomes an error, not an exception."""
    plain = _plain_check_for(form.schema)
    if plain is not None and plain(data):
        return []  # what the validator finds in data that is plainly valid: nothing
    locked = {item.name for item in form.fields if item.readonly or item.hidden}
    errors: list[FieldError] = []
    try:
        validator = _validator_for(form.schema)
        for error in validator.iter_errors(data):
            found = _field_error(error, form, lang)
            if found.field in locked:
                continue  # the submitter cannot change these, so cannot fix them
            if found not in errors:
                errors.append(found)
            if len(errors) >= _MAX_FIELD_ERRORS:
                break
    except RecursionError:
        errors.append(FieldError("$", "", _text("too_deep", lang), "too_deep"))
    except Exception:  # noqa: BLE001 - any validator crash on user data must be a 422, never a 500
        errors.append(FieldError("$", "", _text("crash", lang), "error"))
    order = {item.name: index for index, item in enumerate(form.fields)}
    return sorted(errors, key=lambda e: (order.get(e.field, -1), e.path))


# --- plainly valid submissions -------------------------------------------------------------------
# Most forms are flat: an object of strings, numbers, booleans and choices. For such a schema a
# check in plain Python says, in a few microseconds, whether a submission is plainly valid; the
# validator takes 40-100. It only ever answers "valid" when the validator would find nothing:
# any keyword it does not know (formats, patterns, conditions, arrays, nested objects...) leaves
# the schema to the validator, and any value it is not sure of (a float for an integer, a number
# for a choice among numbers...) leaves the submission to it, which then gives the errors.
# tests/unit/test_forms_plain_check.py compares both on many submissions.

_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "default", "examples", "readOnly",
                          "writeOnly", "deprecated"})
_PLAIN_TOP = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties"}
_PLAIN_FIELD = _ANNOTATIONS | {"type", "enum", "minimum", "maximum", "minLength", "maxLength"}
_PLAIN_TYPES = {"string": (str,), "boolean": (bool,), "integer": (int,), "number": (int, float), "null": (type(None),)}
_PLAIN_CHECKS: dict[int, tuple[Any, Any]] = {}


def _plain_check_for(schema: Mapping[str, Any]) -> Any:
    return _by_identity(_PLAIN_CHECKS, schema, _plain_check)


def _by_identity(cache: dict[int, tuple[Any, Any]], obj: Any, compute: Any) -> Any:
    """``compute(obj)``, remembered per object (a loaded schema or form never changes). The object is
    kept with its value, so that its id is not reused meanwhile; at most 256 are kept."""
    cached = cache.get(id(obj))
    if cached is not None and cached[0] is obj:
        return cached[1]
    if len(cache) >= 256:
        cache.clear()
    value = compute(obj)
    cache[id(obj)] = (obj, value)
    return value


def _known(schema: Mapping[str, Any], keywords: frozenset[str]) -> bool:
    return all(key in keywords or key.startswith("x-") for key in schema)


def _plain_check(schema: Any) -> Any:
    """A function telling whether a submission is plainly valid, or None for a schema it cannot judge."""
    if not isinstance(schema, dict) or not _known(schema, _PLAIN_TOP) or schema.get("type") != "object":
        return None
    properties, required = schema.get("properties", {}), schema.get("required", [])
    closed = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list) or closed not in (True, False) \
            or not all(isinstance(name, str) for name in required):
        return None
    fields = {}
    for name, field in properties.items():
        check = _plain_field(field)
        if check is None:
            return None
        fields[name] = check
    needed = tuple(required)

    def plain(data: Any) -> bool:
        if type(data) is not dict or any(name not in data for name in needed):
            return False
        for name, value in data.items():
            check = fields.get(name)
            if check is None:
                if closed is False:
                    return False
                continue
            if not check(value):
                return False
        return True

    return plain


# check_submission of a flat submission (text, numbers and booleans; no null) that is plainly valid,
# for a form whose every field the submitter edits, with no default, no condition and no value to
# normalise: _prepare leaves such a submission as it is, _validate finds nothing in it, and _clean
# keeps the form's fields in their order, values unchanged. That is done at once. Anything else
# takes the general path. tests/unit/test_forms_quick_submission.py compares both.

_PLAIN_ORDERS: dict[int, tuple[Form, tuple[str, ...] | None]] = {}
_FLAT_ATOMS = frozenset({str, int, float, bool})


def _plain_order_for(form: Form) -> tuple[str, ...] | None:
    return _by_identity(_PLAIN_ORDERS, form, _plain_order)  # type: ignore[no-any-return]


def _plain_order(form: Form) -> tuple[str, ...] | None:
    """The names of the form's fields in order, if it is such a form; else None."""
    for item in form.fields:
        if item.readonly or item.hidden or item.show_if is not None or "default" in item.schema \
                or _normalises(item.schema):
            return None
    return tuple(item.name for item in form.fields)


def _normalises(schema: Mapping[str, Any]) -> bool:
    """Whether ``_normalise`` may change a value of a field of this schema."""
    return isinstance(schema.get("items"), dict) or schema.get("format") in ("phone", "email")


def _flat(data: Any) -> bool:
    """A dict of text, numbers and booleans, too small to be a size problem (``_size_problem``)."""
    if type(data) is not dict or len(data) >= _MAX_DATA_NODES:
        return False
    for value in data.values():
        if type(value) not in _FLAT_ATOMS:
            return False
    return True


def _plain_field(field: Any) -> Any:
    if field is True:
        return lambda value: True
    if not isinstance(field, dict) or not _known(field, _PLAIN_FIELD):
        return None
    kinds = field.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if kinds is not None and (not isinstance(kinds, list) or not all(k in _PLAIN_TYPES for k in kinds)):
        return None
    types = tuple({t for k in kinds for t in _PLAIN_TYPES[k]}) if kinds is not None else None
    choices = field.get("enum")
    if choices is not None and (not isinstance(choices, list) or not all(type(c) is str for c in choices)):
        return None  # choices among strings only: JSON equality of numbers and booleans differs from Python's
    low, high = field.get("minimum"), field.get("maximum")
    shortest, longest = field.get("minLength"), field.get("maxLength")
    for bound in (low, high):
        if bound is not None and (type(bound) not in (int, float) or not math.isfinite(bound)):
            return None
    for bound in (shortest, longest):
        if bound is not None and type(bound) is not int:
            return None

    def plain(value: Any) -> bool:
        kind = type(value)
        if types is not None and kind not in types:
            return False  # a bool is no integer, a float no integer: the validator decides
        if choices is not None and (kind is not str or value not in choices):
            return False
        if kind is int or kind is float:
            if kind is float and not math.isfinite(value):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        elif low is not None or high is not None:
            return False
        if kind is str:
            if (shortest is not None and len(value) < shortest) or (longest is not None and len(value) > longest):
                return False
        elif shortest is not None or longest is not None:
            return False
        return True

    return plain


def _clean(form: Form, data: Mapping[str, Any]) -> dict[str, Any]:
    """The validated data in field order, copied, with phones and e-mails normalised."""
    cleaned: dict[str, Any] = {}
    for item in form.fields:
        if item.name in data:
            value = data[item.name]
            if type(value) not in _IMMUTABLE:  # deepcopy returns those as they are
                value = copy.deepcopy(value)
            cleaned[item.name] = _normalise(item.schema, value)
    return cleaned


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _normalise(schema: Mapping[str, Any], value: Any) -> Any:
    items = schema.get("items")
    if isinstance(value, list) and isinstance(items, dict):
        return [_normalise(items, each) for each in value]
    if isinstance(value, str) and schema.get("format") == "phone":
        return _phone_e164(value) or value
    if isinstance(value, str) and schema.get("format") == "email":
        return _normal_email(value) or value
    return value


# --- messages --------------------------------------------------------------------------------

_MESSAGES: dict[str, tuple[str, str]] = {
    "required": ("「{label}」为必填项", "“{label}” is required"),
    "required_any": ("请至少填写以下一项：{names}", "Fill in at least one of: {names}"),
    "dependent": ("填写了「{other}」时，「{label}」为必填项", "“{label}” is required when “{other}” is filled in"),
    "type": ("「{label}」必须是{types}", "“{label}” must be {types}"),
    "not_object": ("提交的数据必须是一个对象（字段名到值的映射）", "The submission must be an object of field names and values"),
    "enum": ("「{label}」必须是以下选项之一：{options}", "“{label}” must be one of: {options}"),
    "enum_many": ("「{label}」不是可选的值", "“{label}” is not one of the allowed options"),
    "between": ("「{label}」必须在 {minimum} 到 {maximum} 之间", "“{label}” must be between {minimum} and {maximum}"),
    "minimum": ("「{label}」不能小于 {limit}", "“{label}” must be at least {limit}"),
    "maximum": ("「{label}」不能大于 {limit}", "“{label}” must be at most {limit}"),
    "exclusiveMinimum": ("「{label}」必须大于 {limit}", "“{label}” must be greater than {limit}"),
    "exclusiveMaximum": ("「{label}」必须小于 {limit}", "“{label}” must be less than {limit}"),
    "multipleOf": ("「{label}」必须是 {limit} 的倍数", "“{label}” must be a multiple of {limit}"),
    "empty": ("「{label}」不能为空", "“{label}” must not be empty"),
    "minLength": ("「{label}」至少需要 {limit} 个字符", "“{label}” must be at least {limit} characters long"),
    "maxLength": ("「{label}」不能超过 {limit} 个字符", "“{label}” must be at most {limit} characters long"),
    "pattern": ("「{label}」的格式不正确", "“{label}” is not in the expected format"),
    "format_email": ("「{label}」不是有效的电子邮箱地址", "“{label}” is not a valid e-mail address"),
    "format_phone": (
        "「{label}」不是有效的电话号码（中国大陆以外的号码请以 + 和国家或地区代码开头）",
        "“{label}” is not a valid phone number (numbers outside mainland China must start with + and the country code)",
    ),
    "format_date": ("「{label}」不是有效的日期（格式为 YYYY-MM-DD）", "“{label}” is not a valid date (use YYYY-MM-DD)"),
    "format_date-time": (
        "「{label}」不是有效的日期时间（格式为 YYYY-MM-DDTHH:MM）",
        "“{label}” is not a valid date and time (use YYYY-MM-DDTHH:MM)",
    ),
    "format": ("「{label}」的格式不正确", "“{label}” is not in the expected format"),
    "additional": ("表单中没有「{name}」这一项", "The form has no field “{name}”"),
    "minItems": ("「{label}」至少需要 {limit} 项", "“{label}” needs at least {limit} items"),
    "maxItems": ("「{label}」最多只能有 {limit} 项", "“{label}” can have at most {limit} items"),
    "uniqueItems": ("「{label}」中有重复的项", "“{label}” contains duplicate items"),
    "const": ("「{label}」必须为 {value}", "“{label}” must be {value}"),
    "invalid": ("「{label}」的值无效", "“{label}” is not valid"),
    "invalid_root": ("提交的内容无效", "The submission is not valid"),
    "too_deep": ("提交的数据嵌套过深", "The submission is nested too deeply"),
    "too_large": ("提交的数据过大", "The submission has too many values"),
    "crash": ("无法校验提交的内容，请检查后重试", "The submission could not be checked; please review it and try again"),
}

_TYPE_NAMES: dict[str, tuple[str, str]] = {
    "string": ("文本", "text"),
    "integer": ("整数", "a whole number"),
    "number": ("数字", "a number"),
    "boolean": ("「是」或「否」", "yes or no"),
    "array": ("列表", "a list"),
    "object": ("对象", "an object"),
    "null": ("空值", "empty"),
}


def _text(key: str, lang: str, **values: Any) -> str:
    zh, en = _MESSAGES[key]
    return (zh if lang == "zh" else en).format(**values)


def _quote(text: str, lang: str) -> str:
    return f"「{text}」" if lang == "zh" else f"“{text}”"


def _short(value: Any, limit: int = 40) -> str:
    """A user-supplied value made safe to show in a message: bounded in length."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _short(value)


def _field_error(error: ValidationError, form: Form, lang: str) -> FieldError:
    """A jsonschema error as a FieldError with a message naming the field's label."""
    path = tuple(error.absolute_path)
    names = {item.name for item in form.fields}
    field = path[0] if path and isinstance(path[0], str) and path[0] in names else ""
    keyword = str(error.validator)
    message = _message(error, keyword, form, field, path, lang)
    return FieldError(error.json_path, field, message, keyword)


def _label(form: Form, field: str, path: tuple[Any, ...], lang: str) -> str:
    if field:
        labels = form.field(field).label
        return labels.get(lang) or labels.get("zh") or field
    return _short(str(path[-1])) if path else ""


def _name_label(form: Form, name: Any, lang: str) -> str:
    """The label of the field called name, or the name itself when the form has no such field."""
    known = isinstance(name, str) and any(item.name == name for item in form.fields)
    return _label(form, name, (name,), lang) if known else _short(str(name))


def _message(error: ValidationError, keyword: str, form: Form, field: str, path: tuple[Any, ...], lang: str) -> str:
    """The localized text for one error; keyword-specific where a user can act on it."""
    label = _label(form, field, path, lang)
    value = error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if keyword == "additionalProperties" and not field and path:
        return _text("additional", lang, name=_short(str(path[-1])))
    required_any = _required_names(value) if keyword == "anyOf" else None
    if required_any:
        names = [_quote(_name_label(form, name, lang), lang) for name in required_any]
        return _text("required_any", lang, names=("、" if lang == "zh" else ", ").join(names))
    if not label:
        return _text("not_object" if keyword == "type" else "invalid_root", lang)
    if keyword == "required":
        return _text("required", lang, label=label)
    if keyword == "dependentRequired":
        return _text("dependent", lang, label=label, other=_name_label(form, value, lang))
    return _value_message(keyword, value, schema, form, field, label, lang)


_LIMIT_KEYWORDS = frozenset(
    {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "maxLength", "minItems", "maxItems"}
)


def _value_message(
    keyword: str, value: Any, schema: Mapping[str, Any], form: Form, field: str, label: str, lang: str
) -> str:
    """Messages for keywords that constrain a value."""
    if keyword == "type":
        kinds = [value] if isinstance(value, str) else list(value)
        names = [_TYPE_NAMES[k][0 if lang == "zh" else 1] for k in kinds if k in _TYPE_NAMES]
        return _text("type", lang, label=label, types=("或" if lang == "zh" else " or ").join(names))
    if keyword == "enum":
        return _enum_message(value, form, field, label, lang)
    if keyword in ("minimum", "maximum") and "minimum" in schema and "maximum" in schema:
        low, high = _number(schema["minimum"]), _number(schema["maximum"])
        return _text("between", lang, label=label, minimum=low, maximum=high)
    if keyword in _LIMIT_KEYWORDS:
        return _text(keyword, lang, label=label, limit=_number(value))
    if keyword == "minLength":
        return _text("empty" if value == 1 else "minLength", lang, label=label, limit=_number(value))
    if keyword == "format":
        key = f"format_{value}"
        return _text(key if key in _MESSAGES else "format", lang, label=label)
    if keyword == "const":
        shown = _default_label(value)[lang] if isinstance(value, bool) else _short(value)
        return _text("const", lang, label=label, value=shown)
    if keyword in ("pattern", "uniqueItems"):
        return _text(keyword, lang, label=label)
    return _text("invalid", lang, label=label)


def _enum_message(values: Any, form: Form, field: str, label: str, lang: str) -> str:
    options = list(values) if isinstance(values, list) else []
    if len(options) > 10:
        return _text("enum_many", lang, label=label)
    labels = {_value_key(v): text for v, text in form.field(field).options} if field else {}
    shown = [_quote(labels.get(_value_key(v), _default_label(v))[lang], lang) for v in options]
    return _text("enum", lang, label=label, options=("、" if lang == "zh" else ", ").join(shown))


def _required_names(value: Any) -> list[str] | None:
    """The field names of an anyOf whose branches only require fields, else None."""
    if not isinstance(value, list) or not value:
        return None
    names: list[str] = []
    for branch in value:
        if not (isinstance(branch, Mapping) and set(branch) == {"required"} and isinstance(branch["required"], list)):
            return None
        names.extend(str(name) for name in branch["required"])
    return names


# --- form posts, prefill, views --------------------------------------------------------------


def coerce_form_post(form: Form, values: Mapping[str, list[str]]) -> dict[str, Any]:
    """Cast an HTML form post (every value a list of strings) to the types the schema expects."""
    by_name = {item.name: item for item in form.fields}
    out: dict[str, Any] = {}
    getlist = getattr(values, "getlist", None)  # a werkzeug MultiDict's items() would drop repeats
    for name, raw in values.items():
        if name == CSRF_FIELD:
            continue
        raw = getlist(name) if getlist is not None else raw
        texts = [raw] if isinstance(raw, str) else [str(each) for each in raw]
        item = by_name.get(name)
        if item is None:
            out[name] = texts[0] if len(texts) == 1 else texts  # left for validation to refuse
        else:
            out[name] = _coerce_field(item.schema, texts)
    for item in form.fields:
        # Browsers send nothing for an unchecked box or an empty checkbox group.
        if item.name in values or item.readonly or item.hidden:
            continue
        if item.widget == "checkbox" and "boolean" in _types(item.schema):
            out[item.name] = False
        elif item.widget == "checkboxes" and "array" in _types(item.schema):
            out[item.name] = []
    return out


def _coerce_field(schema: Mapping[str, Any], texts: list[str]) -> Any:
    if "array" in _types(schema):
        items = schema.get("items")
        item_schema: Mapping[str, Any] = items if isinstance(items, dict) else {}
        return [_coerce_scalar(item_schema, text) for text in texts if text.strip()]
    if len(texts) != 1:
        return texts  # several values for one scalar: a tampered post, reported as a type error
    return _coerce_scalar(schema, texts[0])


def _coerce_scalar(schema: Mapping[str, Any], text: str) -> Any:
    """One posted string cast per the schema; uncastable text is returned unchanged."""
    stripped = text.strip()
    if not stripped:
        return None  # not answered: dropped before validation, so "required" reports it
    enum = schema.get("enum")
    if isinstance(enum, list):
        for value in enum:
            if _value_key(value) == stripped:
                return value
    types = _types(schema)
    if "boolean" in types and stripped.lower() in _TRUE_TEXTS | _FALSE_TEXTS:
        return stripped.lower() in _TRUE_TEXTS
    if types & {"integer", "number"} and _INT_TEXT_RE.fullmatch(stripped):
        try:
            return int(stripped)
        except ValueError:  # more digits than int() accepts
            return text
    if "number" in types and _NUMBER_TEXT_RE.fullmatch(stripped):
        number = float(stripped)
        return number if math.isfinite(number) else text
    return text


def prefill(form: Form, context: Mapping[str, Any]) -> dict[str, Any]:
    """Initial values from each field's ``x-prefill`` path in context; missing values are omitted."""
    out: dict[str, Any] = {}
    for item in form.fields:
        if item.prefill is None:
            continue
        value = _lookup(context, item.prefill)
        if value is not _MISSING and value is not None:
            out[item.name] = value.isoformat() if isinstance(value, (date, datetime)) else copy.deepcopy(value)
    return out


def _lookup(context: Any, dotted: str) -> Any:
    node = context
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            return _MISSING
    return node


def view(form: Form, *, readonly: Iterable[str] = (), hidden: Iterable[str] = ()) -> Form:
    """A per-step variant of a form with some fields read-only or hidden; unknown names raise ValueError."""
    locked_ro = _names(readonly)
    locked_hidden = _names(hidden)
    unknown = sorted((locked_ro | locked_hidden) - {item.name for item in form.fields})
    if unknown:
        raise ValueError(f"the form {form.id!r} has no field named {', '.join(map(repr, unknown))}")
    fields = tuple(
        replace(
            item, readonly=item.readonly or item.name in locked_ro, hidden=item.hidden or item.name in locked_hidden
        )
        for item in form.fields
    )
    return replace(form, fields=fields)


def _names(names: Iterable[str] | None) -> set[str]:
    if names is None:
        return set()
    return {names} if isinstance(names, str) else set(names)


def visible_fields(form: Form, data: Mapping[str, Any]) -> list[FormField]:
    """The fields to show for data, in order: x-show-if applied, view-hidden fields left out."""
    shown = _shown_names(form.fields, data)
    return [item for item in form.fields if item.name in shown and not item.hidden]


def _shown_names(fields: Sequence[FormField], data: Mapping[str, Any]) -> set[str]:
    """Names of fields whose x-show-if holds, following chains (a field under a hidden one is hidden)."""
    if all(item.show_if is None for item in fields):
        return {item.name for item in fields}  # every field is shown: what the walk below finds
    by_name = {item.name: item for item in fields}
    shown: dict[str, bool] = {}
    for start in by_name:
        chain: list[str] = []
        seen: set[str] = set()
        name: str | None = start
        while name is not None and name in by_name and name not in shown and name not in seen:
            chain.append(name)
            seen.add(name)
            condition = by_name[name].show_if
            name = condition.get("field") if condition is not None else None
        for name in reversed(chain):
            condition = by_name[name].show_if
            if condition is None:
                shown[name] = True
                continue
            target = condition.get("field")
            shown[name] = bool(
                shown.get(target, False) and target in data and _same(data[target], condition.get("equals"))
            )
    return {name for name, visible in shown.items() if visible}


def _same(left: Any, right: Any) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return bool(left == right)

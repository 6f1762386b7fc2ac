"""The form designer's model: the "Careflow form subset" of JSON Schema as a list of fields, and back.

A design is plain JSON (what the designer page edits)::

    {"id": "callback", "title": {"zh", "en"}, "description": {"zh", "en"} | null, "order": true,
     "fields": [{"key": "topic", "type": "radio", "label": {"zh", "en"}, "help": {"zh", "en"},
                 "required": true, "options": [{"value": "billing", "label": {"zh", "en"}}],
                 "min": null, "max": null, "minLength": null, "maxLength": null, "pattern": "",
                 "show_if": {"field": "other_field", "equals": "value"} | null,
                 "widget_explicit": true, "extra": {...}, "locked": false, "schema": null}],
     "extra": {...}}

Field types: text, textarea, number, integer, select, radio, yesno (a boolean as two radio
buttons), checkbox (one yes/no box), checkboxes (several choices), date, datetime, phone, email,
rating, file. "Show only if FIELD = VALUE" becomes ``x-show-if`` on the field (what the renderer
reads) and, for a required field, an ``if``/``then`` rule that makes it required exactly then (what
the validator enforces); a required field without a condition goes into the root ``required``.

Nothing outside the subset is lost: a property's other keywords stay in its ``extra`` and are
written back unchanged; a property the subset cannot express at all is ``locked`` and kept as its
raw ``schema``; the root's other keywords (``anyOf``, ``dependentRequired``, other ``if``/``then``
rules, ``$defs``...) stay in the design's ``extra``. ``to_design(from_design(d))`` and
``from_design(to_design(s))`` are the identity up to the order of ``required`` and ``allOf``.

Checking a design is two steps: ``design_problems`` (the design's own shape, each problem naming
its field) and then the emitted schema through ``engine.forms.load_form_text``, exactly as
``careflow validate`` checks a file (``field_of_path`` maps its problems back to fields).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.forms import _default_widget

__all__ = [
    "FIELD_TYPES",
    "DesignProblem",
    "design_problems",
    "field_of_path",
    "from_design",
    "new_design",
    "schema_text",
    "to_design",
]

SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
FIELD_TYPES = (
    "text", "textarea", "number", "integer", "select", "radio", "yesno", "checkbox", "checkboxes",
    "date", "datetime", "phone", "email", "rating", "file",
)
_CHOICE_TYPES = ("select", "radio", "checkboxes")
_NUMERIC_TYPES = ("number", "integer", "rating")
_TEXT_TYPES = ("text", "textarea", "phone", "email")
_FORMATS = {"date": "date", "datetime": "date-time", "phone": "phone", "email": "email"}
_WIDGETS = {"yesno": "radio", "datetime": "datetime"}
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}\Z")
_FORM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
# Keys a field of the subset writes itself; anything else on a property is kept in "extra".
_FIELD_KEYS = ("type", "format", "enum", "items", "uniqueItems", "minimum", "maximum", "minLength", "maxLength",
               "pattern", "x-label", "x-widget", "x-help", "x-enum-labels", "x-show-if")
_ROOT_KEYS = ("$schema", "type", "additionalProperties", "x-title", "x-description", "x-order", "required",
              "properties")


@dataclass(frozen=True)
class DesignProblem:
    """A problem of a design: ``field`` is the field's key ("" for the form), ``code`` says what, ``params`` the details."""

    field: str
    code: str
    params: Mapping[str, Any] = field(default_factory=dict)


def _text(value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        return {"zh": str(value.get("zh") or ""), "en": str(value.get("en") or "")}
    return {"zh": "", "en": ""}


def _has_text(value: Any) -> bool:
    return isinstance(value, Mapping) and any(str(value.get(lang) or "").strip() for lang in ("zh", "en"))


def new_design(form_id: str = "") -> dict[str, Any]:
    """An empty form: a title to fill in and no fields."""
    return {"id": form_id, "title": {"zh": "", "en": ""}, "description": None, "order": True, "fields": [], "extra": {}}


def new_field(key: str, type_: str = "text") -> dict[str, Any]:
    return {"key": key, "type": type_, "label": {"zh": "", "en": ""}, "help": {"zh": "", "en": ""}, "required": False,
            "options": [], "min": None, "max": None, "minLength": None, "maxLength": None, "pattern": "",
            "show_if": None, "widget_explicit": True, "extra": {}, "locked": False, "schema": None}


# --- schema -> design ----------------------------------------------------------------------------


def _field_type(prop: Mapping[str, Any]) -> str | None:
    """The subset type of a property, or None when it is outside the subset."""
    widget = prop.get("x-widget") or _default_widget(prop)
    declared = prop.get("type")
    fmt = prop.get("format")
    # Hand-written JSON may put anything anywhere: what is not a plain name is outside the subset.
    if not isinstance(widget, str) or not isinstance(declared, str) or not isinstance(fmt, (str, type(None))):
        return None
    if declared == "string":
        if fmt is not None:
            by_format = {v: k for k, v in _FORMATS.items()}
            kind = by_format.get(fmt)
            return kind if kind is not None and widget == (_WIDGETS.get(kind, kind)) else None
        if "enum" in prop:
            return widget if widget in ("select", "radio") else None
        return widget if widget in ("text", "textarea", "file") else None
    if declared == "boolean":
        return {"radio": "yesno", "checkbox": "checkbox"}.get(widget)
    if declared == "array":
        return "checkboxes" if widget == "checkboxes" else None
    if declared == "integer":
        return {"number": "integer", "rating": "rating"}.get(widget)
    if declared == "number":
        return "number" if widget == "number" else None
    return None


def _options(prop: Mapping[str, Any], type_: str) -> list[dict[str, Any]]:
    if type_ == "checkboxes":
        items = prop.get("items")
        values = items.get("enum") if isinstance(items, Mapping) else []
    elif type_ in ("yesno", "checkbox"):
        values = [True, False] if type_ == "yesno" or "x-enum-labels" in prop else []
    else:
        values = prop.get("enum")
    # Not a list (or labels not an object): the field cannot be written back alike, so it ends up locked.
    values = values if isinstance(values, list) else []
    labels = prop.get("x-enum-labels")
    labels = labels if isinstance(labels, Mapping) else {}
    out = []
    for value in values:
        key = value if isinstance(value, str) else json.dumps(value)
        out.append({"value": value, "label": _text(labels.get(key)) if key in labels else None})
    return out


def _condition_rules(root: Mapping[str, Any], props: Mapping[str, Any]) -> tuple[dict[str, Any], set[int], bool]:
    """Which if/then rules only say "FIELD required when its x-show-if holds": {key: rule} plus allOf indexes used."""
    def matches(rule: Any) -> str | None:
        if not isinstance(rule, Mapping) or set(rule) != {"if", "then"}:
            return None
        cond, then = rule["if"], rule["then"]
        if not (isinstance(then, Mapping) and set(then) == {"required"} and isinstance(then["required"], list)
                and len(then["required"]) == 1 and isinstance(cond, Mapping) and set(cond) == {"properties", "required"}):
            return None
        key = then["required"][0]
        prop = props.get(key) if isinstance(key, str) else None
        show = prop.get("x-show-if") if isinstance(prop, Mapping) else None
        if not isinstance(show, Mapping) or set(show) != {"field", "equals"} or not isinstance(show["field"], str):
            return None
        expected = {"properties": {show["field"]: {"const": show["equals"]}}, "required": [show["field"]]}
        return key if _same_json(cond, expected) else None

    found: dict[str, Any] = {}
    used: set[int] = set()
    root_rule = False
    if "if" in root and "then" in root and "else" not in root:
        key = matches({"if": root["if"], "then": root["then"]})
        if key is not None:
            found[key] = True
            root_rule = True
    rules = root.get("allOf")
    for index, rule in enumerate(rules if isinstance(rules, list) else []):
        key = matches(rule)
        if key is not None and key not in found:
            found[key] = True
            used.add(index)
    return found, used, root_rule


def _same_json(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _locked(key: str, prop: Any) -> dict[str, Any]:
    item = new_field(key)
    item.update(locked=True, type="", schema=copy.deepcopy(prop),
                label=_text(prop.get("x-label")) if isinstance(prop, Mapping) else {"zh": "", "en": ""})
    return item


def _to_field(key: str, prop: Any, in_required: bool, conditional: bool) -> tuple[dict[str, Any], bool]:
    """(the design field, whether the root required list entry was used)."""
    if not isinstance(prop, Mapping):
        return _locked(key, prop), False
    type_ = _field_type(prop)
    if type_ is None:
        return _locked(key, prop), False
    item = new_field(key, type_)
    item["label"] = _text(prop.get("x-label"))
    item["help"] = _text(prop.get("x-help"))
    item["options"] = _options(prop, type_)
    show = prop.get("x-show-if")
    if show is not None and not (isinstance(show, Mapping) and isinstance(show.get("field"), str)):
        return _locked(key, prop), False  # a condition the designer cannot show: kept as it is
    item["show_if"] = copy.deepcopy(dict(show)) if isinstance(show, Mapping) else None
    item["widget_explicit"] = "x-widget" in prop
    if type_ in _NUMERIC_TYPES:
        item["min"], item["max"] = prop.get("minimum"), prop.get("maximum")
    if type_ in _TEXT_TYPES:
        item["minLength"], item["maxLength"] = prop.get("minLength"), prop.get("maxLength")
        item["pattern"] = prop.get("pattern", "")
    item["extra"] = {k: copy.deepcopy(v) for k, v in prop.items() if k not in _FIELD_KEYS}
    used_required = False
    if item["show_if"] is not None:
        item["required"] = conditional
    else:
        item["required"] = in_required
        used_required = in_required
    # The proof that nothing is lost: writing the field back must give the very same property.
    emitted = _field_schema(item)
    if not _same_json(emitted, prop):
        return _locked(key, prop), False
    return item, used_required


def to_design(schema: Mapping[str, Any], form_id: str = "") -> dict[str, Any]:
    """The design of a form schema (it need not be valid: what cannot be read is kept as it is)."""
    design = new_design(form_id)
    props = schema.get("properties") if isinstance(schema.get("properties"), Mapping) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    rules, used_rules, root_rule = _condition_rules(schema, props)
    raw_order = schema.get("x-order")
    # An x-order that is not a list of names is kept as the form's own (load_form_text then names it).
    order_ok = isinstance(raw_order, list) and all(isinstance(name, str) for name in raw_order)
    order = [name for name in (raw_order if order_ok else []) if name in props]
    order = list(dict.fromkeys(order)) + [name for name in props if name not in order]
    unused_required = list(required)
    for name in order:
        item, used = _to_field(name, props[name], name in required, name in rules)
        if used:
            unused_required.remove(name)
        design["fields"].append(item)
    design["title"] = _text(schema.get("x-title"))
    design["description"] = _text(schema["x-description"]) if "x-description" in schema else None
    design["order"] = "x-order" in schema and order_ok
    extra = {k: copy.deepcopy(v) for k, v in schema.items() if k not in _ROOT_KEYS}
    if "x-order" in schema and not order_ok:
        extra["x-order"] = copy.deepcopy(raw_order)
    for name in ("x-title", "x-description"):
        if name in schema and not isinstance(schema[name], Mapping):
            extra[name] = copy.deepcopy(schema[name])
    if schema.get("type") != "object" and "type" in schema:
        extra["type"] = copy.deepcopy(schema["type"])
    if schema.get("additionalProperties") is not False and "additionalProperties" in schema:
        extra["additionalProperties"] = copy.deepcopy(schema["additionalProperties"])
    locked_keys = {f["key"] for f in design["fields"] if f["locked"]}
    # A rule whose field ended up locked stays a rule of the form: the field cannot carry it.
    kept_rules = {key for key in rules if key not in locked_keys}
    if root_rule and schema["then"]["required"][0] in kept_rules:
        extra.pop("if", None)
        extra.pop("then", None)
    for name, kind in (("properties", Mapping), ("required", list)):
        if name in schema and not isinstance(schema[name], kind):
            extra[name] = copy.deepcopy(schema[name])
    if isinstance(extra.get("allOf"), list):
        rest = [rule for index, rule in enumerate(extra["allOf"])
                if not (index in used_rules and rule["then"]["required"][0] in kept_rules)]
        if rest:
            extra["allOf"] = rest
        else:
            del extra["allOf"]
    if unused_required:
        extra["required"] = unused_required
    design["extra"] = extra
    return design


# --- design -> schema ----------------------------------------------------------------------------


def _labels_map(options: list[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    out = {}
    for option in options:
        label = option.get("label")
        if _has_text(label):
            value = option.get("value")
            out[value if isinstance(value, str) else json.dumps(value)] = _text(label)
    return out


def _number(value: Any) -> Any:
    """A number from the page (which may send text); other values are left for the checks to name."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    return value


def _field_schema(item: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema property of one design field."""
    if item.get("locked"):
        return copy.deepcopy(item.get("schema"))  # type: ignore[no-any-return]
    type_ = item.get("type")
    type_ = type_ if isinstance(type_, str) else ""  # design_problems names a type that is not one
    prop: dict[str, Any] = {}
    values = [option.get("value") for option in item.get("options") or []]
    if type_ in ("number", "integer", "rating"):
        prop["type"] = "number" if type_ == "number" else "integer"
    elif type_ in ("yesno", "checkbox"):
        prop["type"] = "boolean"
    elif type_ == "checkboxes":
        prop.update(type="array", uniqueItems=True, items={"type": "string", "enum": values})
    else:
        prop["type"] = "string"
    if type_ in _FORMATS:
        prop["format"] = _FORMATS[str(type_)]
    if type_ in ("select", "radio"):
        prop["enum"] = values
    if type_ in _NUMERIC_TYPES:
        for name, key in (("minimum", "min"), ("maximum", "max")):
            if _number(item.get(key)) is not None:
                prop[name] = _number(item.get(key))
    if type_ in _TEXT_TYPES:
        for name in ("minLength", "maxLength"):
            if _number(item.get(name)) is not None:
                prop[name] = _number(item.get(name))
        if item.get("pattern"):
            prop["pattern"] = item["pattern"]
    prop.update(copy.deepcopy(dict(item.get("extra") or {})))
    prop["x-label"] = _text(item.get("label"))
    widget = _WIDGETS.get(str(type_), type_)
    if type_ == "integer":
        widget = "number"
    if item.get("widget_explicit", True) or _default_widget(prop) != widget:
        prop["x-widget"] = widget
    if _has_text(item.get("help")):
        prop["x-help"] = _text(item.get("help"))
    if type_ in _CHOICE_TYPES or type_ in ("yesno", "checkbox"):
        labels = _labels_map(item.get("options") or [])
        if labels:
            prop["x-enum-labels"] = labels
    show = item.get("show_if")
    if isinstance(show, Mapping) and show.get("field"):
        prop["x-show-if"] = {"field": show["field"], "equals": show.get("equals")}
    return prop


def _typed_equals(fields: list[Mapping[str, Any]], show: Mapping[str, Any]) -> Any:
    """The condition's value as its controlling field stores it (the page sends choices as text)."""
    target = next((f for f in fields if f.get("key") == show.get("field")), None)
    value = show.get("equals")
    if target is None or target.get("locked") or not isinstance(value, str):
        return value
    if target.get("type") in ("yesno", "checkbox"):
        return {"true": True, "false": False}.get(value, value)
    if target.get("type") in ("integer", "rating", "number"):
        number = _number(value)
        return number if number is not None else value
    return value


def from_design(design: Mapping[str, Any]) -> dict[str, Any]:
    """The form's JSON Schema (2020-12 plus the x- hints) for a design."""
    fields = [dict(f) for f in design.get("fields") or []]
    for item in fields:
        show = item.get("show_if")
        if isinstance(show, Mapping) and show.get("field"):
            item["show_if"] = {"field": show["field"], "equals": _typed_equals(fields, show)}
        else:
            item["show_if"] = None
    extra = copy.deepcopy(dict(design.get("extra") or {}))
    schema: dict[str, Any] = {"$schema": SCHEMA_URI, "type": extra.pop("type", "object"),
                              "additionalProperties": extra.pop("additionalProperties", False),
                              "x-title": _text(design.get("title"))}
    if _has_text(design.get("description")):
        schema["x-description"] = _text(design.get("description"))
    keys = [str(f.get("key") or "") for f in fields]
    if design.get("order", True):
        schema["x-order"] = keys
    required = [f["key"] for f in fields if f.get("required") and not f.get("locked") and f["show_if"] is None]
    others = extra.pop("required", [])
    if isinstance(others, list):
        required += [name for name in others if name not in required]
    else:
        extra["required"] = others  # not a list: written back as it is, for the schema checks to name
    if required:
        schema["required"] = required
    schema["properties"] = {str(f.get("key") or ""): _field_schema(f) for f in fields}
    rules = [{"if": {"properties": {f["show_if"]["field"]: {"const": f["show_if"]["equals"]}},
                     "required": [f["show_if"]["field"]]},
              "then": {"required": [f["key"]]}}
             for f in fields if f.get("required") and not f.get("locked") and f["show_if"] is not None]
    all_of = extra.pop("allOf", None)
    if all_of is not None and not isinstance(all_of, list):
        extra["allOf"], all_of = all_of, None  # likewise
    if rules and (all_of is not None or "if" in extra or "then" in extra or len(rules) > 1):
        all_of = (all_of or []) + rules
    elif rules:
        schema.update(rules[0])
    schema.update(extra)
    if all_of is not None:
        schema["allOf"] = all_of
    return schema


def schema_text(schema: Mapping[str, Any]) -> str:
    """How a designed form is written: indented UTF-8 JSON, as the built-in forms are."""
    return json.dumps(schema, ensure_ascii=False, indent=2) + "\n"


# --- checks --------------------------------------------------------------------------------------


def design_problems(design: Mapping[str, Any]) -> list[DesignProblem]:
    """What is wrong with the design itself, each named by field, before the schema checks run."""
    problems: list[DesignProblem] = []
    form_id = str(design.get("id") or "")
    if not _FORM_ID_RE.match(form_id):
        problems.append(DesignProblem("", "form_id", {"value": form_id}))
    if not all(str(_text(design.get("title"))[lang]).strip() for lang in ("zh", "en")):
        problems.append(DesignProblem("", "title"))
    seen: set[str] = set()
    fields = list(design.get("fields") or [])
    keys = {str(f.get("key") or "") for f in fields}
    for index, item in enumerate(fields):
        key = str(item.get("key") or "")
        name = key or f"#{index + 1}"
        if not _KEY_RE.match(key) or key == "csrf_token":
            problems.append(DesignProblem(name, "key", {"value": key}))
        elif key in seen:
            problems.append(DesignProblem(name, "duplicate", {"value": key}))
        seen.add(key)
        if item.get("locked"):
            continue
        type_ = item.get("type")
        if not isinstance(type_, str) or type_ not in FIELD_TYPES:
            problems.append(DesignProblem(name, "type", {"value": type_}))
            continue
        if not all(_text(item.get("label"))[lang].strip() for lang in ("zh", "en")):
            problems.append(DesignProblem(name, "label"))
        if type_ in _CHOICE_TYPES:
            values = [o.get("value") for o in item.get("options") or []]
            if not values:
                problems.append(DesignProblem(name, "no_options"))
            if any(not isinstance(v, str) or not v.strip() for v in values):
                problems.append(DesignProblem(name, "option_value"))
            elif len(set(values)) != len(values):
                problems.append(DesignProblem(name, "option_duplicate"))
        for key_name in ("min", "max", "minLength", "maxLength"):
            value = _number(item.get(key_name))
            if value is not None and (isinstance(value, str) or isinstance(value, bool)):
                problems.append(DesignProblem(name, "not_number", {"what": key_name, "value": value}))
        low, high = _number(item.get("min")), _number(item.get("max"))
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high and type_ in _NUMERIC_TYPES:
            problems.append(DesignProblem(name, "min_max", {"min": low, "max": high}))
        if type_ == "rating" and (low is None or high is None):
            problems.append(DesignProblem(name, "rating"))
        show = item.get("show_if")
        if isinstance(show, Mapping) and show.get("field"):
            if not isinstance(show["field"], str):
                problems.append(DesignProblem(name, "show_if_field", {"value": show["field"]}))
            elif show["field"] == key:
                problems.append(DesignProblem(name, "show_if_self"))
            elif show["field"] not in keys:
                problems.append(DesignProblem(name, "show_if_field", {"value": show["field"]}))
    return problems


_PATH_FIELD_RE = re.compile(r'^\$\.properties(?:\.([A-Za-z][A-Za-z0-9_]*)|\["([^"]+)"\])')
_RULE_FIELD_RE = re.compile(r"^\$(?:\.allOf\[\d+\])?\.then\.required")


def field_of_path(path: str, schema: Mapping[str, Any] | None = None) -> str:
    """The field a ``careflow validate`` problem's JSON path is about ("" for the form as a whole)."""
    found = _PATH_FIELD_RE.match(path or "")
    if found:
        return found.group(1) or found.group(2)
    if schema is not None:
        index = re.match(r"^\$\.required\[(\d+)\]", path or "")
        required = schema.get("required") or []
        if index and int(index.group(1)) < len(required) and isinstance(required[int(index.group(1))], str):
            return str(required[int(index.group(1))])
        order = re.match(r'^\$\["x-order"\]\[(\d+)\]', path or "")
        names = schema.get("x-order") or []
        if order and int(order.group(1)) < len(names):
            return str(names[int(order.group(1))])
    return ""

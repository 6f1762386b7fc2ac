"""Request and response schemas (marshmallow): they validate input and document the API.

Limits here mirror the columns they end up in, so input that the database would refuse is a
422 before it gets near a query.
"""

from __future__ import annotations

from datetime import timezone
from typing import Any

from apiflask import Schema
from apiflask.fields import AwareDateTime, Boolean, Dict, Float, Integer, List, Nested, Raw, String
from apiflask.validators import Length, OneOf, Range, Regexp
from marshmallow import ValidationError, validates_schema

from engine.auth.tokens import SCOPES
from engine.store.customers import CHANNELS, GRADES, PROFILE_FIELDS

MAX_ID = 2**63 - 1
IDENT = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
USERNAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
ROLE = r"^[a-z][a-z0-9_]{0,63}$"
HOOK_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


NO_NUL = r"^[^\x00]*$"


class StrictInteger(Integer):
    """A JSON integer: not a string, not a boolean, not 5.0."""

    def __init__(self, **kw: Any):
        super().__init__(strict=True, **kw)

    def _validated(self, value: Any) -> Any:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictFloat(Float):
    """A JSON number: not a string, not a boolean."""

    def _validated(self, value: Any) -> Any:
        if isinstance(value, (bool, str)):
            raise self.make_error("invalid")
        return super()._validated(value)


class StrictBoolean(Boolean):
    """A JSON boolean: true or false, not 1 or "yes"."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def DateTimeText(**kw: Any) -> String:  # noqa: N802 - a field factory
    """An ISO-8601 instant as the API writes it."""
    return String(metadata={"format": "date-time", **kw.pop("metadata", {})}, **kw)


def Id(strict: bool = True, **kw: Any) -> Integer:  # noqa: N802
    """A positive 64-bit id; strict in JSON bodies, from text in query strings."""
    if strict:
        return StrictInteger(validate=Range(min=1, max=MAX_ID), **kw)
    return Integer(validate=Range(min=1, max=MAX_ID), **kw)


def Ident(**kw: Any) -> String:  # noqa: N802
    return String(validate=Regexp(IDENT), **kw)


def Text(max_len: int, min_len: int = 0, **kw: Any) -> String:  # noqa: N802
    """Text of bounded length without NUL characters (PostgreSQL text cannot hold them)."""
    return String(validate=[Length(min=min_len, max=max_len), Regexp(NO_NUL)], **kw)


class Localized(Schema):
    zh = String()
    en = String()


# ----- errors -------------------------------------------------------------------------------------


class ErrorDetail(Schema):
    """A field error (path, field, message, code) or a located definition problem."""

    path = String()
    field = String()
    message = String()
    code = String()
    location = String()
    source = String()
    line = Integer()
    column = Integer()
    kind = String()


class ErrorBody(Schema):
    code = String(required=True, metadata={"description": "Machine-readable: not_found, validation_failed, conflict…"})
    message = String(required=True, metadata={"description": "For people, in the Accept-Language language (zh or en)."})
    details = List(Nested(ErrorDetail), required=True)


class ErrorOut(Schema):
    error = Nested(ErrorBody, required=True)


# ----- paging ---------------------------------------------------------------------------------------


class PageQuery(Schema):
    page = Integer(load_default=1, validate=Range(min=1, max=100_000))
    per_page = Integer(load_default=50, validate=Range(min=1, max=200))


_PAGES: dict[type[Schema], type[Schema]] = {}
_ITEMS: dict[type[Schema], type[Schema]] = {}


def item_of(schema: type[Schema]) -> type[Schema]:
    """A subclass to nest where schema is also a response of its own.

    APIFlask registers response schemas itself while apispec registers nested ones; the same
    class through both paths would be added to the document twice.
    """
    if schema not in _ITEMS:
        _ITEMS[schema] = type(f"{schema.__name__.removesuffix('Out')}Item", (schema,), {})
    return _ITEMS[schema]


def page_of(item: type[Schema]) -> type[Schema]:
    """``{items, total, page, per_page}`` around item (one class per item schema)."""
    if item not in _PAGES:
        name = f"{item.__name__.removesuffix('Out')}Page"
        _PAGES[item] = type(name, (Schema,), {
            "items": List(Nested(item_of(item)), required=True),
            "total": Integer(required=True),
            "page": Integer(required=True),
            "per_page": Integer(required=True),
        })
    return _PAGES[item]


# ----- health and me ----------------------------------------------------------------------------------


class HealthOut(Schema):
    status = String(required=True)
    time = DateTimeText(required=True)


class MeOut(Schema):
    username = String(required=True)
    display_name = String(required=True)
    roles = List(String(), required=True)
    team = String(allow_none=True, required=True)
    region = String(allow_none=True, required=True)
    language = String(allow_none=True, required=True, metadata={"description": "zh or en; null: the browser's language."})
    scopes = List(String(), required=True)


# ----- flows ---------------------------------------------------------------------------------------------


class FlowOut(Schema):
    id = String(required=True)
    name = Nested(Localized, required=True)
    version = Integer(required=True)
    content_hash = String(required=True)
    deployed_at = DateTimeText(required=True)
    deployed_by = String(allow_none=True, required=True)


class FlowDetailOut(FlowOut):
    source = String(required=True)


class FlowVersionOut(Schema):
    version = Integer(required=True)
    content_hash = String(required=True)
    deployed_at = DateTimeText(required=True)
    deployed_by = String(allow_none=True, required=True)
    active = Boolean(required=True)


class FlowSourceIn(Schema):
    source = String(required=True, validate=Length(min=1, max=150_000))
    filename = String(validate=Regexp(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.ya?ml$"),
                      metadata={"description": "Optional; the flow id must equal its stem."})


class DeployedOut(Schema):
    kind = String(required=True)
    id = String(required=True)
    version = Integer(required=True)
    changed = Boolean(required=True)


# ----- tasks --------------------------------------------------------------------------------------------


class TaskOut(Schema):
    id = Integer(required=True)
    instance_id = Integer(required=True)
    step = String(required=True)
    form = String(required=True)
    title = Dict(keys=String(), values=String(), required=True)
    role = String(allow_none=True, required=True)
    assignee = String(allow_none=True, required=True)
    status = String(required=True, validate=OneOf(["open", "completed", "cancelled"]))
    due_at = DateTimeText(allow_none=True, required=True)
    created_at = DateTimeText(required=True)
    completed_at = DateTimeText(allow_none=True, required=True)
    completed_by = String(allow_none=True, required=True)
    escalation_level = Integer(required=True)
    initial = Dict(required=True, metadata={"description": "Values prefilled from the customer and the instance."})
    data = Dict(allow_none=True, required=True, metadata={"description": "The answers, once completed."})
    readonly = List(String(), required=True)
    hidden = List(String(), required=True)


class TaskQuery(PageQuery):
    view = String(load_default="inbox", validate=OneOf(["inbox", "all"]),
                  metadata={"description": "inbox: assigned to me or unclaimed in my roles; all: every task I may see."})
    status = String(load_default="open", validate=OneOf(["open", "completed", "cancelled"]))
    role = Text(64)
    assignee = Text(64)
    instance_id = Id(strict=False)


class CompleteIn(Schema):
    data = Dict(required=True, metadata={"description": "The answers, validated against the task's form."})


class HandOverIn(Schema):
    to = String(required=True, validate=Regexp(USERNAME))
    comment = Text(2000, load_default="")


NOT_BLANK = r"[\s\S]*\S"


class SendBackIn(Schema):
    to_step = Ident(required=True)
    comment = String(required=True, validate=[Length(min=1, max=2000), Regexp(NOT_BLANK)])


class CommentIn(Schema):
    body = String(required=True, validate=[Length(min=1, max=5000), Regexp(NOT_BLANK)])


class CommentOut(Schema):
    id = Integer(required=True)
    at = DateTimeText(required=True)
    author = String(allow_none=True, required=True)
    kind = String(required=True)
    body = String(required=True)


# ----- instances ----------------------------------------------------------------------------------------


class InstanceOut(Schema):
    id = Integer(required=True)
    flow = String(required=True)
    version = Integer(required=True)
    customer_id = Integer(allow_none=True, required=True)
    status = String(required=True, validate=OneOf(["running", "completed", "cancelled"]))
    outcome = String(allow_none=True, required=True)
    started_at = DateTimeText(required=True)
    ended_at = DateTimeText(allow_none=True, required=True)
    started_by = String(allow_none=True, required=True)
    current_steps = List(String(), required=True)


class IncidentOut(Schema):
    id = Integer(required=True)
    instance_id = Integer(allow_none=True, required=True)
    step = String(allow_none=True, required=True)
    outbox_id = Integer(allow_none=True, required=True)
    kind = String(required=True)
    message = String(required=True)
    status = String(required=True)
    resolution = String(allow_none=True, required=True)
    created_at = DateTimeText(required=True)
    resolved_at = DateTimeText(allow_none=True, required=True)
    resolved_by = String(allow_none=True, required=True)


class HistoryOut(Schema):
    at = DateTimeText(required=True)
    event = String(required=True)
    entries = List(Dict(), required=True)


class InstanceDetailOut(InstanceOut):
    variables = Dict(required=True)
    tasks = List(Nested(item_of(TaskOut)), required=True)
    incidents = List(Nested(item_of(IncidentOut)), required=True)
    history = List(Nested(HistoryOut), required=True)


class InstanceQuery(PageQuery):
    flow = Text(64)
    status = String(validate=OneOf(["running", "completed", "cancelled"]))
    customer_id = Id(strict=False)


class StartIn(Schema):
    flow = Ident(required=True)
    customer_id = Id(allow_none=True)
    data = Dict(load_default=dict, metadata={"description": "Initial variables."})


class CancelIn(Schema):
    reason = Text(200, min_len=1, load_default="cancelled")


class EventIn(Schema):
    event = Ident(required=True, metadata={"description": "e.g. customer_replied, order_paid"})
    data = Dict(load_default=dict)


class LinkIn(Schema):
    form = Ident(required=True)
    event = String(required=True, validate=Regexp(r"^[A-Za-z][A-Za-z0-9_]{0,63}$"))
    ttl_hours = StrictInteger(load_default=168, validate=Range(min=1, max=2160))


class LinkOut(Schema):
    id = Integer(required=True)
    instance_id = Integer(required=True)
    form = String(required=True)
    event = String(required=True)
    token = String(required=True)
    url = String(required=True)
    expires_at = DateTimeText(required=True)


# ----- forms ---------------------------------------------------------------------------------------------


class FormOut(Schema):
    id = String(required=True)
    version = Integer(required=True)
    title = Dict(keys=String(), values=String(), required=True)


class OptionOut(Schema):
    value = Raw(required=True, allow_none=True)
    label = Dict(keys=String(), values=String(), required=True)


class FieldOut(Schema):
    name = String(required=True)
    label = Dict(keys=String(), values=String(), required=True)
    widget = String(required=True)
    required = Boolean(required=True)
    help = Dict(keys=String(), values=String(), required=True)
    options = List(Nested(OptionOut), required=True)
    show_if = Dict(allow_none=True, required=True)
    prefill = String(allow_none=True, required=True)


class FormDetailOut(FormOut):
    schema = Dict(required=True, metadata={"description": "The JSON Schema (draft 2020-12) with x- UI hints."})
    # "fields" is marshmallow's own attribute on a schema, so the field has another name inside.
    field_list = List(Nested(FieldOut), required=True, data_key="fields")


class SubmissionIn(Schema):
    data = Dict(required=True)


class SubmissionOut(Schema):
    form = String(required=True)
    data = Dict(required=True)
    customer_id = Integer(allow_none=True, required=True)
    instances = List(Integer(), required=True)


# ----- customers -------------------------------------------------------------------------------------


class RfmOut(Schema):
    r = Integer(allow_none=True, required=True)
    f = Integer(allow_none=True, required=True)
    m = Integer(allow_none=True, required=True)
    cell = String(allow_none=True, required=True, metadata={"description": "R, F and M as one code, e.g. 545."})


class CustomerOut(Schema):
    id = Integer(required=True)
    name = String(required=True)
    phone = String(allow_none=True, required=True)
    email = String(allow_none=True, required=True)
    birthday = String(allow_none=True, required=True, metadata={"format": "date"})
    birthday_calendar = String(required=True)
    region = String(allow_none=True, required=True)
    grade = String(allow_none=True, required=True)
    expected_value = Float(allow_none=True, required=True)
    owner = String(allow_none=True, required=True)
    tags = List(String(), required=True)
    preferred_channel = String(allow_none=True, required=True)
    language = String(required=True)
    consent = Dict(keys=String(), values=Boolean(), required=True)
    status = String(required=True)
    last_purchase_at = DateTimeText(allow_none=True, required=True)
    purchase_count = Integer(required=True)
    purchase_total = Float(required=True)
    attributes = Dict(required=True, metadata={"description": "Custom fields."})
    created_at = DateTimeText(required=True)
    updated_at = DateTimeText(required=True)
    first_purchase_at = DateTimeText(allow_none=True, required=True)
    rfm = Nested(RfmOut, required=True, metadata={"description": "Recency, frequency and monetary scores (1–5) of the last recompute."})
    churn_score = Float(allow_none=True, required=True, metadata={
        "description": "Days since the last purchase ÷ the usual interval between purchases."})
    churn_reason = Dict(keys=String(), values=String(), allow_none=True, required=True,
                        metadata={"description": "The churn score explained, in zh and en."})
    graded_at = DateTimeText(allow_none=True, required=True)
    last_nps = Integer(allow_none=True, required=True)
    last_satisfaction = Integer(allow_none=True, required=True)
    last_survey_at = DateTimeText(allow_none=True, required=True)


ATTRIBUTE_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
RESERVED_ATTRIBUTES = frozenset(PROFILE_FIELDS) | {"id", "created_at", "updated_at", "attributes"}


class CustomerIn(Schema):
    name = Text(100, min_len=1, required=True)
    phone = Text(64, allow_none=True, metadata={"description": "Mainland numbers without +86 are accepted; stored as E.164."})
    email = Text(254, allow_none=True, metadata={"format": "email"})
    birthday = String(allow_none=True, validate=Regexp(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"), metadata={"format": "date"})
    birthday_calendar = String(validate=OneOf(["solar", "lunar"]))
    region = Text(64, allow_none=True)
    grade = String(allow_none=True, validate=OneOf(list(GRADES)))
    expected_value = StrictFloat(allow_none=True, validate=Range(min=0, max=1e15))
    owner = String(allow_none=True, validate=Regexp(USERNAME))
    tags = List(Text(64, min_len=1), validate=Length(max=50))
    preferred_channel = String(allow_none=True, validate=OneOf(list(CHANNELS)))
    language = String(validate=OneOf(["zh", "en"]))
    consent = Dict(keys=String(validate=OneOf(list(CHANNELS))), values=StrictBoolean(),
                   metadata={"x-property-names": {"enum": list(CHANNELS)}})
    status = String(validate=OneOf(["active", "at_risk", "lost"]))
    last_purchase_at = AwareDateTime(allow_none=True, default_timezone=timezone.utc, format="iso")
    first_purchase_at = AwareDateTime(allow_none=True, default_timezone=timezone.utc, format="iso")
    purchase_count = StrictInteger(validate=Range(min=0, max=2_000_000_000))
    purchase_total = StrictFloat(validate=Range(min=0, max=1e15))
    attributes = Dict(keys=String(validate=Regexp(ATTRIBUTE_NAME)), metadata={
        "description": "Custom fields; their names must not be profile field names.",
        "maxProperties": 100,
        "x-property-names": {"pattern": ATTRIBUTE_NAME, "not": {"enum": sorted(RESERVED_ATTRIBUTES)}},
    })

    @validates_schema
    def _attributes(self, data: dict[str, Any], **_kw: Any) -> None:
        names = set(data.get("attributes") or {})
        if len(names) > 100:
            raise ValidationError("at most 100 custom fields", "attributes")
        clash = sorted(names & RESERVED_ATTRIBUTES)
        if clash:
            raise ValidationError(f"attributes may not be named {', '.join(clash)}", "attributes")


class CustomerPatch(CustomerIn):
    name = Text(100, min_len=1)


class CustomerQuery(PageQuery):
    q = Text(100, metadata={"description": "Part of the name, phone or e-mail."})
    grade = String(validate=OneOf(list(GRADES)))
    region = Text(64)
    owner = Text(64)
    status = String(validate=OneOf(["active", "at_risk", "lost"]))


class TimelineOut(Schema):
    id = Integer(required=True)
    at = DateTimeText(required=True)
    kind = String(required=True)
    title = Dict(keys=String(), values=String(), required=True)
    data = Dict(required=True)
    instance_id = Integer(allow_none=True, required=True)


class DeletedOut(Schema):
    id = Integer(required=True)
    cancelled_instances = List(Integer(), required=True)
    skipped_messages = Integer(required=True)


# ----- users, tokens, audit, webhooks --------------------------------------------------------------


class UserOut(Schema):
    username = String(required=True)
    display_name = String(required=True)
    email = String(allow_none=True, required=True)
    roles = List(String(), required=True)
    team = String(allow_none=True, required=True)
    region = String(allow_none=True, required=True)
    language = String(allow_none=True, required=True, metadata={"description": "zh or en; null: the browser's language."})
    notify = String(required=True, metadata={"description": "How task reminders reach the user: email, im, both or none."})
    im_id = String(allow_none=True, required=True, metadata={"description": "The user's IM id, for @mentions."})
    active = Boolean(required=True)
    created_at = DateTimeText(required=True)
    has_password = Boolean(required=True)


class UserPatch(Schema):
    display_name = Text(100, min_len=1)
    email = Text(254, allow_none=True, metadata={"format": "email"})
    roles = List(String(validate=Regexp(ROLE)), validate=Length(max=20))
    team = Text(64, min_len=1, allow_none=True)
    region = Text(64, min_len=1, allow_none=True)
    language = String(allow_none=True, validate=OneOf(["zh", "en"]))
    notify = String(validate=OneOf(["email", "im", "both", "none"]))
    im_id = Text(128, min_len=1, allow_none=True)
    active = StrictBoolean()
    password = Text(256, min_len=10, metadata={"writeOnly": True})


class UserIn(UserPatch):
    username = String(required=True, validate=Regexp(USERNAME))


class TokenOut(Schema):
    id = Integer(required=True)
    user = String(required=True)
    name = String(required=True)
    prefix = String(required=True)
    scopes = List(String(), required=True)
    created_at = DateTimeText(required=True)
    created_by = String(allow_none=True, required=True)
    expires_at = DateTimeText(allow_none=True, required=True)
    last_used_at = DateTimeText(allow_none=True, required=True)
    revoked_at = DateTimeText(allow_none=True, required=True)


class TokenCreatedOut(TokenOut):
    token = String(required=True, metadata={"description": "Shown only in this response; store it now."})


class TokenIn(Schema):
    user = String(required=True, validate=Regexp(USERNAME))
    scopes = List(String(validate=OneOf(list(SCOPES))), required=True, validate=Length(min=1, max=3))
    name = Text(100, load_default="")
    expires_in_days = StrictInteger(validate=Range(min=1, max=3650), allow_none=True)


class TokenQuery(Schema):
    user = Text(64)
    include_revoked = Boolean(load_default=False)


class AuditOut(Schema):
    id = Integer(required=True)
    at = DateTimeText(required=True)
    actor = String(allow_none=True, required=True)
    action = String(required=True)
    target_type = String(allow_none=True, required=True)
    target_id = String(allow_none=True, required=True)
    data = Dict(required=True)
    ip = String(allow_none=True, required=True)


class AuditQuery(PageQuery):
    actor = Text(64)
    action = Text(64, metadata={"description": "Exact, or a prefix ending in '.' (task.)"})
    target_type = Text(32)
    target_id = Text(64)
    since = AwareDateTime(default_timezone=timezone.utc, format="iso")
    until = AwareDateTime(default_timezone=timezone.utc, format="iso")


class IncidentQuery(PageQuery):
    status = String(load_default="open", validate=OneOf(["open", "resolved", "all"]))


class WebhookOut(Schema):
    name = String(required=True)
    flows = List(String(), required=True)
    events = List(String(), required=True)
    active = Boolean(required=True)
    created_at = DateTimeText(required=True)
    created_by = String(allow_none=True, required=True)


class WebhookCreatedOut(WebhookOut):
    secret = String(required=True, metadata={"description": "The HMAC signing secret; shown only in this response."})


class WebhookIn(Schema):
    name = String(required=True, validate=Regexp(HOOK_NAME))
    flows = List(Ident(), validate=Length(max=100), load_default=list)
    events = List(Ident(), validate=Length(max=100), load_default=list)


class HookResultOut(Schema):
    action = String(required=True, validate=OneOf(["start", "event"]))
    instance_id = Integer(required=True)
    instances = List(Integer(), required=True)


#: Request examples shown in the document (and sent by the examples phase of API fuzzers).
EXAMPLES: dict[type[Schema], dict[str, Any]] = {
    StartIn: {"flow": "complaint", "customer_id": 1, "data": {"complaint_intake": {"subject": "快递破损", "description": "外包装破损"}}},
    CancelIn: {"reason": "客户撤回"},
    EventIn: {"event": "customer_replied", "data": {"text": "好的，谢谢"}},
    LinkIn: {"form": "satisfaction_survey", "event": "satisfaction_survey", "ttl_hours": 168},
    CompleteIn: {"data": {"reached": True, "call_notes": "客户想了解培训安排", "preferred_channel": "sms"}},
    HandOverIn: {"to": "li", "comment": "休假，请代为跟进"},
    SendBackIn: {"to_step": "triage", "comment": "分类有误，请重新分诊"},
    CommentIn: {"body": "已电话联系客户"},
    SubmissionIn: {"data": {"subject": "快递破损", "description": "收到的商品外包装破损", "channel": "phone",
                            "contact_phone": "13800138000"}},
    CustomerIn: {"name": "张伟", "phone": "138 0013 8000", "email": "zhangwei@example.com", "region": "上海",
                 "expected_value": 150000, "preferred_channel": "email", "consent": {"email": True, "sms": True},
                 "tags": ["vip"], "attributes": {"industry": "零售"}},
    CustomerPatch: {"grade": "A", "tags": ["vip", "renewal"]},
    UserIn: {"username": "sun", "display_name": "客服 孙丽", "roles": ["service_agent"], "team": "service",
             "language": "zh", "password": "a-long-password"},
    UserPatch: {"roles": ["service_agent", "service_lead"], "region": "广州"},
    TokenIn: {"user": "li", "scopes": ["read", "write"], "name": "CRM 同步", "expires_in_days": 365},
    WebhookIn: {"name": "shop", "flows": ["winback"], "events": ["order_paid"]},
}

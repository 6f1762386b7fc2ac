"""Forms: loading and checking form files, validating submissions, form posts, prefill and views."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from engine import forms
from engine.errors import FieldError, FormInvalid, Problem, SubmissionInvalid
from engine.forms import Form

FORMS_DIR = Path(__file__).resolve().parents[2] / "forms"
FORM_FILES = sorted(FORMS_DIR.glob("*.schema.json"))

# Flows reference these ids and field names, so they are a contract.
BUILTIN_FIELDS: dict[str, list[str]] = {
    "new_customer": [
        "name", "phone", "email", "birthday", "birthday_calendar", "region", "expected_value",
        "preferred_channel", "language", "consent_marketing",
    ],
    "welcome_call": ["reached", "call_notes", "needs", "preferred_channel"],
    "satisfaction_survey": ["score", "nps", "comment"],
    "follow_up": ["channel", "outcome", "satisfaction", "problem_description", "next_action"],
    "complaint_intake": ["subject", "description", "channel", "contact_phone", "contact_email"],
    "complaint_triage": ["severity", "category", "notes"],
    "complaint_lead_review": ["decision", "action_plan", "notes"],
    "complaint_resolution": ["resolution", "compensation", "amount"],
    "complaint_confirmation": ["satisfied", "comment"],
    "birthday_call": ["reached", "notes"],
    "winback_call": ["reason", "reason_detail", "recovered", "notes"],
    "nps_survey": ["score", "comment"],
}
BUILTIN_REQUIRED: dict[str, set[str]] = {
    "new_customer": {"name"},
    "welcome_call": {"reached", "call_notes"},
    "satisfaction_survey": {"score"},
    "follow_up": {"channel", "outcome"},
    "complaint_intake": {"subject", "description"},
    "complaint_triage": {"severity", "category"},
    "complaint_lead_review": {"decision", "action_plan"},
    "complaint_resolution": {"resolution"},
    "complaint_confirmation": {"satisfied"},
    "birthday_call": {"reached"},
    "winback_call": {"reason", "recovered"},
    "nps_survey": {"score"},
}


def builtin(form_id: str) -> Form:
    """Load one built-in form."""
    return forms.load_form(FORMS_DIR / f"{form_id}.schema.json")


def errors_by_field(errors: list[FieldError]) -> dict[str, list[FieldError]]:
    """Group errors by field name."""
    grouped: dict[str, list[FieldError]] = {}
    for error in errors:
        grouped.setdefault(error.field, []).append(error)
    return grouped


def make_form(properties: dict[str, Any], **root: Any) -> Form:
    """A small valid form around the given properties."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "x-title": {"zh": "测试", "en": "Test"},
        "properties": properties,
        **root,
    }
    return forms.load_form_text(json.dumps(schema, ensure_ascii=False), "test.schema.json", "test")


def label(zh: str, en: str) -> dict[str, str]:
    return {"zh": zh, "en": en}


# --- the built-in form files -------------------------------------------------------------------


def test_every_builtin_form_file_exists() -> None:
    assert sorted(path.name.removesuffix(".schema.json") for path in FORM_FILES) == sorted(BUILTIN_FIELDS)


@pytest.mark.parametrize("path", FORM_FILES, ids=lambda p: p.name)
def test_every_form_file_loads(path: Path) -> None:
    form = forms.load_form(path)
    assert form.id == path.name.removesuffix(".schema.json")
    assert form.source == str(path)
    assert len(form.content_hash) == 64
    assert form.title["zh"] and form.title["en"]
    assert form.schema["additionalProperties"] is False
    assert [field.name for field in form.fields] == form.schema["x-order"]
    for field in form.fields:
        assert field.label["zh"] and field.label["en"], field.name
        assert field.widget in forms.WIDGETS
        # Every option has a human label in both languages, never the raw value in Chinese.
        for value, text in field.options:
            assert text["zh"] and text["en"]
            if isinstance(value, str) and value.isascii():
                assert text["zh"] != value, (field.name, value)


@pytest.mark.parametrize("form_id", sorted(BUILTIN_FIELDS))
def test_builtin_forms_have_the_fields_flows_use(form_id: str) -> None:
    form = builtin(form_id)
    assert [field.name for field in form.fields] == BUILTIN_FIELDS[form_id]
    assert {field.name for field in form.fields if field.required} == BUILTIN_REQUIRED[form_id]


def test_form_field_lookup() -> None:
    form = builtin("follow_up")
    assert form.field("outcome").widget == "radio"
    assert [value for value, _ in form.field("outcome").options] == ["satisfied", "has_problem", "no_answer"]
    assert form.field("problem_description").show_if == {"field": "outcome", "equals": "has_problem"}
    with pytest.raises(KeyError, match="nope"):
        form.field("nope")


def test_boolean_radio_options_carry_their_labels() -> None:
    field = builtin("complaint_confirmation").field("satisfied")
    assert field.widget == "radio"
    assert field.options == ((True, {"zh": "满意", "en": "Satisfied"}), (False, {"zh": "不满意", "en": "Not satisfied"}))


def test_content_hash_follows_the_text() -> None:
    text = (FORMS_DIR / "birthday_call.schema.json").read_text(encoding="utf-8")
    first = forms.load_form_text(text, "a", "birthday_call")
    again = forms.load_form_text(text.encode("utf-8"), "b", "birthday_call")
    changed = forms.load_form_text(text.replace("备注", "通话备注"), "c", "birthday_call")
    assert first.content_hash == again.content_hash != changed.content_hash


# --- valid submissions ---------------------------------------------------------------------------

VALID: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "new_customer",
        {
            "name": "王小明", "phone": "138 0013 8000", "email": "Wang.XM@Example.COM", "birthday": "1990-08-15",
            "birthday_calendar": "lunar", "region": "华东", "expected_value": 120000, "preferred_channel": "wecom",
            "language": "zh", "consent_marketing": True,
        },
        {"phone": "+8613800138000", "email": "Wang.XM@example.com", "birthday_calendar": "lunar"},
    ),
    ("new_customer", {"name": "Li Lei", "email": "li@example.cn"}, {"birthday_calendar": "solar"}),
    ("new_customer", {"name": "陈女士", "phone": "+852 2123 4567"}, {"phone": "+85221234567"}),
    (
        "welcome_call",
        {"reached": True, "call_notes": "客户希望下周安排产品培训。", "needs": ["training", "pricing"], "preferred_channel": "phone"},
        {"needs": ["training", "pricing"]},
    ),
    ("welcome_call", {"reached": False, "call_notes": "两次未接通，已发短信。"}, {"reached": False}),
    ("satisfaction_survey", {"score": 5, "nps": 10, "comment": "服务很周到"}, {"score": 5, "nps": 10}),
    ("satisfaction_survey", {"score": 1}, {"score": 1}),
    ("follow_up", {"channel": "phone", "outcome": "satisfied", "satisfaction": 4}, {"satisfaction": 4}),
    ("follow_up", {"channel": "visit", "outcome": "no_answer", "next_action": "下周再联系"}, {"outcome": "no_answer"}),
    (
        "follow_up",
        {"channel": "wecom", "outcome": "has_problem", "satisfaction": 2, "problem_description": "发票迟迟未开"},
        {"problem_description": "发票迟迟未开"},
    ),
    (
        "complaint_intake",
        {
            "subject": "收到的商品有破损", "description": "3 月 2 日收到的订单 CF-1024，外包装破损，杯子碎了两个。",
            "channel": "web", "contact_phone": "13912345678", "contact_email": "kehu@example.com",
        },
        {"contact_phone": "+8613912345678"},
    ),
    ("complaint_triage", {"severity": "high", "category": "delivery", "notes": "客户情绪激动"}, {"severity": "high"}),
    ("complaint_lead_review", {"decision": "handle", "action_plan": "今天内补发并致电道歉"}, {"decision": "handle"}),
    ("complaint_resolution", {"resolution": "已补发新品", "compensation": "replacement"}, {"compensation": "replacement"}),
    ("complaint_resolution", {"resolution": "退款 ¥88.5", "compensation": "refund", "amount": 88.5}, {"amount": 88.5}),
    ("complaint_resolution", {"resolution": "已道歉"}, {"compensation": "none"}),
    ("complaint_confirmation", {"satisfied": False, "comment": "还是没有收到"}, {"satisfied": False}),
    ("birthday_call", {"reached": True, "notes": "客户很开心"}, {"reached": True}),
    ("winback_call", {"reason": "other", "reason_detail": "公司搬迁到外地", "recovered": False}, {"reason_detail": "公司搬迁到外地"}),
    ("winback_call", {"reason": "price", "recovered": True, "notes": "给了 9 折"}, {"recovered": True}),
]


@pytest.mark.parametrize(("form_id", "data", "expected"), VALID, ids=[f"{v[0]}-{i}" for i, v in enumerate(VALID)])
def test_builtin_forms_accept_realistic_submissions(form_id: str, data: dict[str, Any], expected: dict[str, Any]) -> None:
    form = builtin(form_id)
    assert forms.validate_submission(form, data) == []
    cleaned = forms.check_submission(form, data)
    for key, value in expected.items():
        assert cleaned[key] == value
    assert set(cleaned) <= set(BUILTIN_FIELDS[form_id])


def test_check_submission_copies_the_data() -> None:
    data = {"reached": True, "call_notes": "ok", "needs": ["support"]}
    cleaned = forms.check_submission(builtin("welcome_call"), data)
    cleaned["needs"].append("other")
    assert data["needs"] == ["support"]


# --- invalid submissions -------------------------------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str, str, str, str]] = [
    ("new_customer", {"phone": "13800138000"}, "name", "required", "「姓名」为必填项", "“Name” is required"),
    ("new_customer", {"name": "张三", "phone": "13800138000", "expected_value": -5}, "expected_value", "minimum",
     "「预计年价值（元）」不能小于 0", "“Expected annual value (CNY)” must be at least 0"),
    ("new_customer", {"name": "张" * 101, "phone": "13800138000"}, "name", "maxLength",
     "「姓名」不能超过 100 个字符", "“Name” must be at most 100 characters long"),
    ("new_customer", {"name": "", "phone": "13800138000"}, "name", "minLength", "「姓名」不能为空", "“Name” must not be empty"),
    ("new_customer", {"name": "张三", "phone": "13800138000", "language": "fr"}, "language", "enum",
     "「沟通语言」必须是以下选项之一：「中文」、「英文」", "“Language” must be one of: “Chinese”, “English”"),
    ("new_customer", {"name": "张三", "phone": "13800138000", "consent_marketing": "yes"}, "consent_marketing", "type",
     "「同意接收营销信息」必须是「是」或「否」", "“Agrees to receive marketing messages” must be yes or no"),
    ("welcome_call", {"reached": True, "call_notes": "x" * 2001}, "call_notes", "maxLength",
     "「通话记录」不能超过 2000 个字符", "“Call notes” must be at most 2000 characters long"),
    ("welcome_call", {"reached": True, "call_notes": "ok", "needs": ["pricing", "pricing"]}, "needs", "uniqueItems",
     "「客户需求」中有重复的项", "“Needs” contains duplicate items"),
    ("welcome_call", {"reached": True, "call_notes": "ok", "needs": ["lunch"]}, "needs", "enum",
     "「客户需求」必须是以下选项之一：「产品信息」、「价格」、「使用培训」、「售后支持」、「其他」",
     "“Needs” must be one of: “Product information”, “Pricing”, “Training”, “Support”, “Other”"),
    ("satisfaction_survey", {"score": 7}, "score", "maximum", "「满意度」必须在 1 到 5 之间", "“Satisfaction” must be between 1 and 5"),
    ("satisfaction_survey", {"score": 0}, "score", "minimum", "「满意度」必须在 1 到 5 之间", "“Satisfaction” must be between 1 and 5"),
    ("satisfaction_survey", {"score": 4.5}, "score", "type", "「满意度」必须是整数", "“Satisfaction” must be a whole number"),
    ("satisfaction_survey", {"score": 3, "nps": 11}, "nps", "maximum",
     "「推荐意愿」必须在 0 到 10 之间", "“Likelihood to recommend” must be between 0 and 10"),
    ("follow_up", {"channel": "fax", "outcome": "satisfied", "satisfaction": 3}, "channel", "enum",
     "「回访方式」必须是以下选项之一：「电话」、「上门拜访」、「企业微信」、「电子邮件」",
     "“Channel” must be one of: “Phone call”, “Visit”, “WeCom”, “E-mail”"),
    ("complaint_intake", {"subject": "坏了"}, "description", "required", "「详细描述」为必填项", "“Description” is required"),
    ("complaint_triage", {"severity": "urgent", "category": "product"}, "severity", "enum",
     "「严重程度」必须是以下选项之一：「低」、「中」、「高」", "“Severity” must be one of: “Low”, “Medium”, “High”"),
    ("complaint_lead_review", {"decision": "handle"}, "action_plan", "required", "「处理方案」为必填项", "“Action plan” is required"),
    ("complaint_resolution", {"resolution": "退款", "compensation": "refund", "amount": 0}, "amount", "exclusiveMinimum",
     "「退款金额（元）」必须大于 0", "“Refund amount (CNY)” must be greater than 0"),
    ("complaint_confirmation", {"satisfied": "yes"}, "satisfied", "type",
     "「您对处理结果满意吗？」必须是「是」或「否」", "“Are you satisfied with the resolution?” must be yes or no"),
    ("birthday_call", {"notes": "没人接"}, "reached", "required", "「是否接通」为必填项", "“Reached” is required"),
    ("winback_call", {"reason": "price"}, "recovered", "required", "「是否挽回」为必填项", "“Won back” is required"),
]


@pytest.mark.parametrize(
    ("form_id", "data", "field", "code", "zh", "en"), INVALID, ids=[f"{v[0]}-{v[2]}-{v[3]}" for v in INVALID]
)
def test_builtin_forms_reject_invalid_submissions(
    form_id: str, data: dict[str, Any], field: str, code: str, zh: str, en: str
) -> None:
    form = builtin(form_id)
    for locale, message in (("zh", zh), ("en", en)):
        errors = forms.validate_submission(form, data, locale=locale)
        assert [(e.field, e.code, e.message) for e in errors] == [(field, code, message)], locale
        assert errors[0].path.startswith(f"$.{field}")
    with pytest.raises(SubmissionInvalid) as caught:
        forms.check_submission(form, data, locale="en-US")
    assert [e.message for e in caught.value.errors] == [en]


def test_required_errors_point_at_the_missing_field() -> None:
    errors = forms.validate_submission(builtin("complaint_triage"), {}, locale="zh-CN")
    assert [(e.path, e.field, e.code, e.message) for e in errors] == [
        ("$.severity", "severity", "required", "「严重程度」为必填项"),
        ("$.category", "category", "required", "「投诉类别」为必填项"),
    ]


def test_new_customer_needs_a_phone_or_an_email() -> None:
    form = builtin("new_customer")
    zh = forms.validate_submission(form, {"name": "张三"})
    en = forms.validate_submission(form, {"name": "张三"}, locale="en")
    assert [(e.path, e.field, e.code, e.message) for e in zh] == [("$", "", "anyOf", "请至少填写以下一项：「手机号」、「电子邮箱」")]
    assert [e.message for e in en] == ["Fill in at least one of: “Phone”, “E-mail”"]


def test_every_error_is_reported_at_once() -> None:
    data = {"name": "", "phone": "12345", "email": "a@b", "birthday": "2026-02-30", "expected_value": -1,
            "preferred_channel": "fax", "language": "fr"}
    errors = forms.validate_submission(builtin("new_customer"), data)
    assert [e.field for e in errors] == ["name", "phone", "email", "birthday", "expected_value", "preferred_channel", "language"]


def test_unknown_locales_fall_back_to_english_and_zh_variants_to_chinese() -> None:
    form = builtin("birthday_call")
    assert forms.validate_submission(form, {}, locale="zh-Hans-CN")[0].message == "「是否接通」为必填项"
    assert forms.validate_submission(form, {}, locale="fr")[0].message == "“Reached” is required"


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["a@b", "not-an-email", "a@@example.com", "张三@", "a@example.test", "x" * 400 + "@example.com"])
def test_bad_emails_are_rejected(email: str) -> None:
    errors = forms.validate_submission(builtin("new_customer"), {"name": "张三", "email": email}, locale="en")
    assert ("email", "format", "“E-mail” is not a valid e-mail address") in [(e.field, e.code, e.message) for e in errors]


@pytest.mark.parametrize(
    ("email", "normalised"),
    [("Zhang.San@EXAMPLE.com", "Zhang.San@example.com"), ("用户@例子.中国", "用户@例子.中国"), (" li@example.cn", None)],
)
def test_good_emails_are_normalised(email: str, normalised: str | None) -> None:
    data = {"name": "张三", "email": email}
    if normalised is None:  # leading spaces are not part of an address
        assert forms.validate_submission(builtin("new_customer"), data)
        return
    assert forms.check_submission(builtin("new_customer"), data)["email"] == normalised


@pytest.mark.parametrize(
    "phone",
    ["12345", "1380013800", "phone", "1-800-FLOWERS", "00852 2123 4567", "852 2123 4567 ext", "+1 555", "+86 138 0013 80001"],
)
def test_bad_phones_are_rejected(phone: str) -> None:
    errors = forms.validate_submission(builtin("new_customer"), {"name": "张三", "phone": phone}, locale="zh")
    assert ("phone", "format", "「手机号」不是有效的电话号码（中国大陆以外的号码请以 + 和国家或地区代码开头）") in [
        (e.field, e.code, e.message) for e in errors
    ]


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("13800138000", "+8613800138000"),
        ("138-0013-8000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("＋86 138 0013 8000", "+8613800138000"),
        ("010-12345678", "+861012345678"),
        ("+1 415 555 2671", "+14155552671"),
        ("+852 2123 4567", "+85221234567"),
    ],
)
def test_good_phones_are_stored_as_e164(phone: str, e164: str) -> None:
    assert forms.check_submission(builtin("new_customer"), {"name": "张三", "phone": phone})["phone"] == e164


@pytest.mark.parametrize("day", ["2026-02-30", "2026-13-01", "2026-2-3", "20260203", "2026/02/03", "2026-02-03T10:00", "明天"])
def test_bad_dates_are_rejected(day: str) -> None:
    errors = forms.validate_submission(builtin("new_customer"), {"name": "张三", "phone": "13800138000", "birthday": day}, locale="en")
    assert [(e.field, e.code, e.message) for e in errors] == [("birthday", "format", "“Birthday” is not a valid date (use YYYY-MM-DD)")]


def test_good_dates_pass() -> None:
    form = builtin("new_customer")
    for day in ("2024-02-29", "1990-08-15"):
        assert forms.validate_submission(form, {"name": "张三", "phone": "13800138000", "birthday": day}) == []


def test_date_time_format() -> None:
    form = make_form({"visit_at": {"type": "string", "format": "date-time", "x-label": label("拜访时间", "Visit time")}})
    assert form.field("visit_at").widget == "datetime"
    for good in ("2026-03-01T14:30", "2026-03-01T14:30:05", "2026-03-01T14:30:05.123+08:00", "2026-03-01t06:30:00Z"):
        assert forms.validate_submission(form, {"visit_at": good}) == [], good
    for bad in ("2026-03-01", "2026-03-01T25:00", "2026-02-30T10:00", "2026-03-01T14:30+8", "下午三点"):
        errors = forms.validate_submission(form, {"visit_at": bad}, locale="zh")
        assert [e.message for e in errors] == ["「拜访时间」不是有效的日期时间（格式为 YYYY-MM-DDTHH:MM）"], bad


# --- conditional requirements --------------------------------------------------------------------


def test_follow_up_problem_description_is_required_and_shown_only_for_problems() -> None:
    form = builtin("follow_up")
    errors = forms.validate_submission(form, {"channel": "phone", "outcome": "has_problem", "satisfaction": 2}, locale="en")
    assert [(e.field, e.code, e.message) for e in errors] == [
        ("problem_description", "required", "“Problem description” is required")
    ]
    shown = [f.name for f in forms.visible_fields(form, {"outcome": "has_problem"})]
    assert "problem_description" in shown
    assert "problem_description" not in [f.name for f in forms.visible_fields(form, {"outcome": "satisfied"})]
    assert "problem_description" not in [f.name for f in forms.visible_fields(form, {})]


def test_follow_up_satisfaction_is_required_unless_no_answer() -> None:
    form = builtin("follow_up")
    errors = forms.validate_submission(form, {"channel": "phone", "outcome": "satisfied"})
    assert [(e.field, e.code, e.message) for e in errors] == [("satisfaction", "required", "「满意度」为必填项")]
    assert forms.validate_submission(form, {"channel": "phone", "outcome": "no_answer"}) == []


def test_values_of_fields_that_are_not_shown_are_dropped() -> None:
    form = builtin("follow_up")
    data = {"channel": "phone", "outcome": "satisfied", "satisfaction": 5, "problem_description": "x" * 5000}
    # Too long, but not shown for this outcome: it is neither validated nor kept.
    assert "problem_description" not in forms.check_submission(form, data)


def test_winback_other_reason_needs_details() -> None:
    form = builtin("winback_call")
    errors = forms.validate_submission(form, {"reason": "other", "recovered": False}, locale="en")
    assert [(e.field, e.code, e.message) for e in errors] == [("reason_detail", "required", "“Details” is required")]
    cleaned = forms.check_submission(form, {"reason": "price", "reason_detail": "ignored", "recovered": True})
    assert cleaned == {"reason": "price", "recovered": True}


def test_resolution_refund_needs_an_amount() -> None:
    form = builtin("complaint_resolution")
    errors = forms.validate_submission(form, {"resolution": "全额退款", "compensation": "refund"})
    assert [(e.field, e.code, e.message) for e in errors] == [("amount", "required", "「退款金额（元）」为必填项")]
    assert forms.validate_submission(form, {"resolution": "换货", "compensation": "replacement"}) == []
    cleaned = forms.check_submission(form, {"resolution": "送券", "compensation": "coupon", "amount": -3})
    assert cleaned == {"resolution": "送券", "compensation": "coupon"}


def test_dependent_required_message() -> None:
    form = make_form(
        {
            "invoice": {"type": "boolean", "x-label": label("需要发票", "Invoice")},
            "tax_id": {"type": "string", "x-label": label("税号", "Tax ID")},
        },
        dependentRequired={"invoice": ["tax_id"]},
    )
    zh = forms.validate_submission(form, {"invoice": True})
    en = forms.validate_submission(form, {"invoice": True}, locale="en")
    assert [(e.path, e.field, e.code, e.message) for e in zh] == [
        ("$.tax_id", "tax_id", "dependentRequired", "填写了「需要发票」时，「税号」为必填项")
    ]
    assert en[0].message == "“Tax ID” is required when “Invoice” is filled in"


def test_items_const_and_pattern_messages() -> None:
    form = make_form(
        {
            "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "enum": ["a", "b", "c"]},
                     "x-label": label("标签", "Tags")},
            "agree": {"type": "boolean", "const": True, "x-label": label("同意条款", "Terms")},
            "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{4}$", "x-label": label("编号", "Code")},
        }
    )
    data = {"tags": [], "agree": False, "code": "ab12"}
    assert [(e.field, e.code, e.message) for e in forms.validate_submission(form, data)] == [
        ("tags", "minItems", "「标签」至少需要 1 项"),
        ("agree", "const", "「同意条款」必须为 是"),
        ("code", "pattern", "「编号」的格式不正确"),
    ]
    en = forms.validate_submission(form, {"tags": ["a", "b", "c"]}, locale="en")
    assert [e.message for e in en] == ["“Tags” can have at most 2 items"]


def test_unlisted_keywords_get_the_generic_message() -> None:
    form = make_form({"n": {"type": "integer", "not": {"const": 13}, "x-label": label("数量", "Count")}})
    errors = forms.validate_submission(form, {"n": 13}, locale="en")
    assert [(e.field, e.code, e.message) for e in errors] == [("n", "not", "“Count” is not valid")]


# --- smuggled fields -----------------------------------------------------------------------------


@pytest.mark.parametrize("smuggled", ["__proto__", "csrf_token", "constructor", "instance_id", "状态"])
def test_additional_properties_name_the_smuggled_field(smuggled: str) -> None:
    form = builtin("birthday_call")
    errors = forms.validate_submission(form, {"reached": True, smuggled: {"admin": True}}, locale="zh")
    assert [(e.field, e.code, e.message) for e in errors] == [("", "additionalProperties", f"表单中没有「{smuggled}」这一项")]
    en = forms.validate_submission(form, {"reached": True, smuggled: 1}, locale="en")
    assert en[0].message == f"The form has no field “{smuggled}”"
    assert smuggled in en[0].path
    with pytest.raises(SubmissionInvalid):
        forms.check_submission(form, {"reached": True, smuggled: 1})


def test_every_smuggled_field_gets_its_own_error() -> None:
    errors = forms.validate_submission(builtin("birthday_call"), {"reached": True, "a": 1, "b": 2}, locale="en")
    assert sorted(e.message for e in errors) == ["The form has no field “a”", "The form has no field “b”"]


def test_a_huge_smuggled_name_is_shortened_in_the_message() -> None:
    errors = forms.validate_submission(builtin("birthday_call"), {"reached": True, "k" * 10_000: 1})
    assert len(errors) == 1 and len(errors[0].message) < 80


# --- hostile data --------------------------------------------------------------------------------


@pytest.mark.parametrize("form_id", sorted(BUILTIN_FIELDS))
def test_megabyte_strings_are_rejected_quickly_without_crashing(form_id: str) -> None:
    form = builtin(form_id)
    huge = "长" * 1_000_000
    started = time.process_time()
    errors = forms.validate_submission(form, {name: huge for name in BUILTIN_FIELDS[form_id]})
    assert time.process_time() - started < 2.0
    assert errors and all(isinstance(e, FieldError) for e in errors)
    # Some field fails; none is reported with the whole megabyte echoed back.
    assert all(len(e.message) < 200 for e in errors)


def test_deeply_nested_data_is_one_error_not_a_crash() -> None:
    nested: Any = "x"
    for _ in range(100_000):
        nested = [nested]
    form = builtin("welcome_call")
    for value in (nested, {"a": nested}):
        errors = forms.validate_submission(form, {"reached": True, "call_notes": "ok", "needs": value})
        assert [(e.path, e.field, e.code) for e in errors] == [("$", "", "too_deep")]
    with pytest.raises(SubmissionInvalid):
        forms.check_submission(form, {"reached": True, "call_notes": "ok", "needs": nested})


def test_too_many_values_is_one_error() -> None:
    errors = forms.validate_submission(builtin("welcome_call"), {"reached": True, "call_notes": "ok", "needs": ["other"] * 20_000})
    assert [(e.field, e.code) for e in errors] == [("", "too_large")]


@pytest.mark.parametrize("data", [None, [], ["reached"], "reached=true", 42, True])
def test_data_that_is_not_an_object_is_one_root_error(data: Any) -> None:
    errors = forms.validate_submission(builtin("birthday_call"), data, locale="en")
    assert [(e.path, e.field, e.code) for e in errors] == [("$", "", "type")]
    assert errors[0].message == "The submission must be an object of field names and values"


@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_not_numbers(number: float) -> None:
    form = builtin("complaint_resolution")
    errors = forms.validate_submission(form, {"resolution": "退款", "compensation": "refund", "amount": number})
    assert [(e.field, e.code, e.message) for e in errors] == [("amount", "type", "「退款金额（元）」必须是数字")]


def test_booleans_are_not_integers() -> None:
    errors = forms.validate_submission(builtin("satisfaction_survey"), {"score": True})
    assert [(e.field, e.code) for e in errors] == [("score", "type")]


def test_a_validator_crash_becomes_a_field_error(monkeypatch: pytest.MonkeyPatch) -> None:
    form = builtin("birthday_call")

    def explode(self: Any, instance: Any, _schema: Any = None) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    # A plainly valid submission of a flat form never reaches the validator: let this one reach it.
    monkeypatch.setattr(forms, "_plain_check_for", lambda schema: None)
    monkeypatch.setattr(forms._Validator, "iter_errors", explode)
    assert [(e.field, e.code) for e in forms.validate_submission(form, {"reached": True})] == [("", "too_deep")]

    def broken(self: Any, instance: Any, _schema: Any = None) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(forms._Validator, "iter_errors", broken)
    errors = forms.validate_submission(form, {"reached": True}, locale="en")
    assert [(e.field, e.code) for e in errors] == [("", "error")]
    assert "boom" not in errors[0].message
    with pytest.raises(SubmissionInvalid):
        forms.check_submission(form, {"reached": True})


def test_recursive_ref_with_deep_data_does_not_crash() -> None:
    form = make_form(
        {"tree": {"$ref": "#/$defs/node", "x-label": label("树", "Tree")}},
        **{"$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
    )
    shallow: Any = []
    for _ in range(10):
        shallow = [shallow]
    assert forms.validate_submission(form, {"tree": shallow}) == []
    deep: Any = []
    for _ in range(5_000):
        deep = [deep]
    assert [e.code for e in forms.validate_submission(form, {"tree": deep})] == ["too_deep"]


def test_a_safe_pattern_on_adversarial_input_is_fast() -> None:
    form = make_form({"code": {"type": "string", "pattern": "^[a-z]+[0-9]*$", "x-label": label("编号", "Code")}})
    started = time.process_time()
    errors = forms.validate_submission(form, {"code": "a" * 30 + "!"})
    assert time.process_time() - started < 0.5
    assert [e.code for e in errors] == ["pattern"]


# --- HTML form posts -----------------------------------------------------------------------------


def test_coerce_form_post_casts_per_schema() -> None:
    post = {
        "csrf_token": ["abc"],
        "name": ["王小明"],
        "phone": ["13800138000"],
        "email": [""],
        "expected_value": ["12000.50"],
        "preferred_channel": ["sms"],
        "consent_marketing": ["on"],
        "birthday_calendar": ["lunar"],
    }
    data = forms.coerce_form_post(builtin("new_customer"), post)
    assert data == {
        "name": "王小明", "phone": "13800138000", "email": None, "expected_value": 12000.5,
        "preferred_channel": "sms", "consent_marketing": True, "birthday_calendar": "lunar",
    }
    cleaned = forms.check_submission(builtin("new_customer"), data)
    assert "email" not in cleaned and cleaned["phone"] == "+8613800138000"


def test_coerce_form_post_integers_booleans_and_checkboxes() -> None:
    survey = forms.coerce_form_post(builtin("satisfaction_survey"), {"score": ["5"], "nps": [" 9 "], "comment": [""]})
    assert survey == {"score": 5, "nps": 9, "comment": None}
    assert forms.check_submission(builtin("satisfaction_survey"), survey) == {"score": 5, "nps": 9}
    call = forms.coerce_form_post(builtin("welcome_call"), {"reached": ["false"], "call_notes": ["ok"], "needs": ["pricing", "support"]})
    assert call == {"reached": False, "call_notes": "ok", "needs": ["pricing", "support"]}
    for text, value in (("true", True), ("1", True), ("on", True), ("false", False), ("0", False)):
        assert forms.coerce_form_post(builtin("birthday_call"), {"reached": [text]})["reached"] is value


def test_coerce_form_post_fills_in_what_browsers_leave_out() -> None:
    data = forms.coerce_form_post(builtin("new_customer"), {"name": ["张三"], "phone": ["13800138000"]})
    assert data["consent_marketing"] is False  # an unchecked box sends nothing
    assert "birthday" not in data
    call = forms.coerce_form_post(builtin("welcome_call"), {"reached": ["true"], "call_notes": ["ok"]})
    assert call["needs"] == []
    # A radio left unanswered stays missing, so "required" reports it.
    assert forms.coerce_form_post(builtin("birthday_call"), {}) == {}


def test_coerce_form_post_leaves_uncastable_values_for_validation() -> None:
    form = builtin("satisfaction_survey")
    data = forms.coerce_form_post(form, {"score": ["五"], "nps": ["1e999"], "comment": ["a", "b"], "smuggled": ["1"]})
    assert data == {"score": "五", "nps": "1e999", "comment": ["a", "b"], "smuggled": "1"}
    errors = forms.validate_submission(form, data, locale="en")
    assert [(e.field, e.code) for e in errors] == [("", "additionalProperties"), ("score", "type"), ("nps", "type"), ("comment", "type")]


def test_coerce_form_post_empty_required_field_reports_required() -> None:
    form = builtin("complaint_intake")
    data = forms.coerce_form_post(form, {"subject": ["  "], "description": ["门店服务差"]})
    errors = forms.validate_submission(form, data)
    assert [(e.field, e.code, e.message) for e in errors] == [("subject", "required", "「投诉主题」为必填项")]


def test_coerce_form_post_reads_every_value_of_a_multidict() -> None:
    class MultiDict(dict[str, str]):
        """Like werkzeug's: items() gives the first value, getlist() all of them."""

        def __init__(self, pairs: list[tuple[str, str]]):
            super().__init__()
            self.pairs = pairs
            for key, value in pairs:
                self.setdefault(key, value)

        def getlist(self, key: str) -> list[str]:
            return [value for name, value in self.pairs if name == key]

    post = MultiDict([("reached", "true"), ("call_notes", "ok"), ("needs", "pricing"), ("needs", "training")])
    assert forms.coerce_form_post(builtin("welcome_call"), post)["needs"] == ["pricing", "training"]


def test_coerce_form_post_enum_values_keep_their_type() -> None:
    form = make_form({"stars": {"enum": [1, 2, 3], "x-label": label("星级", "Stars"), "x-widget": "radio"}})
    assert forms.coerce_form_post(form, {"stars": ["2"]}) == {"stars": 2}
    assert forms.check_submission(form, {"stars": 2}) == {"stars": 2}


# --- prefill -------------------------------------------------------------------------------------


def test_prefill_resolves_dotted_paths() -> None:
    context = {"customer": {"phone": "+8613800138000", "email": "li@example.cn", "preferred_channel": "wecom"}, "vars": {}}
    assert forms.prefill(builtin("complaint_intake"), context) == {
        "contact_phone": "+8613800138000",
        "contact_email": "li@example.cn",
    }
    assert forms.prefill(builtin("welcome_call"), context) == {"preferred_channel": "wecom"}


def test_prefill_omits_missing_values() -> None:
    assert forms.prefill(builtin("complaint_intake"), {"customer": {"phone": None}}) == {}
    assert forms.prefill(builtin("complaint_intake"), {}) == {}
    assert forms.prefill(builtin("complaint_intake"), {"customer": "not a mapping"}) == {}


def test_prefill_nested_vars_and_dates() -> None:
    form = make_form(
        {
            "ticket": {"type": "string", "x-label": label("工单号", "Ticket"), "x-prefill": "vars.ticket.no"},
            "born": {"type": "string", "format": "date", "x-label": label("生日", "Birthday"), "x-prefill": "customer.birthday"},
        }
    )
    context = {"vars": {"ticket": {"no": "CF20260301-7"}}, "customer": {"birthday": date(1990, 8, 15)}}
    assert forms.prefill(form, context) == {"ticket": "CF20260301-7", "born": "1990-08-15"}


# --- views ---------------------------------------------------------------------------------------


def test_view_marks_fields_and_checks_names() -> None:
    base = builtin("complaint_triage")
    step = forms.view(base, readonly=["severity"], hidden=["notes"])
    assert (step.field("severity").readonly, step.field("severity").hidden) == (True, False)
    assert (step.field("notes").readonly, step.field("notes").hidden) == (False, True)
    assert not base.field("severity").readonly  # the base form is untouched
    assert step.id == base.id and step.content_hash == base.content_hash
    with pytest.raises(ValueError, match="'severty'.*'nots'|'nots'.*'severty'"):
        forms.view(base, readonly=["severty"], hidden=["nots"])


def test_view_readonly_and_hidden_values_come_from_current() -> None:
    step = forms.view(builtin("complaint_triage"), readonly=["severity"], hidden=["notes"])
    current = {"severity": "high", "notes": "主管已知悉"}
    submitted = {"severity": "low", "category": "billing", "notes": "tampered"}
    cleaned = forms.check_submission(step, submitted, current=current)
    assert cleaned == {"severity": "high", "category": "billing", "notes": "主管已知悉"}


def test_view_locked_fields_are_not_the_submitters_problem() -> None:
    step = forms.view(builtin("complaint_triage"), readonly=["severity"])
    # The task has no severity yet, and the submitter cannot set one.
    assert forms.validate_submission(step, {"severity": "high", "category": "other"}, current={}) == []
    assert forms.check_submission(step, {"category": "other"}, current={}) == {"category": "other"}
    # The editable fields are still checked.
    errors = forms.validate_submission(step, {"category": "weather"}, current={"severity": "low"})
    assert [(e.field, e.code) for e in errors] == [("category", "enum")]


def test_visible_fields_leave_out_view_hidden_fields() -> None:
    step = forms.view(builtin("winback_call"), hidden=["notes"])
    assert [f.name for f in forms.visible_fields(step, {"reason": "price"})] == ["reason", "recovered"]
    assert [f.name for f in forms.visible_fields(step, {"reason": "other"})] == ["reason", "reason_detail", "recovered"]


def test_show_if_chains_hide_dependents_of_hidden_fields() -> None:
    form = make_form(
        {
            "kind": {"type": "string", "enum": ["a", "b"], "x-label": label("类型", "Kind")},
            "sub": {"type": "boolean", "x-label": label("子项", "Sub"), "x-show-if": {"field": "kind", "equals": "a"}},
            "detail": {"type": "string", "x-label": label("详情", "Detail"), "x-show-if": {"field": "sub", "equals": True}},
        }
    )
    assert [f.name for f in forms.visible_fields(form, {"kind": "a", "sub": True})] == ["kind", "sub", "detail"]
    assert [f.name for f in forms.visible_fields(form, {"kind": "b", "sub": True})] == ["kind"]
    assert [f.name for f in forms.visible_fields(form, {"kind": "a", "sub": 1})] == ["kind", "sub"]  # 1 is not true


# --- bad form files ------------------------------------------------------------------------------


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """1-based (line, column) of the n-th occurrence of needle in text."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load_bad(tmp_path: Path, text: str, name: str = "bad.schema.json") -> list[Problem]:
    """Write text as a form file and return the problems loading it raises."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FormInvalid) as caught:
        forms.load_form(path)
    assert all(problem.source == str(path) for problem in caught.value.problems)
    return caught.value.problems


def where(problems: list[Problem]) -> list[tuple[int, int]]:
    return [(p.line, p.column) for p in problems]


GOOD_HEAD = """{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "x-title": {"zh": "测试", "en": "Test"},
"""


def test_invalid_json_is_located(tmp_path: Path) -> None:
    text = GOOD_HEAD + '  "properties": {"a": {"type": "string",}}\n}\n'
    problems = load_bad(tmp_path, text)
    assert where(problems) == [position(text, "}}")]
    assert "trailing comma" in problems[0].message
    assert str(problems[0]).startswith(f"{tmp_path / 'bad.schema.json'}:{problems[0].line}:{problems[0].column}: ")


def test_meta_schema_errors_are_all_located(tmp_path: Path) -> None:
    text = GOOD_HEAD + """  "properties": {
    "a": {"type": "string", "minLength": "3", "x-label": {"zh": "甲", "en": "A"}},
    "b": {"type": "strng", "x-label": {"zh": "乙", "en": "B"}},
    "c": {"type": "string", "pattern": "([a-z", "x-label": {"zh": "丙", "en": "C"}}
  }
}
"""
    problems = load_bad(tmp_path, text)
    assert where(problems) == [position(text, '"3"'), position(text, '"strng"'), position(text, '"([a-z"')]
    assert "is not of type 'integer'" in problems[0].message
    assert "unknown type" in problems[1].message and "'string'" in problems[1].message
    assert "not a valid regular expression" in problems[2].message


@pytest.mark.parametrize(
    ("text", "needle", "message"),
    [
        ("[]\n", "[", "must be a JSON object"),
        ('{"type": "array", "additionalProperties": false, "properties": {}, "x-title": {"zh": "测", "en": "T"}}',
         '"array"', '"type": "object"'),
        ('{"type": "object", "additionalProperties": false, "x-title": {"zh": "测", "en": "T"}}', "{", '"properties"'),
        ('{"type": "object", "properties": {}, "x-title": {"zh": "测", "en": "T"}}', "{", '"additionalProperties": false'),
        ('{"type": "object", "additionalProperties": true, "properties": {}, "x-title": {"zh": "测", "en": "T"}}',
         "true", '"additionalProperties": false'),
        ('{"type": "object", "additionalProperties": false, "properties": {}}', "{", '"x-title"'),
        ('{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "additionalProperties": false, '
         '"properties": {}, "x-title": {"zh": "测", "en": "T"}}', '"http', "2020-12"),
    ],
)
def test_root_must_be_a_closed_object_schema(tmp_path: Path, text: str, needle: str, message: str) -> None:
    problems = load_bad(tmp_path, text)
    assert [(p.line, p.column) for p in problems if message in p.message] == [position(text, needle)]


def test_field_hint_problems_are_located(tmp_path: Path) -> None:
    text = GOOD_HEAD + """  "x-order": ["reason", "detail", "ghost"],
  "properties": {
    "reason": {
      "type": "string",
      "enum": ["price", "other"],
      "x-label": {"zh": "原因", "en": "Reason"},
      "x-widget": "selct",
      "x-enum-labels": {"price": {"zh": "价格", "en": "Price"}, "othre": {"zh": "其他", "en": "Other"}}
    },
    "detail": {
      "type": "string",
      "x-widget": "textarea",
      "x-show-if": {"field": "reasn", "equals": "other"}
    }
  }
}
"""
    problems = load_bad(tmp_path, text)
    found = {(p.line, p.column): p.message for p in problems}
    assert set(found) == {
        position(text, '"selct"'),
        position(text, '"othre"'),
        position(text, '"detail": {'),
        position(text, '"reasn"'),
        position(text, '"ghost"'),
    }
    assert "did you mean 'select'?" in found[position(text, '"selct"')]
    assert "'othre' is not one of the field's values; did you mean 'other'?" == found[position(text, '"othre"')]
    assert "'detail' has no \"x-label\"" in found[position(text, '"detail": {')]
    assert "unknown field 'reasn'; did you mean 'reason'?" in found[position(text, '"reasn"')]
    assert "unknown field 'ghost'" in found[position(text, '"ghost"')]


def test_more_field_checks(tmp_path: Path) -> None:
    text = GOOD_HEAD + """  "x-lable": "oops",
  "required": ["name", "nmae"],
  "properties": {
    "name": {"type": "string", "x-label": {"zh": "姓名"}, "x-hepl": {"zh": "帮助", "en": "Help"}},
    "when": {"type": "string", "format": "datetime", "x-label": {"zh": "时间", "en": "When"}},
    "kind": {"type": "string", "x-label": {"zh": "类型", "en": "Kind"}, "x-widget": "radio"},
    "score": {"type": "number", "x-label": {"zh": "分", "en": "Score"}, "x-widget": "rating"},
    "from": {"type": "string", "x-label": {"zh": "来源", "en": "From"}, "x-prefill": "session.user"},
    "bad-name": {"type": "string", "x-label": {"zh": "坏", "en": "Bad"},
                 "x-show-if": {"field": "kind", "equals": "x", "or": 1}},
    "loop_a": {"type": "string", "x-label": {"zh": "甲", "en": "A"}, "x-show-if": {"field": "loop_b", "equals": "1"}},
    "loop_b": {"type": "string", "x-label": {"zh": "乙", "en": "B"}, "x-show-if": {"field": "loop_a", "equals": "1"}},
    "flag": {"type": "boolean", "x-label": {"zh": "旗", "en": "Flag"}},
    "after": {"type": "string", "x-label": {"zh": "后", "en": "After"}, "x-show-if": {"field": "flag", "equals": "yes"}}
  }
}
"""
    problems = load_bad(tmp_path, text)
    found = {(p.line, p.column): p.message for p in problems}
    expected = {
        # x-label belongs on fields, so at the root only the root keywords are offered.
        position(text, '"x-lable"'): "unknown UI keyword 'x-lable'; use one of: x-title, x-description, x-order",
        position(text, '"nmae"'): "'nmae' is required but is not a field; did you mean 'name'?",
        position(text, '{"zh": "姓名"}'): '"x-label" must be an object with non-empty "zh" and "en" texts',
        position(text, '"x-hepl"'): "unknown UI keyword 'x-hepl'; did you mean 'x-help'?",
        position(text, '"datetime"'): "the format 'datetime' is not checked; did you mean 'date-time'?",
        position(text, '"radio"'): "the radio widget needs an enum (or a boolean) to offer options",
        position(text, '"rating"'): 'the rating widget needs "type": "integer" with "minimum" and "maximum"',
        position(text, '"session.user"'): '"x-prefill" must be a dotted path starting with customer, vars or instance, e.g. "customer.phone"',
        position(text, '"bad-name"'): "the field name 'bad-name' must start with a letter and contain only letters, digits and '_' "
        "(and not be 'csrf_token')",
        position(text, '{"field": "kind"'): '"x-show-if" must be {"field": "<another field>", "equals": <value>}',
        position(text, '{"field": "loop_b"'): '"x-show-if" goes round in a circle (loop_a -> loop_b -> loop_a); the field would never show',
        position(text, '{"field": "loop_a"'): '"x-show-if" goes round in a circle (loop_b -> loop_a -> loop_b); the field would never show',
        position(text, '"yes"'): "the field 'flag' can never be 'yes', so this field would never show; use one of: true, false",
    }
    assert found == expected


def test_conditions_must_name_fields(tmp_path: Path) -> None:
    text = GOOD_HEAD + """  "properties": {"kind": {"type": "string", "x-label": {"zh": "类", "en": "Kind"}}},
  "if": {"properties": {"knd": {"const": "a"}}},
  "then": {"required": ["kinds"]},
  "dependentRequired": {"kind": ["kid"]}
}
"""
    problems = load_bad(tmp_path, text)
    assert where(problems) == sorted([position(text, '"knd"'), position(text, '"kinds"'), position(text, '"kid"')])


@pytest.mark.parametrize(
    "pattern",
    ["^(a+)+$", "(a*)*", "(.*)*x", "^(\\w+\\s?)+$", "((ab)*c)*", "(?:a+){2,}", "(a{1,200})+", "(?P<x>\\d+)+", "([a-z]+.)*@"],
)
def test_redos_patterns_are_rejected_at_load(tmp_path: Path, pattern: str) -> None:
    field = {"type": "string", "pattern": pattern, "x-label": {"zh": "码", "en": "Code"}}
    text = GOOD_HEAD + f'  "properties": {{"code": {json.dumps(field)}}}\n}}\n'
    problems = load_bad(tmp_path, text)
    assert where(problems) == [position(text, json.dumps(pattern))]
    assert "ReDoS" in problems[0].message


@pytest.mark.parametrize(
    "pattern",
    ["^1[3-9]\\d{9}$", "(ab)+", "[(a+)+]", "\\(a+\\)+", "^(?:\\d{3}-)*\\d{4}$", "(a+)?", "^[A-Z]{2}\\d{6}$", "(?i)abc+", "x{2}"],
)
def test_safe_patterns_load(pattern: str) -> None:
    form = make_form({"code": {"type": "string", "pattern": pattern, "x-label": label("码", "Code")}})
    assert form.field("code").schema["pattern"] == pattern


def test_redos_in_pattern_properties_and_overlong_patterns(tmp_path: Path) -> None:
    long_pattern = "a" * 501
    text = GOOD_HEAD + f"""  "properties": {{
    "meta": {{"type": "object", "patternProperties": {{"^(x+)+$": {{"type": "string"}}}}, "x-label": {{"zh": "元", "en": "Meta"}}}},
    "code": {{"type": "string", "pattern": "{long_pattern}", "x-label": {{"zh": "码", "en": "Code"}}}}
  }}
}}
"""
    problems = load_bad(tmp_path, text)
    assert where(problems) == [position(text, '"^(x+)+$"'), position(text, f'"{long_pattern}"')]
    assert "the limit is 500" in problems[1].message


def test_deep_schemas_are_rejected(tmp_path: Path) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(40):
        deep = {"allOf": [deep]}
    field = {**deep, "x-label": {"zh": "深", "en": "Deep"}}
    text = GOOD_HEAD + f'  "properties": {{"deep": {json.dumps(field)}}}\n}}\n'
    problems = load_bad(tmp_path, text)
    messages = [p.message for p in problems]
    assert "the schema is nested more than 32 levels deep" in messages
    depth_problem = problems[messages.index("the schema is nested more than 32 levels deep")]
    assert depth_problem.path.count("allOf") == 15  # 2 (properties.deep) + 15 * 2 (allOf[0]) = 32 levels


def test_refs_must_stay_local_and_resolve(tmp_path: Path) -> None:
    text = GOOD_HEAD + """  "$defs": {"loop": {"$ref": "#/$defs/loop2"}, "loop2": {"$ref": "#/$defs/loop"}, "ok": {"type": "string"}},
  "properties": {
    "a": {"$ref": "https://evil.example/schema.json", "x-label": {"zh": "甲", "en": "A"}},
    "b": {"$ref": "#/$defs/nothing", "x-label": {"zh": "乙", "en": "B"}},
    "c": {"$ref": "#/$defs/ok", "x-label": {"zh": "丙", "en": "C"}},
    "d": {"$ref": "other.schema.json#/x", "x-label": {"zh": "丁", "en": "D"}},
    "e": {"$ref": "#/$defs/loop", "x-label": {"zh": "戊", "en": "E"}}
  }
}
"""
    problems = load_bad(tmp_path, text)
    found = {(p.line, p.column): p.message for p in problems}
    assert "points outside this form" in found[position(text, '"https://evil')]
    assert "points outside this form" in found[position(text, '"other.schema')]
    assert "points to nothing" in found[position(text, '"#/$defs/nothing"')]
    assert "leads back to itself" in found[position(text, '"#/$defs/loop"', 2)]
    assert position(text, '"#/$defs/ok"') not in found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """{
  "type": "object",
  "x-title": {"zh": "测试", "en": "Test"},
  "x-order": ["a", "zzz"],
  "properties": {
    "a": {"type": "string", "pattern": "(a+)+", "x-widget": "txt"},
    "b": {"type": "integer", "minimum": "0", "x-label": {"zh": "乙", "en": "B"}, "$ref": "http://x/y"},
    "c": {"enum": ["x"], "x-label": {"zh": "丙", "en": "C"}, "x-enum-labels": {"y": {"zh": "歪", "en": "Y"}}}
  }
}
"""
    problems = load_bad(tmp_path, text)
    assert where(problems) == sorted([
        position(text, "{"),  # no "additionalProperties": false
        position(text, '"zzz"'),
        position(text, '"a": {'),  # no x-label
        position(text, '"(a+)+"'),
        position(text, '"txt"'),
        position(text, '"0"'),
        position(text, '"http://x/y"'),
        position(text, '"y": {'),
    ])


def test_form_ids_come_from_the_file_name(tmp_path: Path) -> None:
    text = (FORMS_DIR / "birthday_call.schema.json").read_text(encoding="utf-8")
    (tmp_path / "my_call.schema.json").write_text(text, encoding="utf-8")
    assert forms.load_form(tmp_path / "my_call.schema.json").id == "my_call"
    problems = load_bad(tmp_path, text, name="my call.schema.json")
    assert [p.message for p in problems] == ["the form id 'my call' (from the file name) must be letters, digits, '_' or '-'"]

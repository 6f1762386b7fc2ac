"""The form designer's model (engine.forms_design) and its JSON endpoints (admin/form_designer.py).

Round trip: every built-in form read into a design and written back is the same schema (up to the
order of ``required`` and ``allOf`` entries, which mean nothing), and what the designer cannot
express stays untouched. A designed conditional field is enforced by the real validator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from engine import forms
from engine.app import create_app
from engine.cli import main
from engine.core import Careflow
from engine.errors import SubmissionInvalid
from engine.forms_design import design_problems, field_of_path, from_design, new_design, new_field, schema_text, to_design
from engine.clock import FixedClock
from tests.conftest import START, make_careflow
from tests.support.fakes import RecordingProvider
from tests.integration.test_app import PASSWORD

FORMS = sorted((Path(__file__).resolve().parents[2] / "forms").glob("*.schema.json"))


def normal(schema: dict[str, Any]) -> str:
    copy = json.loads(json.dumps(schema))
    if isinstance(copy.get("required"), list):
        copy["required"] = sorted(copy["required"])
    if isinstance(copy.get("allOf"), list):
        copy["allOf"] = sorted(copy["allOf"], key=lambda rule: json.dumps(rule, sort_keys=True))
    return json.dumps(copy, sort_keys=True, ensure_ascii=False)


@pytest.mark.parametrize("path", FORMS, ids=lambda p: p.name.removesuffix(".schema.json"))
def test_every_built_in_form_survives_the_round_trip(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    design = to_design(schema, path.name.removesuffix(".schema.json"))
    assert not [f["key"] for f in design["fields"] if f["locked"]], "the built-in forms are inside the subset"
    back = from_design(json.loads(json.dumps(design)))  # as the page sends it back
    assert normal(back) == normal(schema)
    assert design_problems(design) == []
    form = forms.load_form_text(schema_text(back), path.name, path.name.removesuffix(".schema.json"))
    assert [f.name for f in form.fields] == [f.name for f in forms.load_form(path).fields]


def test_constructs_outside_the_subset_are_kept_untouched() -> None:
    schema = {
        "type": "object", "additionalProperties": False, "x-title": {"zh": "甲", "en": "A"},
        "required": ["kind"],
        "properties": {
            "kind": {"type": "string", "enum": ["a", "b"], "x-label": {"zh": "类", "en": "Kind"}, "x-widget": "radio",
                     "default": "a", "x-prefill": "customer.region"},
            "codes": {"type": "array", "items": {"type": "integer", "enum": [1, 2]}, "x-label": {"zh": "码", "en": "Codes"}},
            "when": {"type": "string", "format": "date", "x-label": {"zh": "日", "en": "Day"}},
        },
        "dependentRequired": {"when": ["kind"]},
        "anyOf": [{"required": ["kind"]}, {"required": ["codes"]}],
        "if": {"properties": {"kind": {"const": "b"}}}, "then": {"required": ["codes"]},
    }
    design = to_design(schema, "odd")
    by_key = {f["key"]: f for f in design["fields"]}
    assert by_key["codes"]["locked"] and by_key["codes"]["schema"] == schema["properties"]["codes"]
    assert by_key["kind"]["extra"] == {"default": "a", "x-prefill": "customer.region"}
    assert by_key["when"]["type"] == "date" and not by_key["when"]["widget_explicit"]
    assert set(design["extra"]) == {"dependentRequired", "anyOf", "if", "then"}
    # a change the designer can make leaves everything else as it was
    by_key["kind"]["label"]["en"] = "Sort"
    back = from_design(design)
    assert back["properties"]["kind"]["x-label"] == {"zh": "类", "en": "Sort"}
    back["properties"]["kind"]["x-label"]["en"] = "Kind"
    del back["$schema"]  # the one key the designer always writes
    assert normal(back) == normal(schema)


def contact_again() -> dict[str, Any]:
    design = new_design("contact_again")
    design["title"] = {"zh": "回访", "en": "Follow-up call"}
    again = new_field("again", "yesno")
    again.update(label={"zh": "需要再次联系？", "en": "Contact again?"}, required=True,
                 options=[{"value": True, "label": {"zh": "是", "en": "Yes"}}, {"value": False, "label": {"zh": "否", "en": "No"}}])
    when = new_field("when", "date")
    when.update(label={"zh": "联系日期", "en": "When"}, required=True, show_if={"field": "again", "equals": "true"})
    design["fields"] = [again, when]
    return design


def test_a_required_conditional_field_is_an_if_then_that_the_validator_enforces(tmp_path: Path) -> None:
    schema = from_design(contact_again())
    assert schema["required"] == ["again"]
    assert schema["properties"]["when"]["x-show-if"] == {"field": "again", "equals": True}
    assert schema["if"] == {"properties": {"again": {"const": True}}, "required": ["again"]}
    assert schema["then"] == {"required": ["when"]}
    form = forms.load_form_text(schema_text(schema), "contact_again.schema.json", "contact_again")
    with pytest.raises(SubmissionInvalid) as caught:
        forms.check_submission(form, {"again": True}, locale="en")
    assert [(e.field, e.code) for e in caught.value.errors] == [("when", "required")]
    assert forms.check_submission(form, {"again": False, "when": "2026-12-01"}) == {"again": False}  # hidden: dropped
    assert forms.check_submission(form, {"again": True, "when": "2026-12-01"})["when"] == "2026-12-01"
    # `careflow validate` accepts the file the designer writes
    (tmp_path / "contact_again.schema.json").write_text(schema_text(schema), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "contact_again.schema.json")])
    assert result.exit_code == 0 and "ok: 1 file(s) checked" in result.output, result.output
    # and it reads back as the same design
    again = to_design(schema, "contact_again")
    assert [(f["key"], f["required"], f["show_if"]) for f in again["fields"]] == [
        ("again", True, None), ("when", True, {"field": "again", "equals": True})]


def test_two_conditional_fields_go_into_all_of() -> None:
    design = contact_again()
    note = new_field("note", "textarea")
    note.update(label={"zh": "说明", "en": "Note"}, required=True, show_if={"field": "again", "equals": "false"})
    design["fields"].append(note)
    schema = from_design(design)
    assert "if" not in schema and [rule["then"]["required"] for rule in schema["allOf"]] == [["when"], ["note"]]
    assert normal(from_design(to_design(schema, "contact_again"))) == normal(schema)


def test_bad_input_is_named_by_its_field() -> None:
    design = contact_again()
    design["fields"][1].update(key="2when", label={"zh": "日期", "en": ""})
    extra = new_field("again", "select")
    extra["label"] = {"zh": "甲", "en": "A"}
    score = new_field("score", "rating")
    score.update(label={"zh": "分", "en": "Score"}, min="5", max="1")
    design["fields"] += [extra, score]
    found = {(p.field, p.code) for p in design_problems(design)}
    assert found == {("2when", "key"), ("2when", "label"), ("again", "duplicate"), ("again", "no_options"),
                     ("score", "min_max")}
    # problems found by the form checks (as `careflow validate` reports them) map back to fields
    design = contact_again()
    design["fields"][1]["pattern"] = "^(a+)+$"
    design["fields"][1]["type"] = "text"
    schema = from_design(design)
    with pytest.raises(forms.FormInvalid) as caught:
        forms.load_form_text(schema_text(schema), "x.schema.json", "x")
    assert {field_of_path(p.path, schema) for p in caught.value.problems} == {"when"}


# --- the endpoints ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def designer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlaskClient, dict[str, str], Careflow]]:
    """One engine on SQLite for the endpoint tests (a new one per test would be most of their time)."""
    cf = make_careflow(f"sqlite:///{tmp_path_factory.mktemp('design') / 'careflow.db'}", FixedClock(START), RecordingProvider())
    app = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post("/login", data={"username": "ops", "password": PASSWORD, "csrf_token": token}).status_code == 302
    html = client.get("/admin/forms/new", headers={"Accept-Language": "en"}).get_data(as_text=True)
    csrf = re.search(r'data-csrf="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    yield client, {"X-CSRFToken": csrf, "Accept-Language": "en"}, cf
    cf.close()


def test_preview_renders_with_the_inbox_renderer_and_save_deploys_an_audited_version(designer: Any) -> None:
    client, headers, cf = designer
    design = contact_again()
    answer = client.post("/admin/forms/api/preview", json={"design": design}, headers=headers).get_json()
    assert answer["problems"] == []
    assert 'name="again"' in answer["html"] and 'name="when"' not in answer["html"]
    shown = client.post("/admin/forms/api/preview", json={"design": design, "values": {"again": ["true"]}, "check": True},
                        headers=headers).get_json()
    assert 'id="f-when"' in shown["html"] and "“When” is required" in shown["html"]
    assert json.loads(shown["schema"])["then"] == {"required": ["when"]}
    saved = client.post("/admin/forms/api/save", json={"design": design}, headers=headers)
    assert saved.status_code == 200 and saved.get_json()["version"] == 1 and saved.get_json()["changed"]
    again = client.post("/admin/forms/api/save", json={"design": design}, headers=headers).get_json()
    assert again["version"] == 1 and not again["changed"]
    with cf.session() as s:
        from sqlalchemy import select

        from engine.store.models import AuditEntry

        entries = list(s.scalars(select(AuditEntry).where(AuditEntry.action == "form.deploy", AuditEntry.target_id == "contact_again")))
    assert [e.actor for e in entries] == ["ops"]
    page = client.get("/admin/forms/contact_again/design", headers=headers).get_data(as_text=True)
    assert "contact_again" in page and "Form designer" in page
    assert "contact_again" in client.get("/admin/forms", headers=headers).get_data(as_text=True)


def test_save_refuses_a_bad_form_naming_the_field_and_needs_the_deploy_right(designer: Any) -> None:
    client, headers, cf = designer
    design = contact_again()
    design["fields"][1]["show_if"] = {"field": "nobody", "equals": "x"}
    refused = client.post("/admin/forms/api/save", json={"design": design}, headers=headers)
    assert refused.status_code == 422
    assert "when" in {p["field"] for p in refused.get_json()["problems"]}
    raw = client.post("/admin/forms/api/open", json={"text": "{\"type\": ", "id": "x"}, headers=headers)
    assert raw.status_code == 422
    opened = client.post("/admin/forms/api/open", json={"text": schema_text(from_design(contact_again())), "id": "contact_again"},
                         headers=headers).get_json()
    assert [f["key"] for f in opened["design"]["fields"]] == ["again", "when"] and opened["problems"] == []
    assert client.post("/admin/forms/api/preview", json={"design": {"fields": [{"options": ["x"]}]}},
                       headers=headers).status_code == 422
    no_csrf = client.post("/admin/forms/api/save", json={"design": contact_again()}, headers={"Accept-Language": "en"})
    assert no_csrf.status_code == 400


def test_only_designers_and_admins_may_design(designer: Any) -> None:
    client, _headers, _cf = designer
    agent = client.application.test_client()
    page = agent.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert agent.post("/login", data={"username": "chen", "password": PASSWORD, "csrf_token": token}).status_code == 302
    assert agent.get("/admin/forms").status_code == 200  # forms.read: every role
    assert "/admin/forms/new" not in agent.get("/admin/forms").get_data(as_text=True)
    assert agent.get("/admin/forms/new").status_code == 403
    assert agent.get("/admin/forms/follow_up/design").status_code == 403


def test_deploy_form_text_versions_and_audits_on_each_backend(cf: Careflow) -> None:
    text = schema_text(from_design(contact_again()))
    first = cf.deploy_form_text(text, "contact_again.schema.json", by="ops")
    same = cf.deploy_form_text(text, "contact_again.schema.json", by="ops")
    second = cf.deploy_form_text(text.replace("回访", "回访记录"), "contact_again.schema.json", by="admin")
    assert (first.version, first.changed, same.version, same.changed, second.version) == (1, True, 1, False, 2)
    with pytest.raises(forms.FormInvalid):
        cf.deploy_form_text("{}", "broken.schema.json", by="ops")
    app = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf)
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"username": "admin", "password": PASSWORD, "csrf_token": token})
    listing = client.get("/admin/forms", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    row = listing.split("<code>contact_again</code>", 1)[1].split("</tr>", 1)[0]
    assert "回访记录" in row and "v2" in row
    with cf.session() as s:
        from sqlalchemy import select

        from engine.store.models import AuditEntry

        actors = list(s.scalars(select(AuditEntry.actor).where(AuditEntry.action == "form.deploy",
                                                               AuditEntry.target_id == "contact_again").order_by(AuditEntry.id)))
    assert actors == ["ops", "admin"]


def test_form_file_problems_follow_the_page_language(designer: Any) -> None:
    client, headers, _cf = designer
    design = contact_again()
    name = new_field("name", "text")
    name.update(label={"zh": "姓名", "en": "Name"}, pattern="(a+)+")
    design["fields"].append(name)
    english = client.post("/admin/forms/api/save", json={"design": design}, headers=headers)
    chinese = client.post("/admin/forms/api/save", json={"design": design}, headers={**headers, "Accept-Language": "zh"})
    assert english.status_code == chinese.status_code == 422
    (en,), (zh,) = english.get_json()["problems"], chinese.get_json()["problems"]
    assert en["field"] == zh["field"] == "name" and en["path"] == zh["path"]
    assert en["message"].startswith("the pattern '(a+)+' repeats a group")
    assert zh["message"].startswith("正则表达式 '(a+)+' 重复了一个本身无限重复的分组")


@pytest.mark.parametrize("change, where, value", [
    ({"type": ["text"]}, "fields[0].type", ["text"]),
    ({"show_if": {"field": ["b"], "equals": "x"}}, "fields[0].show_if.field", ["b"]),
    ({"options": [{"value": {"a": 1}, "label": None}]}, "fields[0].options[0].value", {"a": 1}),
    ({"label": "A"}, "fields[0].label", "A"),
    ({"min": [1]}, "fields[0].min", [1]),
])
def test_a_design_of_the_wrong_shape_is_refused_naming_field_and_value(designer: Any, change: dict[str, Any], where: str,
                                                                       value: Any) -> None:
    client, headers, _cf = designer
    design = contact_again()
    design["fields"][0].update(change)
    for url in ("/admin/forms/api/preview", "/admin/forms/api/save"):
        for language, words in (("en", "cannot be"), ("zh", "不能是")):
            refused = client.post(url, json={"design": design}, headers={**headers, "Accept-Language": language})
            assert refused.status_code == 422, refused.get_data(as_text=True)
            problem = refused.get_json()["problems"][0]
            assert problem["field"] == "again" and where in problem["message"] and words in problem["message"]
            assert json.dumps(value, ensure_ascii=False) in problem["message"]


@pytest.mark.parametrize("text", [
    {"x-order": 5}, {"x-order": [["a"]]}, {"required": 5}, {"allOf": 5}, {"properties": 5}, {"x-title": "t"},
    {"properties": {"a": {"type": "array", "x-widget": "checkboxes", "items": True}}},
    {"properties": {"a": {"type": "array", "x-widget": "checkboxes", "items": [1]}}},
    {"properties": {"a": {"type": "array", "x-widget": "checkboxes", "items": {"enum": 5}}}},
    {"properties": {"a": {"type": "string", "enum": 5}}},
    {"properties": {"a": {"type": "string", "enum": ["x"], "x-enum-labels": 5}}},
    {"properties": {"a": {"type": ["string"], "format": ["date"], "x-widget": ["text"]}}},
    {"properties": {"a": {"type": "string", "x-show-if": {"field": ["b"], "equals": 1}}}},
    {"properties": {"a": {"type": "string", "x-show-if": 5}}, "required": ["a"],
     "allOf": [{"if": {"properties": {"b": {"const": 1}}, "required": ["b"]}, "then": {"required": ["a"]}}]},
    {"properties": {"a": [1]}, "allOf": [{"if": {"properties": {}, "required": []}, "then": {"required": ["a"]}}]},
])
def test_raw_json_the_designer_cannot_read_is_kept_and_named_not_a_crash(designer: Any, text: dict[str, Any]) -> None:
    client, headers, _cf = designer
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "additionalProperties": False,
              "x-title": {"zh": "表", "en": "Form"}, "properties": {}, **text}
    design = to_design(schema, "odd")
    # what the designer cannot show is a locked field or a rule of the form, written back unchanged
    assert json.loads(normal(from_design(design))) == json.loads(normal(schema))
    opened = client.post("/admin/forms/api/open", json={"text": json.dumps(schema), "id": "odd"}, headers=headers)
    assert opened.status_code == 200
    assert opened.get_json()["problems"], "the schema checks name what is wrong"

"""The flow loader: every built-in flow loads; every bad flow reports its one located problem."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from connectors.registry import Registry
from engine.errors import FlowInvalid
from engine.flow.loader import flow_schema, load_flow, load_flow_text
from engine.flow.validate import Catalog
from engine.roles import BUILTIN_ROLES

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests/data/flows").glob("bad_*.yaml"))
BUILTIN = sorted((ROOT / "workflows").glob("*.yaml"))
FORMS = frozenset(p.name.removesuffix(".schema.json") for p in (ROOT / "forms").glob("*.schema.json"))
REGISTRY = Registry()
CATALOG = Catalog(forms=FORMS, connectors=REGISTRY.names(), roles=BUILTIN_ROLES,
                  flows=frozenset(p.stem for p in BUILTIN), message_schemas=REGISTRY.message_schemas(),
                  configurable=REGISTRY.configurable())


@pytest.mark.parametrize("path", BUILTIN, ids=lambda p: p.stem)
def test_builtin_flows_load_and_carry_the_editor_modeline(path: Path) -> None:
    flow = load_flow(path, CATALOG)
    assert flow.id == path.stem
    assert path.read_text("utf-8").startswith("# yaml-language-server: $schema=../engine/schemas/flow.schema.json")
    assert flow.name["zh"] and flow.name["en"]


def test_the_dsl_schema_is_valid_draft_07() -> None:
    jsonschema.Draft7Validator.check_schema(flow_schema())


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_each_bad_flow_reports_its_problem_with_line_and_column(path: Path) -> None:
    first = path.read_text("utf-8").splitlines()[0]
    match = re.fullmatch(r"# expect: (\d+):(\d+): (.*)", first)
    assert match, f"{path.name} needs an '# expect: line:col: message' first line"
    line, col, message = int(match[1]), int(match[2]), match[3]
    with pytest.raises(FlowInvalid) as exc:
        load_flow(path, CATALOG)
    found = [(p.line, p.column, p.message) for p in exc.value.problems]
    assert any(p[0] == line and p[1] == col and message in p[2] for p in found), found
    assert all(str(p).startswith(f"{path}:") for p in exc.value.problems)


def test_all_problems_are_reported_at_once() -> None:
    text = """
id: many
name: Many
steps:
  - id: a
    type: task
    form: nope
    assignee: {role: nobody}
    next: b
  - id: b
    type: action
    connector: fax
    next: c
  - id: c
    type: end
"""
    with pytest.raises(FlowInvalid) as exc:
        load_flow_text(text, "many.yaml", CATALOG)
    messages = " | ".join(p.message for p in exc.value.problems)
    assert "unknown form 'nope'" in messages
    assert "unknown role 'nobody'" in messages
    assert "unknown connector 'fax'" in messages


def test_yaml_1_1_on_key_is_read_as_the_string_on() -> None:
    text = "id: t\nname: T\non: created\nsteps:\n  - id: done\n    type: end\n"
    with pytest.raises(FlowInvalid) as exc:
        load_flow_text(text, "t.yaml")
    assert [p.message for p in exc.value.problems] == ["unknown key 'on'"]


def test_a_scalar_document_is_not_a_flow() -> None:
    with pytest.raises(FlowInvalid, match="must be a mapping"):
        load_flow_text("just text", "t.yaml")


def test_schema_text_is_printed_by_the_cli_schema_command() -> None:
    from click.testing import CliRunner

    from engine.cli import main

    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output)["title"] == "Careflow flow"


ACCEPTED_ACTIONS = """
id: messages_ok
name: Messages that pass
steps:
  - id: robot
    type: action
    connector: feishu/care-team          # a named configuration, checked by its type's schema
    params: {markdown: "**{{ customer.name }}**", subject: 新客户}
    next: aliyun
  - id: aliyun
    type: action
    connector: sms
    params:
      template_code: SMS_987654321
      template_params: "{{ vars.pickup }}"   # a lone expression may render to a mapping
    next: hook
  - id: hook
    type: action
    connector: webhook/crm
    params: {event: vip.callback_needed, customer_name: "{{ customer.name }}", score: 5}
    next: mail
  - id: mail
    type: action
    connector: smtp/smtp-main
    params:
      to: "{{ customer.email }}"           # a template: its format is known only when sent
      subject: {zh: "您好", en: "Hello"}
      text: {zh: "正文", en: "Body"}
      category: marketing
    next: done
  - id: done
    type: end
"""


def test_templates_language_maps_and_named_configurations_pass() -> None:
    flow = load_flow_text(ACCEPTED_ACTIONS, "messages_ok.yaml", CATALOG)
    assert flow.step("robot").connector == "feishu/care-team"


def test_a_problem_in_one_language_points_at_that_language() -> None:
    text = ACCEPTED_ACTIONS.replace('text: {zh: "正文", en: "Body"}', 'text: {zh: "正文", en: ""}')
    with pytest.raises(FlowInvalid) as exc:
        load_flow_text(text, "messages_ok.yaml", CATALOG)
    [problem] = exc.value.problems
    assert problem.message == "parameter 'text' must not be empty"
    assert problem.path == "$.steps[3].params.text.en"


def test_a_provider_named_directly_needs_a_recipient() -> None:
    text = ACCEPTED_ACTIONS.replace('to: "{{ customer.email }}"', 'html: "<p>hi</p>"')
    with pytest.raises(FlowInvalid) as exc:
        load_flow_text(text, "messages_ok.yaml", CATALOG)
    assert [p.message for p in exc.value.problems] == ["connector 'smtp/smtp-main' needs the parameter 'to'"]


def test_without_message_schemas_params_are_not_checked() -> None:
    bare = Catalog(forms=FORMS, connectors=REGISTRY.names(), roles=BUILTIN_ROLES)
    load_flow(ROOT / "tests/data/flows/bad_unknown_param.yaml", bare)

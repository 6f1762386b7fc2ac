"""What publishing would change: steps, edges, triggers and settings, with zh/en summaries."""

from __future__ import annotations

from pathlib import Path

from engine.designer.changes import diff
from engine.designer.graph import read, to_graph
from engine.designer.palette import step_types, trigger_types
from engine.designer.writer import to_yaml
from engine.flow.model import STEP_TYPES

COMPLAINT = (Path(__file__).resolve().parents[2] / "workflows" / "complaint.yaml").read_text("utf-8")


def _changes(before: str, after: str) -> list[tuple[str, str, str]]:
    return [(c.change, c.what, c.id) for c in diff(read(before).data, read(after).data)]


def test_layout_comments_and_formatting_are_no_change() -> None:
    saved = to_yaml(to_graph(COMPLAINT), COMPLAINT).text
    reformatted = saved.replace("name: {zh: 分诊, en: Triage}", "name:\n      zh: 分诊\n      en: Triage  # reflowed")
    assert _changes(COMPLAINT, reformatted) == []


def test_each_kind_of_change_is_named() -> None:
    edited = (COMPLAINT
              .replace("    due: {hours: 4}\n    reminders:\n      - before: {hours: 1}\n    next: severity",
                       "    due: {hours: 8}\n    reminders:\n      - before: {hours: 1}\n    next: severity")
              .replace("'high'\"", "'critical'\"")
              .replace("    on_timeout: close_unconfirmed\n", "")
              .replace("  - id: close_unconfirmed\n    type: end\n    outcome: closed_unconfirmed\n",
                       "  - id: closed_late\n    type: end\n    name: {zh: 逾期结案, en: Closed late}\n")
              .replace("    customer_from: match\n", "    customer_from: create\n")
              .replace("  - type: manual\n", "")
              .replace("timezone: Asia/Shanghai\n", "timezone: Asia/Urumqi\n"))
    assert _changes(COMPLAINT, edited) == [
        ("changed", "step", "triage"),
        ("added", "step", "closed_late"),
        ("removed", "step", "close_unconfirmed"),
        ("changed", "edge", "severity->lead_review:case:0"),
        ("removed", "edge", "wait_confirmation->close_unconfirmed:on_timeout"),
        ("changed", "trigger", "triggers[0]"),
        ("removed", "trigger", "triggers[1]"),
        ("changed", "setting", "timezone"),
    ]
    summaries = {c.id: c.summary for c in diff(read(COMPLAINT).data, read(edited).data)}
    assert summaries["closed_late"] == {"zh": "新增结束步骤 「逾期结案」（closed_late）",
                                        "en": "New end step “Closed late” (closed_late)"}
    assert summaries["triage"]["en"] == "Step “Triage” (triage) changed: due"
    assert summaries["severity->lead_review:case:0"]["en"] == "Condition of severity → lead_review is now vars.triage.severity == 'critical'"
    assert summaries["triggers[0]"]["zh"] == "触发器 form 修改了：customer_from"


def test_a_new_flow_is_all_additions() -> None:
    changes = diff({}, read(COMPLAINT).data)
    assert {c.change for c in changes} == {"added"}
    assert {c.what for c in changes} == {"step", "edge", "trigger", "setting"}


def test_palette_has_every_step_type_with_its_schema() -> None:
    steps = step_types("en")
    assert [s["kind"] for s in steps] == list(STEP_TYPES)
    wait = next(s for s in steps if s["kind"] == "wait")
    assert wait["shape"] == "ellipse" and wait["schema"]["properties"]["timeout"] == {"$ref": "#/definitions/duration"}
    assert "duration" in wait["schema"]["definitions"]
    import jsonschema

    for item in steps + trigger_types("zh"):
        jsonschema.Draft7Validator.check_schema(item["schema"])
    assert next(t for t in trigger_types("zh") if t["kind"] == "date")["label"] == "生日"

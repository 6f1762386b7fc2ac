"""The designer's palette: each step and trigger type with its label, shape and JSON Schema.

The schemas are cut out of the DSL's own schema (``engine/schemas/flow.schema.json``), so the
side panel offers exactly the keys ``careflow validate`` accepts.
"""

from __future__ import annotations

from typing import Any

from engine.designer.graph import SHAPES
from engine.flow.loader import flow_schema
from engine.flow.model import STEP_TYPES

STEP_LABELS: dict[str, dict[str, str]] = {
    "task": {"zh": "人工任务", "en": "Task"},
    "action": {"zh": "动作", "en": "Action"},
    "decision": {"zh": "条件分支", "en": "Decision"},
    "parallel": {"zh": "并行分支", "en": "Parallel"},
    "join": {"zh": "汇合", "en": "Join"},
    "wait": {"zh": "等待", "en": "Wait"},
    "set": {"zh": "设置变量", "en": "Set variables"},
    "update_customer": {"zh": "更新客户", "en": "Update customer"},
    "assign_owner": {"zh": "分配客户经理", "en": "Assign owner"},
    "subflow": {"zh": "子流程", "en": "Subflow"},
    "end": {"zh": "结束", "en": "End"},
}
TRIGGER_LABELS: dict[str, dict[str, str]] = {
    "manual": {"zh": "手工启动", "en": "Manual"},
    "form": {"zh": "表单提交", "en": "Form submitted"},
    "schedule": {"zh": "定时", "en": "Schedule"},
    "date": {"zh": "生日", "en": "Birthday"},
    "customer_event": {"zh": "客户事件", "en": "Customer event"},
    "segment": {"zh": "分群", "en": "Segment"},
}
ROLE_NAMES: dict[str, dict[str, str]] = {
    "admin": {"zh": "系统管理员", "en": "Administrator"},
    "designer": {"zh": "流程设计", "en": "Designer"},
    "account_manager": {"zh": "客户经理", "en": "Account manager"},
    "team_lead": {"zh": "团队主管", "en": "Team lead"},
    "service_agent": {"zh": "客服", "en": "Service agent"},
    "service_lead": {"zh": "客服主管", "en": "Service lead"},
}


def _by_type(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``then`` schema of each ``if type == X`` branch of a definition."""
    out = {}
    for branch in definition.get("allOf", []):
        const = branch.get("if", {}).get("properties", {}).get("type", {}).get("const")
        if const:
            out[const] = branch["then"]
    return out


def _standalone(part: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    # The #/definitions/... references resolve inside the cut-out schema too.
    return {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", **part, "definitions": definitions}


def step_types(lang: str) -> list[dict[str, Any]]:
    schema = flow_schema()
    definitions = schema["definitions"]
    parts = _by_type(definitions["step"])
    return [{"kind": kind, "label": STEP_LABELS.get(kind, {}).get(lang, kind), "shape": SHAPES.get(kind, "rect"),
             "schema": _standalone(parts.get(kind, {}), definitions)} for kind in STEP_TYPES]


def trigger_types(lang: str) -> list[dict[str, Any]]:
    schema = flow_schema()
    definitions = schema["definitions"]
    parts = _by_type(definitions["trigger"])
    return [{"kind": kind, "label": TRIGGER_LABELS.get(kind, {}).get(lang, kind),
             "schema": _standalone(part, definitions)} for kind, part in parts.items()]


def role_name(role: str, lang: str) -> str:
    return ROLE_NAMES.get(role, {}).get(lang, role)

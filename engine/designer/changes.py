"""What publishing would change: a semantic diff of two versions of a flow.

Steps, edges, triggers and settings (every other top-level key) are compared as the loader of
record reads them, so reformatting, comments and the ``layout:`` block (which the engine never
reads) are no change. Each change carries a one-line summary in Chinese and English.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.designer.graph import EDGE_LABELS, Transition, split_step, text_of, transitions
from engine.designer.palette import STEP_LABELS

#: top-level keys that are not settings
NOT_SETTINGS = ("steps", "triggers", "layout")

EDGE_KIND_NAMES = {
    "next": {"zh": "下一步", "en": "next"},
    "case": {"zh": "条件", "en": "condition"},
    "branch": {"zh": "并行分支", "en": "branch"},
    **EDGE_LABELS,
}

TEMPLATES = {
    ("added", "step"): {"zh": "新增{kind}步骤 {label}", "en": "New {kind} step {label}"},
    ("removed", "step"): {"zh": "删除步骤 {label}", "en": "Step {label} removed"},
    ("changed", "step"): {"zh": "步骤 {label} 修改了：{keys}", "en": "Step {label} changed: {keys}"},
    ("added", "edge"): {"zh": "新增连线 {source} → {target}（{kind}）", "en": "New connection {source} → {target} ({kind})"},
    ("removed", "edge"): {"zh": "删除连线 {source} → {target}（{kind}）", "en": "Connection {source} → {target} removed ({kind})"},
    ("changed", "edge"): {"zh": "连线 {source} → {target} 的条件改为 {when}", "en": "Condition of {source} → {target} is now {when}"},
    ("added", "trigger"): {"zh": "新增触发器 {kind}", "en": "New trigger: {kind}"},
    ("removed", "trigger"): {"zh": "删除触发器 {kind}", "en": "Trigger removed: {kind}"},
    ("changed", "trigger"): {"zh": "触发器 {kind} 修改了：{keys}", "en": "Trigger {kind} changed: {keys}"},
    ("added", "setting"): {"zh": "新增设置 {key}", "en": "New setting {key}"},
    ("removed", "setting"): {"zh": "删除设置 {key}", "en": "Setting {key} removed"},
    ("changed", "setting"): {"zh": "设置 {key} 修改了", "en": "Setting {key} changed"},
}


@dataclass(frozen=True, slots=True)
class Change:
    change: str  # added, removed, changed
    what: str  # step, edge, trigger, setting
    id: str
    summary: Mapping[str, str]

    def as_dict(self, lang: str) -> dict[str, str]:
        return {"change": self.change, "what": self.what, "id": self.id,
                "summary": self.summary.get(lang) or self.summary["en"]}


def _summary(change: str, what: str, **values: Any) -> dict[str, str]:
    out = {}
    for lang in ("zh", "en"):
        filled = {k: (v[lang] if isinstance(v, dict) else v) for k, v in values.items()}
        out[lang] = TEMPLATES[(change, what)][lang].format(**filled)
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _step_label(step: Mapping[str, Any]) -> dict[str, str]:
    sid = str(step.get("id"))
    out = {}
    for lang in ("zh", "en"):
        name = text_of(step.get("name"), lang)
        out[lang] = (f"「{name}」（{sid}）" if lang == "zh" else f"“{name}” ({sid})") if name else sid
    return out


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every change from the loaded flow ``old`` to the loaded flow ``new``, steps first."""
    return [*_steps(old, new), *_edges(old, new), *_triggers(old, new), *_settings(old, new)]


def _by_id(data: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for step in data.get("steps") or []:
        if isinstance(step, dict) and isinstance(step.get("id"), str):
            out.setdefault(step["id"], step)
    return out


def _steps(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    before, after = _by_id(old), _by_id(new)
    out = []
    for sid, step in after.items():
        if sid not in before:
            kind = str(step.get("type"))
            kind_names = {"zh": STEP_LABELS.get(kind, {}).get("zh", kind), "en": kind}
            out.append(Change("added", "step", sid, _summary("added", "step", label=_step_label(step), kind=kind_names)))
            continue
        # Transitions are compared as edges; here only what the step itself does.
        old_rest, new_rest = split_step(before[sid])[0], split_step(step)[0]
        keys = sorted(k for k in {*old_rest, *new_rest}
                      if _canonical(old_rest.get(k)) != _canonical(new_rest.get(k)))
        if keys:
            out.append(Change("changed", "step", sid, _summary("changed", "step", label=_step_label(step),
                                                               keys=", ".join(keys))))
    for sid, step in before.items():
        if sid not in after:
            out.append(Change("removed", "step", sid, _summary("removed", "step", label=_step_label(step))))
    return out


def _edges(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    before: dict[str, Transition] = {t.edge_id: t for t in transitions(old)}
    after: dict[str, Transition] = {t.edge_id: t for t in transitions(new)}
    out = []
    for eid, t in after.items():
        values = {"source": t.source, "target": t.target, "kind": EDGE_KIND_NAMES.get(t.kind, t.kind)}
        if eid not in before:
            out.append(Change("added", "edge", eid, _summary("added", "edge", **values)))
        elif _canonical(before[eid].when) != _canonical(t.when):
            out.append(Change("changed", "edge", eid, _summary("changed", "edge", **values, when=t.when)))
    for eid, t in before.items():
        if eid not in after:
            values = {"source": t.source, "target": t.target, "kind": EDGE_KIND_NAMES.get(t.kind, t.kind)}
            out.append(Change("removed", "edge", eid, _summary("removed", "edge", **values)))
    return out


def _triggers(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    # (a flow whose triggers are no list has none to compare: its text is refused before this)
    before = [t for t in _list(old.get("triggers")) if isinstance(t, dict)]
    after = [t for t in _list(new.get("triggers")) if isinstance(t, dict)]
    out = []
    for i in range(max(len(before), len(after))):
        was = before[i] if i < len(before) else None
        now = after[i] if i < len(after) else None
        tid = f"triggers[{i}]"
        if was is not None and now is not None and was.get("type") == now.get("type"):
            keys = sorted(k for k in {*was, *now} if _canonical(was.get(k)) != _canonical(now.get(k)))
            if keys:
                out.append(Change("changed", "trigger", tid, _summary("changed", "trigger", kind=str(now.get("type")),
                                                                      keys=", ".join(keys))))
            continue
        if was is not None:
            out.append(Change("removed", "trigger", tid, _summary("removed", "trigger", kind=str(was.get("type")))))
        if now is not None:
            out.append(Change("added", "trigger", tid, _summary("added", "trigger", kind=str(now.get("type")))))
    return out


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = []
    for key in [*new, *(k for k in old if k not in new)]:
        if key in NOT_SETTINGS:
            continue
        if key not in old:
            out.append(Change("added", "setting", key, _summary("added", "setting", key=key)))
        elif key not in new:
            out.append(Change("removed", "setting", key, _summary("removed", "setting", key=key)))
        elif _canonical(old[key]) != _canonical(new[key]):
            out.append(Change("changed", "setting", key, _summary("changed", "setting", key=key)))
    return out

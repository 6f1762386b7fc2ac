"""``careflow dry-run FLOW_FILE_OR_ID --customer ID``: play a flow for a customer, sending nothing.

See engine/designer/dry_run.py and docs/dry-run.md. Exit code 1 when the flow cannot be read or the
run ends on a problem (status ``failed``).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from engine.cli import EXIT_INVALID, State, guarded, main, parse_json
from engine.clock import parse_instant

_LABELS = {
    "title": ("试运行 {flow} · 客户 {customer} · 状态 {status} · 结果 {outcome}",
              "Dry run of {flow} · customer {customer} · status {status} · outcome {outcome}"),
    "span": ("虚拟时间 {start} → {end}（{tz}）", "virtual time {start} → {end} ({tz})"),
    "path": ("路径", "Path"),
    "messages": ("消息（未发送）", "Messages (not sent)"),
    "tasks": ("任务", "Tasks"),
    "problems": ("问题", "Problems"),
    "none": ("（无）", "(none)"),
    "skipped": ("跳过：{reason}", "skipped: {reason}"),
    "given": ("给定答案", "given answers"),
    "default": ("默认答案", "default answers"),
    "open": ("未完成", "not answered"),
    "due": ("截止 {at}", "due {at}"),
}


def _label(lang: str, key: str, **values: Any) -> str:
    zh, en = _LABELS[key]
    return (en if lang == "en" else zh).format(**values)


def _source(state: State, flow: str) -> str:
    path = Path(flow)
    if path.is_file():
        return path.read_bytes().decode("utf-8-sig")
    from engine.store.definitions import latest_flow_version

    with state.engine().session() as s:
        return latest_flow_version(s, flow).source


def summary(report: dict[str, Any], lang: str) -> str:
    """The report as a few readable lines, times in the flow's time zone."""
    tz = ZoneInfo(report.get("timezone") or "Asia/Shanghai")

    def at(value: str | None) -> str:
        return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M") if value else "-"

    lines = [
        _label(lang, "title", flow=report["flow"], customer=report["customer_id"], status=report["status"],
               outcome=report["outcome"] or "-"),
        _label(lang, "span", start=at(report["started_at"]), end=at(report["ended_at"]), tz=tz.key),
        "", _label(lang, "path") + ":",
    ]
    for item in report["path"]:
        flow = f"{item['flow']}/" if item.get("flow") else ""
        note = f"  {item['note']}" if item["note"] else ""
        lines.append(f"  {at(item['at'])}  {flow}{item['step']} ({item['kind']}){note}")
    lines += ["", _label(lang, "messages") + ":"]
    for m in report["messages"]:
        skipped = f"  [{_label(lang, 'skipped', reason=m['skipped'])}]" if m["skipped"] else ""
        lines.append(f"  {at(m['at'])}  {m['step']}  {m['channel'] or m['via']} → {m['to'] or '-'} ({m['connector']}){skipped}")
        if m["subject"]:
            lines.append(f"      {m['subject']}")
        if m["text"]:
            lines += [f"      {line}" for line in str(m["text"]).splitlines()]
    if not report["messages"]:
        lines.append("  " + _label(lang, "none"))
    lines += ["", _label(lang, "tasks") + ":"]
    for t in report["tasks"]:
        how = _label(lang, t["answered_by"]) if t["answered_by"] else _label(lang, "open")
        due = f"  {_label(lang, 'due', at=at(t['due']))}" if t["due"] else ""
        lines.append(f"  {t['step']}  {t['title']}  → {t['assignee'] or '-'}{due}")
        answers = json.dumps(t["answers"], ensure_ascii=False) if t["answers"] is not None else ""
        lines.append(f"      {how} {answers}".rstrip())
    if not report["tasks"]:
        lines.append("  " + _label(lang, "none"))
    if report["problems"]:
        lines += ["", _label(lang, "problems") + ":"]
        lines += [f"  {p['node'] + ': ' if p.get('node') else ''}{p['message']}" for p in report["problems"]]
    return "\n".join(lines)


@main.command("dry-run")
@click.argument("flow")
@click.option("--customer", "customer_id", required=True, type=int, help="The customer to play the flow for.")
@click.option("--answers", "answers_file", type=click.Path(exists=True, dir_okay=False),
              help='A JSON file of answers per step id, e.g. {"call": {"reason": "price", "recovered": false}}.')
@click.option("--start", metavar="ISO-8601", help="When the flow starts (default: now).")
@click.option("--data", default=None, help="Start variables as JSON (default: a form trigger's default answers).")
@click.option("--lang", default="zh", type=click.Choice(["zh", "en"]), show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.pass_obj
@guarded
def dry_run_command(state: State, flow: str, customer_id: int, answers_file: str | None, start: str | None,
                    data: str | None, lang: str, as_json: bool) -> None:
    """Play FLOW (a YAML file or a deployed flow id) for a customer on a virtual clock; nothing is sent."""
    from engine.designer.dry_run import DryRunInvalid, dry_run

    state.as_json = state.as_json or as_json
    answers = parse_json(Path(answers_file).read_text(encoding="utf-8-sig"), "--answers") if answers_file else None
    begin = None
    if start:
        try:
            begin = parse_instant(start)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--start") from exc
    try:
        report = dry_run(state.engine(), _source(state, flow), customer_id, answers=answers, start=begin,
                         data=parse_json(data, "--data") if data is not None else None, language=lang)
    except DryRunInvalid as exc:
        if state.as_json:
            click.echo(json.dumps({"ok": False, "problems": exc.problems}, ensure_ascii=False, indent=2))
        else:
            for p in exc.problems:
                where = f"{flow}:{p['line']}:{p['column']}: " if p["line"] else ""
                click.echo(f"{where}{p['message']}", err=True)
        sys.exit(EXIT_INVALID)
    state.emit(report, lambda r: summary(r, lang))
    if report["status"] == "failed":
        sys.exit(EXIT_INVALID)

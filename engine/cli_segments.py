"""``careflow segments …``, ``careflow customers risk ID`` and ``careflow reports nps``."""

from __future__ import annotations

from datetime import date
from typing import Any

import click

from engine.cli import State, customers, guarded, parse_json


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("zh") or value.get("en") or "")
    return str(value or "")


@click.group()
def segments() -> None:
    """Grading (RFM, A/B/C), churn risk and saved customer segments."""


@segments.command("list")
@click.pass_obj
@guarded
def segments_list(state: State) -> None:
    rows = state.engine().segments()
    state.emit(rows, lambda d: "\n".join(
        f"{s['name']:<26} {s['members']:>7}  {_text(s['title'])}{'  (built-in)' if s['builtin'] else ''}" for s in d)
        or "no segments")


@segments.command("show")
@click.argument("name")
@click.pass_obj
@guarded
def segments_show(state: State, name: str) -> None:
    state.emit(state.engine().segment(name))


@segments.command("create")
@click.option("--data", "data", required=True,
              help='The segment as JSON, e.g. {"name": "vip_sh", "title": {"zh": "上海 VIP", "en": "Shanghai VIP"}, '
                   '"filter": {"grade": ["A"], "region": ["上海"]}}.')
@click.option("--by", default=None, help="Who creates it (for the audit log).")
@click.pass_obj
@guarded
def segments_create(state: State, data: str, by: str | None) -> None:
    seg = state.engine().create_segment(parse_json(data, "--data"), actor=by)
    state.emit(seg, f"segment {seg['name']} created; members are filled in by `careflow segments recompute`")


@segments.command("update")
@click.argument("name")
@click.option("--data", "data", required=True, help='Changed title and/or filter as JSON.')
@click.option("--by", default=None)
@click.pass_obj
@guarded
def segments_update(state: State, name: str, data: str, by: str | None) -> None:
    state.emit(state.engine().update_segment(name, parse_json(data, "--data"), actor=by), f"segment {name} changed")


@segments.command("delete")
@click.argument("name")
@click.option("--by", default=None)
@click.pass_obj
@guarded
def segments_delete(state: State, name: str, by: str | None) -> None:
    state.engine().delete_segment(name, actor=by)
    state.emit({"ok": True}, f"segment {name} deleted")


@segments.command("members")
@click.argument("name")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 100000))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.pass_obj
@guarded
def segments_members(state: State, name: str, limit: int, offset: int) -> None:
    total, rows = state.engine().segment_members(name, limit=limit, offset=offset)
    state.emit({"total": total, "items": rows}, lambda d: "\n".join(
        [f"{total} member(s)"] + [
            f"{c['id']:>8}  {c['name']:<20} grade={c['grade'] or '-'} rfm={c['rfm']['cell'] or '-'} "
            f"churn={c['churn_score'] if c['churn_score'] is not None else '-'}" for c in d["items"]]))


@segments.command("recompute")
@click.option("--customer", "customer_ids", multiple=True, type=int, help="Only these customers (repeatable).")
@click.option("--by", default=None)
@click.pass_obj
@guarded
def segments_recompute(state: State, customer_ids: tuple[int, ...], by: str | None) -> None:
    result = state.engine().recompute_segments(list(customer_ids) or None, actor=by)

    def text(r: dict[str, Any]) -> str:
        g, m = r["grading"], r["segments"]
        lines = [f"graded {g['customers']} customer(s), {g['changed']} changed; {m['instances_started']} flow(s) started"]
        lines += [f"  {name:<26} {m['members'][name]:>7} members  +{m['entered'][name]} -{m['left'][name]}" for name in m["members"]]
        return "\n".join(lines)

    state.emit(result, text)


@segments.command("settings")
@click.option("--set", "values", default=None,
              help='Change settings as JSON, e.g. {"recompute_at": "02:30", "grade_a_min": 200000, '
                   '"recency_days_edges": [30, 60, 90, 180]}; null edges mean quintiles.')
@click.option("--by", default=None)
@click.pass_obj
@guarded
def segments_settings(state: State, values: str | None, by: str | None) -> None:
    engine = state.engine()
    result = engine.set_grading_settings(parse_json(values, "--set"), actor=by) if values else engine.grading_settings()
    state.emit(result)


@customers.command("risk")
@click.argument("customer_id", type=int)
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@click.pass_obj
@guarded
def customers_risk(state: State, customer_id: int, lang: str) -> None:
    """Grade, RFM cell, churn risk with its reason, latest survey scores and segments of a customer."""
    info = state.engine().customer_grading(customer_id)

    def text(d: dict[str, Any]) -> str:
        reason = (d["churn_reason"] or {}).get(lang) or ("无购买记录" if lang == "zh" else "no purchases")
        score = "-" if d["churn_score"] is None else f"{d['churn_score']:.2f}"
        return "\n".join([
            f"{d['id']} {d['name']}: grade {d['grade'] or '-'}, RFM {d['rfm']['cell'] or '-'}",
            f"churn risk {score}: {reason}",
            f"NPS {d['last_nps'] if d['last_nps'] is not None else '-'}, "
            f"satisfaction {d['last_satisfaction'] if d['last_satisfaction'] is not None else '-'}",
            f"segments: {', '.join(d['segments']) or '-'}",
        ])

    state.emit(info, text)


@click.group()
def reports() -> None:
    """Figures for the dashboard."""


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=name) from None


@reports.command("nps")
@click.option("--by", "by", type=click.Choice(["month", "flow"]), default="month", show_default=True)
@click.option("--from", "start", default=None, metavar="YYYY-MM-DD")
@click.option("--to", "end", default=None, metavar="YYYY-MM-DD")
@click.pass_obj
@guarded
def reports_nps(state: State, by: str, start: str | None, end: str | None) -> None:
    """NPS (% promoters − % detractors) per month or per flow."""
    result = state.engine().nps_report(by, _day(start, "--from"), _day(end, "--to"))

    def text(r: dict[str, Any]) -> str:
        def line(key: str, g: dict[str, Any]) -> str:
            nps = "-" if g["nps"] is None else f"{g['nps']:+.1f}"
            return f"{key:<20} NPS {nps:>6}  n={g['answers']} promoters={g['promoters']} passives={g['passives']} detractors={g['detractors']}"
        return "\n".join([line(g["key"] or "-", g) for g in r["groups"]] + [line("total", r["total"])])

    state.emit(result, text)

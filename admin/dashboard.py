"""The dashboard: instances started and completed per flow, open and overdue tasks, SLA
compliance, messages sent per channel and NPS per month, drawn as server-side SVG bar charts.

Figures are counted over the records the user may see (the API's record scope), over the last
``WINDOW_DAYS`` days of the engine's clock. Messages are not tied to a record scope, so that chart
is shown to those who may read the delivery log (``connectors.admin``). NPS comes from the
satisfaction survey's ``nps`` answer (0-10) stored in the instances' variables: promoters (9-10)
minus detractors (0-6), in percent, per month the answer arrived.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import render_template
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select

from admin import bp
from admin.access import careflow, principal, requires
from engine.auth.scope import role_allows, visible_instances, visible_tasks
from engine.i18n import TIMEZONE, localized
from engine.store.definitions import latest_flow_versions
from engine.store.models import HistoryEntry, Instance, OutboxMessage, Task

WINDOW_DAYS = 30
SURVEY = "satisfaction_survey"
BAR_WIDTH = 320


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    shown: str
    width: int
    series: int = 0


@dataclass(frozen=True)
class Chart:
    id: str
    title: Any
    legend: tuple[Any, ...]
    rows: tuple[tuple[str, tuple[Bar, ...]], ...]
    empty: Any = None
    signed: bool = False

    @property
    def height(self) -> int:
        return sum(8 + 18 * len(bars) for _label, bars in self.rows) + 8


def chart(id_: str, title: Any, legend: Sequence[Any], rows: Iterable[tuple[str, Sequence[float | None]]],
          empty: Any, unit: str = "", signed: bool = False) -> Chart:
    """Scale every series of every row to the widest bar (absolute values for signed figures)."""
    data = [(label, list(values)) for label, values in rows]
    top = max((abs(v) for _l, values in data for v in values if v is not None), default=0) or 1
    built = []
    for label, values in data:
        bars = tuple(Bar(label, v, f"{round(v)}{unit}" if v is not None else "–",
                         int(BAR_WIDTH * abs(v) / top) if v is not None else 0, i)
                     for i, v in enumerate(values))
        built.append((label, bars))
    has_data = any(v for _l, values in data for v in values if v)
    return Chart(id_, title, tuple(legend), tuple(built) if has_data else (), empty, signed)


def nps(scores: Sequence[int]) -> float:
    promoters = sum(1 for s in scores if s >= 9)
    detractors = sum(1 for s in scores if s <= 6)
    return 100.0 * (promoters - detractors) / len(scores)


def nps_by_month(s: Any, scope: Any) -> dict[str, list[int]]:
    """Survey ``nps`` answers per month (Shanghai time) of the history entry that delivered them."""
    months: dict[str, list[int]] = defaultdict(list)
    candidates = s.scalars(select(Instance).where(scope))
    zone = ZoneInfo(TIMEZONE)
    for instance in candidates:
        answer = ((instance.state or {}).get("vars") or {}).get(SURVEY)
        if not isinstance(answer, dict) or not isinstance(answer.get("nps"), int) or isinstance(answer.get("nps"), bool):
            continue
        arrived = instance.ended_at or instance.started_at
        for entry in s.scalars(select(HistoryEntry).where(HistoryEntry.instance_id == instance.id).order_by(HistoryEntry.id)):
            if any(isinstance(e, dict) and e.get("type") == "event_received" and e.get("event") == SURVEY for e in entry.entries or []):
                arrived = entry.at
        months[arrived.astimezone(zone).strftime("%Y-%m")].append(int(answer["nps"]))
    return months


def figures() -> dict[str, Any]:
    cf = careflow()
    who = principal()
    now = cf.clock.now()
    since = now - timedelta(days=WINDOW_DAYS)
    instances, tasks = visible_instances(who), visible_tasks(who)
    with cf.session() as s:
        names = {v.flow_id: str(localized(dict(v.name or {})) or v.flow_id) for v in latest_flow_versions(s)}
        started = dict(s.execute(select(Instance.flow_id, func.count()).where(instances, Instance.started_at >= since)
                                 .group_by(Instance.flow_id)).all())
        completed = dict(s.execute(select(Instance.flow_id, func.count())
                                   .where(instances, Instance.status == "completed", Instance.ended_at >= since)
                                   .group_by(Instance.flow_id)).all())
        open_by_flow = dict(s.execute(select(Instance.flow_id, func.count()).join(Task, Task.instance_id == Instance.id)
                                      .where(tasks, Task.status == "open").group_by(Instance.flow_id)).all())
        overdue_by_flow = dict(s.execute(select(Instance.flow_id, func.count()).join(Task, Task.instance_id == Instance.id)
                                         .where(tasks, Task.status == "open", Task.due_at < now).group_by(Instance.flow_id)).all())
        sla_rows = s.execute(select(Instance.flow_id, Task.completed_at, Task.due_at).join(Task, Task.instance_id == Instance.id)
                             .where(tasks, Task.status == "completed", Task.due_at.is_not(None), Task.completed_at >= since)).all()
        channels: dict[str, int] = {}
        if role_allows(who, "connectors.admin"):
            channels = {c or "-": n for c, n in s.execute(
                select(OutboxMessage.channel, func.count()).where(OutboxMessage.status == "sent", OutboxMessage.sent_at >= since)
                .group_by(OutboxMessage.channel)).all()}
        months = nps_by_month(s, instances)
    sla: dict[str, list[bool]] = defaultdict(list)
    for flow_id, done_at, due_at in sla_rows:
        sla[flow_id].append(done_at <= due_at)
    flows = sorted(set(started) | set(completed) | set(names))
    label = lambda f: names.get(f, f)  # noqa: E731
    charts = [
        chart("instances", _l("Instances started and completed per flow"), (_l("Started"), _l("Completed")),
              [(label(f), (started.get(f, 0), completed.get(f, 0))) for f in flows], _l("No instances in this period.")),
        chart("tasks", _l("Open and overdue tasks per flow"), (_l("Open"), _l("Overdue")),
              [(label(f), (open_by_flow.get(f, 0), overdue_by_flow.get(f, 0))) for f in flows if f in open_by_flow],
              _l("No open tasks.")),
        chart("sla", _l("SLA compliance: tasks completed by their due time"), (_l("On time"),),
              [(label(f), (100.0 * sum(v) / len(v),)) for f, v in sorted(sla.items())],
              _l("No task with a due time was completed in this period."), unit="%"),
    ]
    if role_allows(who, "connectors.admin"):
        charts.append(chart("channels", _l("Messages sent per channel"), (_l("Sent"),),
                            sorted(channels.items()) and [(c, (n,)) for c, n in sorted(channels.items())],
                            _l("No message was sent in this period.")))
    charts.append(chart("nps", _l("NPS per month (satisfaction survey)"), (_l("NPS"),),
                        [(m, (nps(v),)) for m, v in sorted(months.items())],
                        _l("No survey answer with a recommendation score yet."), signed=True))
    all_sla = [ok for v in sla.values() for ok in v]
    totals = {
        "started": sum(started.values()), "completed": sum(completed.values()),
        "open": sum(open_by_flow.values()), "overdue": sum(overdue_by_flow.values()),
        "sla": round(100.0 * sum(all_sla) / len(all_sla)) if all_sla else None,
        "sent": sum(channels.values()) if channels else 0,
        "answers": sum(len(v) for v in months.values()),
    }
    return {"charts": charts, "totals": totals, "since": since, "now": now, "window": WINDOW_DAYS,
            "nps_months": {m: (round(nps(v)), len(v)) for m, v in sorted(months.items())}}


@bp.get("/")
@requires("instances.read", "tasks.read")
def dashboard() -> Any:
    return render_template("admin/dashboard.html", **figures(), show_channels=role_allows(principal(), "connectors.admin"))

"""RFM scores, A/B/C grades and churn risk, computed for every customer in one batched pass.

The figures come from the customer's purchase columns (first and last purchase, count, total),
which imports of orders keep up to date. Everything is read with one query and only the rows
whose results changed are written, with one executemany UPDATE: a Python loop of single-row
updates would take minutes for 100,000 customers.
"""

from __future__ import annotations

import json
import math
import statistics
from bisect import bisect_left
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Text, bindparam, cast, select, update
from sqlalchemy.orm import Session

from engine.segments.settings import GradingSettings
from engine.store.models import Customer

#: Customers the recompute leaves alone: only a tombstone is left of a deleted one.
SKIPPED_STATUSES = ("deleted",)
_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Figures:
    """What grading reads of one customer."""

    id: int
    first_purchase_at: datetime | None
    last_purchase_at: datetime | None
    purchase_count: int
    purchase_total: float
    expected_value: float | None


@dataclass(frozen=True, slots=True)
class Churn:
    score: float
    days_since: int
    interval_days: float
    fallback: bool
    single: bool = True

    def explanation(self) -> dict[str, str]:
        every = _days_text(self.interval_days)
        if self.fallback and not self.single:
            return {
                "zh": f"{self.days_since} 天未购买，首次购买时间未知，按约每 {every} 天购买一次估计",
                "en": f"{self.days_since} days without a purchase; first purchase unknown, so every {every} days is assumed",
            }
        if self.fallback:
            return {
                "zh": f"{self.days_since} 天未购买，仅购买过一次，按约每 {every} 天购买一次估计",
                "en": f"{self.days_since} days without a purchase; only one purchase, so every {every} days is assumed",
            }
        return {
            "zh": f"{self.days_since} 天未购买，平时约每 {every} 天购买一次",
            "en": f"{self.days_since} days without a purchase; usually buys every {every} days",
        }


def _days_text(days: float) -> str:
    return str(int(round(days))) if days >= 1 else f"{days:.1f}"


def grade_for(value: float | None, settings: GradingSettings) -> str:
    """A/B/C by value, with the thresholds onboarding grades new customers by."""
    v = value or 0.0
    if v >= settings.grade_a_min:
        return "A"
    return "B" if v >= settings.grade_b_min else "C"


def customer_value(f: Figures) -> float:
    """The larger of what the customer bought and what they are expected to buy."""
    return max(f.purchase_total or 0.0, f.expected_value or 0.0)


def days_since(then: datetime, now: datetime) -> int:
    return max(0, math.floor((now - then).total_seconds() / 86400))


def churn_of(f: Figures, now: datetime, settings: GradingSettings) -> Churn | None:
    """Days since the last purchase ÷ the customer's usual interval between purchases.

    The usual interval is the mean gap, (last − first) ÷ (count − 1); a customer with one
    purchase (or no known first purchase) is assumed to buy every ``churn_fallback_days``.
    1 means "about when they usually buy again"; 2, twice as long as usual.
    """
    if not f.purchase_count or f.last_purchase_at is None:
        return None
    since = days_since(f.last_purchase_at, now)
    fallback = True
    interval = float(settings.churn_fallback_days)
    if f.purchase_count >= 2 and f.first_purchase_at is not None and f.last_purchase_at > f.first_purchase_at:
        gap = (f.last_purchase_at - f.first_purchase_at).total_seconds() / 86400 / (f.purchase_count - 1)
        interval, fallback = max(gap, 1.0), False
    return Churn(score=round(since / interval, 2), days_since=since, interval_days=round(interval, 1), fallback=fallback,
                 single=f.purchase_count < 2)


def quintile_edges(values: Sequence[float]) -> list[float] | None:
    """Four edges that split ``values`` into five groups of (about) equal size; None if too few."""
    if len(values) < 2:
        return None
    return list(statistics.quantiles(values, n=5, method="inclusive"))


def score_high(value: float, edges: list[float] | None) -> int:
    """1–5, higher for larger values: 1 up to the first edge, 5 above the last."""
    return 3 if edges is None else 1 + bisect_left(edges, value)


def score_low(value: float, edges: list[float] | None) -> int:
    """1–5, higher for smaller values (recency: fewer days since the last purchase is better)."""
    return 3 if edges is None else 5 - bisect_left(edges, value)


@dataclass
class GradingReport:
    customers: int = 0
    changed: int = 0
    edges: dict[str, list[float] | None] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"customers": self.customers, "changed": self.changed, "edges": self.edges}


_COLUMNS = (
    Customer.id, Customer.first_purchase_at, Customer.last_purchase_at, Customer.purchase_count,
    Customer.purchase_total, Customer.expected_value,
    Customer.grade, Customer.rfm_r, Customer.rfm_f, Customer.rfm_m, Customer.churn_score,
    # Compared as stored text: decoding 100,000 JSON values only to compare them would cost more.
    cast(Customer.churn_reason, Text).label("reason_text"),
)
_WRITTEN = ("grade", "rfm_r", "rfm_f", "rfm_m", "churn_score", "churn_reason", "graded_at")


def recompute_grades(
    session: Session, now: datetime, settings: GradingSettings, customer_ids: Collection[int] | None = None
) -> GradingReport:
    """Write RFM scores, grade and churn risk of every customer (or of ``customer_ids`` only).

    Quintile edges always come from all customers with purchases, so grading a few imported
    customers places them among everyone else.
    """
    rows = session.execute(
        select(*_COLUMNS).where(Customer.status.not_in(SKIPPED_STATUSES)).order_by(Customer.id)
    ).all()
    buyers = [r for r in rows if r.purchase_count and r.last_purchase_at is not None]
    edges = {
        "recency_days": settings.recency_days_edges or quintile_edges([days_since(r.last_purchase_at, now) for r in buyers]),
        "frequency": settings.frequency_edges or quintile_edges([float(r.purchase_count) for r in buyers]),
        "monetary": settings.monetary_edges or quintile_edges([float(r.purchase_total or 0) for r in buyers]),
    }
    wanted = set(customer_ids) if customer_ids is not None else None
    changes: list[tuple[Any, ...]] = []
    report = GradingReport(edges=edges)
    r_edges, f_edges, m_edges = edges["recency_days"], edges["frequency"], edges["monetary"]
    for r in rows:
        if wanted is not None and r.id not in wanted:
            continue
        report.customers += 1
        count, total = r.purchase_count or 0, r.purchase_total or 0.0
        f = Figures(r.id, r.first_purchase_at, r.last_purchase_at, count, total, r.expected_value)
        rfm_r = rfm_f = rfm_m = None
        if count and r.last_purchase_at is not None:
            rfm_r = score_low(days_since(r.last_purchase_at, now), r_edges)
            rfm_f = score_high(float(count), f_edges)
            rfm_m = score_high(float(total), m_edges)
        churn = churn_of(f, now, settings)
        # Without any figure of value (no purchase, no expected value) a grade given by hand stays.
        known_value = count > 0 or total > 0 or r.expected_value is not None
        grade = grade_for(customer_value(f), settings) if known_value or r.grade is None else r.grade
        score = churn.score if churn else None
        reason = json.dumps(churn.explanation(), ensure_ascii=False) if churn else None
        if (grade, rfm_r, rfm_f, rfm_m, score, reason) != (r.grade, r.rfm_r, r.rfm_f, r.rfm_m, r.churn_score, r.reason_text):
            changes.append((r.id, grade, rfm_r, rfm_f, rfm_m, score, reason))
    _write(session, changes, now)
    report.changed = len(changes)
    return report


def _write(session: Session, changes: list[tuple[Any, ...]], now: datetime) -> None:
    """One executemany UPDATE per batch, parameters prepared here rather than row by row by SQLAlchemy
    (which spends more time on 100,000 parameter sets than the database spends on the rows)."""
    if not changes:
        return
    connection = session.connection()
    dialect = connection.dialect
    table = Customer.__table__
    values: dict[str, Any] = {k: bindparam(f"v_{k}", type_=table.c[k].type) for k in _WRITTEN}
    # The reason arrives as JSON text; PostgreSQL needs it cast, SQLite stores the text as it is.
    reason = bindparam("v_churn_reason", type_=Text())
    values["churn_reason"] = cast(reason, table.c.churn_reason.type) if dialect.name == "postgresql" else reason
    statement = update(table).where(table.c.id == bindparam("b_id")).values(values)
    compiled = statement.compile(dialect=dialect)
    graded_at = (table.c.graded_at.type.bind_processor(dialect) or (lambda v: v))(now)
    names = ("b_id", "v_grade", "v_rfm_r", "v_rfm_f", "v_rfm_m", "v_churn_score", "v_churn_reason")
    order = compiled.positiontup if compiled.positional else None
    params: list[Any] = []
    for row in changes:
        named = dict(zip(names, row))
        named["v_graded_at"] = graded_at
        params.append(tuple(named[n] for n in order) if order else named)
    sql = compiled.string
    for start in range(0, len(params), _BATCH):
        connection.exec_driver_sql(sql, params[start:start + _BATCH])

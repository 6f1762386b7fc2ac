"""The grading settings an admin may change: RFM bin edges, grade thresholds, churn fallback, job time.

Stored as JSON in ``app_setting`` under the key ``grading``; missing keys take the defaults below.
The grade thresholds are the ones the onboarding flow grades new customers by (workflows/onboarding.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import jsonschema
from sqlalchemy.orm import Session

from engine.errors import FieldError, SubmissionInvalid
from engine.store.settings import merge_setting, stored_setting

KEY = "grading"

_EDGES = {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "recompute_at": {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"},
        "timezone": {"type": "string", "minLength": 1},
        "grade_a_min": {"type": "number", "minimum": 0},
        "grade_b_min": {"type": "number", "minimum": 0},
        "recency_days_edges": {"anyOf": [{"type": "null"}, _EDGES]},
        "frequency_edges": {"anyOf": [{"type": "null"}, _EDGES]},
        "monetary_edges": {"anyOf": [{"type": "null"}, _EDGES]},
        "churn_fallback_days": {"type": "number", "exclusiveMinimum": 0},
    },
}


@dataclass(frozen=True)
class GradingSettings:
    #: When the daily recompute runs, in ``timezone``.
    recompute_at: str = "03:00"
    timezone: str = "Asia/Shanghai"
    #: Value (the larger of the purchase total and the expected value) for grade A and B; below B is C.
    grade_a_min: float = 100_000
    grade_b_min: float = 20_000
    #: Four ascending edges per RFM dimension; ``None`` means quintiles of the current customers.
    recency_days_edges: list[float] | None = None
    frequency_edges: list[float] | None = None
    monetary_edges: list[float] | None = None
    #: The usual purchase interval assumed for a customer with a single purchase.
    churn_fallback_days: float = 90
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        return out


def check(values: Mapping[str, Any]) -> None:
    """SubmissionInvalid naming each bad field."""
    errors = [
        FieldError(e.json_path, str(e.absolute_path[0]) if e.absolute_path else "", e.message[:300], str(e.validator))
        for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(dict(values))
    ]
    merged = {**GradingSettings().as_dict(), **values}
    if not errors and merged["grade_a_min"] < merged["grade_b_min"]:
        errors.append(FieldError("$.grade_a_min", "grade_a_min", "grade_a_min must not be below grade_b_min", "minimum"))
    for name in ("recency_days_edges", "frequency_edges", "monetary_edges"):
        edges = values.get(name)
        if isinstance(edges, list) and all(isinstance(x, (int, float)) for x in edges) and edges != sorted(edges):
            errors.append(FieldError(f"$.{name}", name, f"{name} must be in ascending order", "order"))
    if errors:
        raise SubmissionInvalid(errors)


def load(session: Session) -> GradingSettings:
    stored = stored_setting(session, KEY)
    known = {k: v for k, v in stored.items() if k in GradingSettings.__dataclass_fields__ and k != "extra"}
    return GradingSettings(**known)


def save(session: Session, values: Mapping[str, Any], now: datetime, by: str | None) -> GradingSettings:
    """Merge ``values`` into the stored settings (``None`` for an edge list restores quintiles)."""
    check(values)
    merge_setting(session, KEY, values, now, by)
    return load(session)

"""The customer store: profile, purchase figures, timeline, and the people who serve customers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from engine.calendar import birthday_key
from engine.errors import Conflict, CustomerLookupError, FieldError, SubmissionInvalid
from engine.contact import e164, normalize_email
from engine.store.models import Customer, Task, TimelineEntry, User

#: Profile fields a flow or the API may write; anything else lands in ``attributes``.
PROFILE_FIELDS = (
    "name",
    "phone",
    "email",
    "birthday",
    "birthday_calendar",
    "region",
    "grade",
    "expected_value",
    "owner",
    "tags",
    "preferred_channel",
    "language",
    "consent",
    "status",
    "last_purchase_at",
    "purchase_count",
    "purchase_total",
)
GRADES = ("A", "B", "C")
CHANNELS = ("email", "sms", "wecom", "dingtalk", "feishu", "phone")
STATUSES = ("active", "at_risk", "lost")


def customer_dict(c: Customer) -> dict[str, Any]:
    """The customer as flows see it: plain JSON-able values, custom attributes alongside."""
    out: dict[str, Any] = dict(c.attributes or {})
    out.update(
        id=c.id,
        name=c.name,
        phone=c.phone,
        email=c.email,
        birthday=c.birthday.isoformat() if c.birthday else None,
        birthday_calendar=c.birthday_calendar,
        region=c.region,
        grade=c.grade,
        expected_value=c.expected_value,
        owner=c.owner,
        tags=list(c.tags or []),
        preferred_channel=c.preferred_channel,
        language=c.language,
        consent=dict(c.consent or {}),
        status=c.status,
        last_purchase_at=c.last_purchase_at.isoformat() if c.last_purchase_at else None,
        purchase_count=c.purchase_count,
        purchase_total=c.purchase_total,
        created_at=c.created_at.isoformat(),
    )
    return out


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise CustomerLookupError(customer_id)
    return customer


def _clean(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Normalise profile values; collect every field error instead of stopping at the first."""
    out = dict(data)
    errors: list[FieldError] = []

    def bad(name: str, message: str) -> None:
        errors.append(FieldError(f"$.{name}", name, message, "format"))

    for key in ("name", "region"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip()
    if "name" in out and not out["name"]:
        bad("name", "name must not be empty")
    if out.get("phone"):
        phone = e164(str(out["phone"]))
        if phone is None:
            bad("phone", f"{out['phone']!r} is not a valid phone number")
        out["phone"] = phone
    elif "phone" in out:
        out["phone"] = None
    if out.get("email"):
        email = normalize_email(str(out["email"]))
        if email is None:
            bad("email", f"{out['email']!r} is not a valid e-mail address")
        out["email"] = email
    elif "email" in out:
        out["email"] = None
    if out.get("birthday") and isinstance(out["birthday"], str):
        try:
            out["birthday"] = date.fromisoformat(out["birthday"])
        except ValueError:
            bad("birthday", f"{out['birthday']!r} is not a date (YYYY-MM-DD)")
    if isinstance(out.get("last_purchase_at"), str):
        try:
            out["last_purchase_at"] = datetime.fromisoformat(out["last_purchase_at"])
        except ValueError:
            bad("last_purchase_at", f"{out['last_purchase_at']!r} is not a date-time")
    checks = (("grade", GRADES), ("preferred_channel", CHANNELS), ("status", STATUSES), ("birthday_calendar", ("solar", "lunar")))
    for key, allowed in checks:
        if out.get(key) is not None and out[key] not in allowed:
            bad(key, f"{out[key]!r} is not one of {', '.join(allowed)}")
    return out, errors


def _apply(customer: Customer, values: Mapping[str, Any]) -> list[str]:
    changed: list[str] = []
    attributes = dict(customer.attributes or {})
    for key, value in values.items():
        if key in PROFILE_FIELDS:
            if getattr(customer, key) != value:
                setattr(customer, key, value)
                changed.append(key)
        elif key not in ("id", "created_at"):
            if attributes.get(key) != value:
                attributes[key] = value
                changed.append(key)
    if attributes != (customer.attributes or {}):
        customer.attributes = attributes
    if customer.birthday is not None:
        customer.birthday_key = birthday_key(customer.birthday, customer.birthday_calendar or "solar")
    else:
        customer.birthday_key = None
    return changed


def _check_unique(session: Session, values: Mapping[str, Any], exclude: int | None = None) -> None:
    conds = [getattr(Customer, k) == values[k] for k in ("phone", "email") if values.get(k)]
    if not conds:
        return
    query = select(Customer.id).where(or_(*conds))
    if exclude is not None:
        query = query.where(Customer.id != exclude)
    other = session.scalar(query.limit(1))
    if other is not None:
        raise Conflict(f"customer {other} already has this phone or e-mail")


def find_customer(session: Session, phone: str | None = None, email: str | None = None) -> Customer | None:
    conds = []
    if phone and (p := e164(phone)):
        conds.append(Customer.phone == p)
    if email and (e := normalize_email(email)):
        conds.append(Customer.email == e)
    if not conds:
        return None
    return session.scalars(select(Customer).where(or_(*conds)).limit(1)).first()


def create_customer(session: Session, data: Mapping[str, Any], now: datetime) -> Customer:
    """A new customer; a duplicate phone or e-mail is a Conflict, bad values a SubmissionInvalid."""
    values, errors = _clean(data)
    if not values.get("name"):
        errors.append(FieldError("$.name", "name", "name is required", "required"))
    if errors:
        raise SubmissionInvalid(errors)
    _check_unique(session, values)
    customer = Customer(
        name=values["name"], tags=[], consent={}, attributes={}, created_at=now, updated_at=now,
        birthday_calendar="solar", language="zh", status="active", purchase_count=0, purchase_total=0.0,
    )
    _apply(customer, values)
    session.add(customer)
    session.flush()
    add_timeline(session, customer.id, now, "created", {"zh": "客户已创建", "en": "Customer created"})
    return customer


def update_customer(session: Session, customer: Customer, data: Mapping[str, Any], now: datetime) -> list[str]:
    """Apply changes; returns the names of the fields that changed."""
    values, errors = _clean(data)
    if errors:
        raise SubmissionInvalid(errors)
    _check_unique(session, values, exclude=customer.id)
    changed = _apply(customer, values)
    if changed:
        customer.updated_at = now
    return changed


def add_timeline(
    session: Session,
    customer_id: int,
    at: datetime,
    kind: str,
    title: Mapping[str, str],
    data: Mapping[str, Any] | None = None,
    instance_id: int | None = None,
) -> None:
    session.add(
        TimelineEntry(customer_id=customer_id, at=at, kind=kind, title=dict(title), data=dict(data or {}), instance_id=instance_id)
    )


def users_in_role(session: Session, role: str) -> list[User]:
    users = session.scalars(select(User).where(User.active.is_(True)).order_by(User.username))
    return [u for u in users if role in (u.roles or [])]


def pick_user(session: Session, role: str, strategy: str, customer: Mapping[str, Any] | None) -> str | None:
    """Choose one active user of a role: by region first, then the least loaded, or in turn."""
    candidates = users_in_role(session, role)
    if not candidates:
        return None
    if strategy == "region_then_least_loaded" and customer and customer.get("region"):
        local = [u for u in candidates if u.region and u.region == customer["region"]]
        candidates = local or candidates
    names = [u.username for u in candidates]
    if strategy == "round_robin":
        last = dict(
            session.execute(
                select(Task.assignee, func.max(Task.id)).where(Task.assignee.in_(names)).group_by(Task.assignee)
            ).all()
        )
        return min(names, key=lambda n: (last.get(n, 0), n))
    tasks = dict(
        session.execute(
            select(Task.assignee, func.count()).where(Task.status == "open", Task.assignee.in_(names)).group_by(Task.assignee)
        ).all()
    )
    owned = dict(
        session.execute(select(Customer.owner, func.count()).where(Customer.owner.in_(names)).group_by(Customer.owner)).all()
    )
    return min(names, key=lambda n: (tasks.get(n, 0) + owned.get(n, 0), n))

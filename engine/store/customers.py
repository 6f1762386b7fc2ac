"""The customer store: profile, purchase figures, timeline, and the people who serve customers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Select, bindparam, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import get_history, instance_state
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql import Executable

from engine.calendar import birthday_key
from engine.errors import Conflict, CustomerLookupError, FieldError, SubmissionInvalid
from engine.contact import e164, normalize_email
from engine.profile import CHANNELS, GRADES, STATUSES, choice_problems
from engine.store.models import Customer, Task, TimelineEntry, User

_T = TypeVar("_T")

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
    "first_purchase_at",
    "purchase_count",
    "purchase_total",
)


#: The columns ``customer_dict`` reads, in the order it first read them.
_DICT_COLUMNS = (
    "birthday", "last_purchase_at", "first_purchase_at", "attributes", "id", "name", "phone", "email",
    "birthday_calendar", "region", "grade", "expected_value", "owner", "tags", "preferred_channel", "language",
    "consent", "status", "purchase_count", "purchase_total", "created_at", "rfm_r", "rfm_f", "rfm_m",
    "churn_score", "last_nps", "last_satisfaction",
)
_DICT_COLUMN_SET = frozenset(_DICT_COLUMNS)


_PROFILE_FIELD_SET = frozenset(PROFILE_FIELDS)


def customer_dict(c: Customer) -> dict[str, Any]:
    """The customer as flows see it: plain JSON-able values, custom attributes alongside."""
    # Read from the loaded values (the object's __dict__, where the ORM keeps them) rather than
    # through the ORM's attribute descriptors: the same values, at a fraction of the cost (a step
    # transition builds this dict several times). A value not loaded (expired) is missing there:
    # then the ORM loads it (the KeyError comes before anything else is done).
    try:
        return _customer_dict(c.__dict__)
    except KeyError:
        v = c.__dict__
        return _customer_dict({key: v[key] if key in v else getattr(c, key) for key in _DICT_COLUMNS})


def _customer_dict(v: Mapping[str, Any]) -> dict[str, Any]:
    birthday, last, first = v["birthday"], v["last_purchase_at"], v["first_purchase_at"]
    # The custom attributes, then the profile (a profile key among the attributes keeps its place
    # and takes the profile's value, as dict.update would give it).
    return {
        **(v["attributes"] or {}),
        "id": v["id"],
        "name": v["name"],
        "phone": v["phone"],
        "email": v["email"],
        "birthday": birthday.isoformat() if birthday else None,
        "birthday_calendar": v["birthday_calendar"],
        "region": v["region"],
        "grade": v["grade"],
        "expected_value": v["expected_value"],
        "owner": v["owner"],
        "tags": list(v["tags"] or []),
        "preferred_channel": v["preferred_channel"],
        "language": v["language"],
        "consent": dict(v["consent"] or {}),
        "status": v["status"],
        "last_purchase_at": last.isoformat() if last else None,
        "first_purchase_at": first.isoformat() if first else None,
        "purchase_count": v["purchase_count"],
        "purchase_total": v["purchase_total"],
        "created_at": v["created_at"].isoformat(),
        # written by the grading recompute and by survey answers (engine/segments)
        "rfm_r": v["rfm_r"],
        "rfm_f": v["rfm_f"],
        "rfm_m": v["rfm_m"],
        "churn_score": v["churn_score"],
        "last_nps": v["last_nps"],
        "last_satisfaction": v["last_satisfaction"],
    }


def load_by_id(session: Session, cls: type[_T], by_id: Executable, pk: int) -> _T | None:
    """``session.get(cls, pk)``, with ``by_id`` (a prebuilt ``select(cls).where(cls.id == :b_id)``)
    as the query: ``session.get`` builds its own each time, which costs more than running it."""
    if identity_key(cls, pk) in session.identity_map:
        return session.get(cls, pk)  # already loaded: the ORM's own rules (expired, deleted...)
    return session.scalars(by_id, {"b_id": pk}).first()  # type: ignore[no-any-return]


_CUSTOMER_BY_ID = select(Customer).where(Customer.id == bindparam("b_id"))


def customer_by_id(session: Session, customer_id: int) -> Customer | None:
    return load_by_id(session, Customer, _CUSTOMER_BY_ID, customer_id)


def get_customer(session: Session, customer_id: int) -> Customer:
    customer = customer_by_id(session, customer_id)
    if customer is None:
        raise CustomerLookupError(customer_id)
    return customer


def _clean(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[FieldError]]:
    """Normalise profile values; collect every field error instead of stopping at the first."""
    out = dict(data)
    errors: list[FieldError] = []
    if not out.keys().isdisjoint(_NORMALISED):  # most flow updates set none: a grade, a channel...
        _normalise(out, errors)
    for key, message in choice_problems(out):
        _bad(errors, key, message)
    consent = out.get("consent")
    if consent is not None and not (isinstance(consent, dict) and all(isinstance(v, bool) for v in consent.values())):
        _bad(errors, "consent", "consent must map channels to true or false, e.g. {\"sms\": false}")
    return out, errors


def _bad(errors: list[FieldError], name: str, message: str) -> None:
    errors.append(FieldError(f"$.{name}", name, message, "format"))


def _normalise(out: dict[str, Any], errors: list[FieldError]) -> None:
    """The contact fields, the name and region, the dates of ``out`` normalised in place."""
    for key in ("name", "region"):
        if isinstance(out.get(key), str):
            out[key] = out[key].strip()
    if "name" in out and not out["name"]:
        _bad(errors, "name", "name must not be empty")
    if out.get("phone"):
        phone = e164(str(out["phone"]))
        if phone is None:
            _bad(errors, "phone", f"{out['phone']!r} is not a valid phone number")
        out["phone"] = phone
    elif "phone" in out:
        out["phone"] = None
    if out.get("email"):
        email = normalize_email(str(out["email"]))
        if email is None:
            _bad(errors, "email", f"{out['email']!r} is not a valid e-mail address")
        out["email"] = email
    elif "email" in out:
        out["email"] = None
    if out.get("birthday") and isinstance(out["birthday"], str):
        try:
            out["birthday"] = date.fromisoformat(out["birthday"])
        except ValueError:
            _bad(errors, "birthday", f"{out['birthday']!r} is not a date (YYYY-MM-DD)")
    for key in ("last_purchase_at", "first_purchase_at"):
        if isinstance(out.get(key), str):
            try:
                out[key] = datetime.fromisoformat(out[key])
            except ValueError:
                _bad(errors, key, f"{out[key]!r} is not a date-time")
                continue
        if isinstance(out.get(key), datetime) and out[key].tzinfo is None:
            _bad(errors, key, f"{out[key].isoformat()!r} needs a time zone (e.g. +08:00)")


#: The fields ``_normalise`` normalises or checks.
_NORMALISED = frozenset({"name", "region", "phone", "email", "birthday", "last_purchase_at", "first_purchase_at"})


def _apply(customer: Customer, values: Mapping[str, Any]) -> list[str]:
    changed, columns = _changes(customer, values)
    for key, value in columns.items():
        setattr(customer, key, value)
    return changed


def _changes(customer: Customer, values: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """(names of the fields ``values`` change, the column values to write); the customer is not touched."""
    changed: list[str] = []
    columns: dict[str, Any] = {}
    loaded = customer.__dict__  # as in customer_dict: the loaded values, the ORM loading any expired one
    attributes = None  # copied when a custom attribute is given: else they are left as they are
    for key, value in values.items():
        if key in _PROFILE_FIELD_SET:
            if (loaded[key] if key in loaded else getattr(customer, key)) != value:
                columns[key] = value
                changed.append(key)
        elif key not in ("id", "created_at"):
            if attributes is None:
                attributes = dict(_current(customer, "attributes") or {})
            if attributes.get(key) != value:
                attributes[key] = value
                changed.append(key)
    if attributes is not None and attributes != (_current(customer, "attributes") or {}):
        columns["attributes"] = attributes
    # _current inlined for the two values every update reads
    birthday = columns["birthday"] if "birthday" in columns else (
        loaded["birthday"] if "birthday" in loaded else getattr(customer, "birthday"))
    key = None
    if birthday is not None:
        calendar = columns["birthday_calendar"] if "birthday_calendar" in columns else _current(customer, "birthday_calendar")
        key = birthday_key(birthday, calendar or "solar")
    if key != (loaded["birthday_key"] if "birthday_key" in loaded else getattr(customer, "birthday_key")):
        columns["birthday_key"] = key
    return changed, columns


def _current(customer: Customer, name: str) -> Any:
    """The customer's loaded value of ``name`` (the ORM loading it if expired)."""
    loaded = customer.__dict__
    return loaded[name] if name in loaded else getattr(customer, name)


def _check_unique(session: Session, values: Mapping[str, Any], exclude: Customer | None = None) -> None:
    """Conflict if another customer already has the phone or e-mail in ``values``.

    Given the customer being updated, a value it already has is not checked again: as loaded from
    the database it is unique (the columns are UNIQUE); as set by an earlier update of this
    request it was checked then.
    """
    keys = tuple(k for k in ("phone", "email") if values.get(k) and not (exclude is not None and _stored(exclude, k, values[k])))
    if not keys:
        return
    params = {f"b_{k}": values[k] for k in keys}
    if exclude is not None:
        params["b_exclude"] = exclude.id
    if _other_customers_unflushed(session, exclude):
        session.flush()
    # Only other customers' unflushed changes could change the answer, and there are none now, so
    # the request's own half-made changes (instance, enrollment) need not be flushed: plain SQL.
    other = session.connection().execute(_holder_query(keys, exclude is not None), params).scalar()
    if other is not None:
        raise Conflict(f"customer {other} already has this phone or e-mail")


@lru_cache(maxsize=8)
def _holder_query(keys: tuple[str, ...], excluding: bool) -> Select[Any]:
    """SELECT the id of a customer with one of these phone/e-mail values (built once per shape)."""
    table = Customer.__table__
    query = select(table.c.id).where(or_(*(table.c[k] == bindparam(f"b_{k}") for k in keys)))
    if excluding:
        query = query.where(table.c.id != bindparam("b_exclude"))
    return query.limit(1)


def _stored(customer: Customer, key: str, value: Any) -> bool:
    """Whether ``value`` is the customer's ``key`` with no unflushed change (as loaded, or as written)."""
    loaded = customer.__dict__
    if key in loaded and key not in instance_state(customer).committed_state:
        current = loaded[key]  # a loaded value with no history: get_history's "unchanged", compared as lists are
        return current is value or bool(current == value)
    return list(get_history(customer, key).unchanged) == [value]


def _other_customers_unflushed(session: Session, customer: Customer | None) -> bool:
    """Whether the session holds new, changed or deleted customers (besides ``customer``) not yet flushed."""
    # Most often nothing at all is unflushed: the identity map's "modified" flag and the session's
    # new and deleted collections say so without building the three sets below.
    if not (session.identity_map.check_modified() or getattr(session, "_new", True) or getattr(session, "_deleted", True)):
        return False
    for objects in (session.new, session.dirty, session.deleted):
        if any(isinstance(o, Customer) and o is not customer for o in objects):
            return True
    return False


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
    changed, columns = prepare_update(session, customer, data, now)
    for key, value in columns.items():
        setattr(customer, key, value)
    return changed


def prepare_update(
    session: Session, customer: Customer, data: Mapping[str, Any], now: datetime
) -> tuple[list[str], dict[str, Any]]:
    """What ``update_customer`` would do, without doing it: (names of the fields that change, the
    column values to write). Checks the same (SubmissionInvalid, Conflict); the customer is not touched."""
    values, errors = _clean(data)
    if errors:
        raise SubmissionInvalid(errors)
    _check_unique(session, values, exclude=customer)
    changed, columns = _changes(customer, values)
    if changed and customer.updated_at != now:
        columns["updated_at"] = now
    return changed, columns


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

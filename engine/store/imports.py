"""Import runs in the database: saved mappings, matching groups of rows to stored customers,
writing one batch of customers or orders, the merge log.

Functions take the session first and never commit: ``engine.imports`` commits each batch with
the run's watermark, so a batch is all written or not at all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from engine.calendar import birthday_key
from engine.customer_import import Group, newest
from engine.errors import NotFound
from engine.store.customers import PROFILE_FIELDS
from engine.store.models import ColumnMapping, Customer, CustomerMerge, CustomerOrder, ImportRun, TimelineEntry

_CHUNK = 500
#: Columns an import may set on a customer (the rest of the profile stays as flows and staff set it).
IMPORTED = ("name", "phone", "email", "birthday", "birthday_calendar", "region", "grade", "expected_value", "owner",
            "tags", "preferred_channel", "language")


class ImportLookupError(NotFound):
    kind = "import"


class MappingLookupError(NotFound):
    kind = "mapping"


# ----- saved mappings -----------------------------------------------------------------------------------


def save_mapping(session: Session, name: str, kind: str, columns: Mapping[str, str], by: str | None, now: datetime) -> None:
    row = session.get(ColumnMapping, name)
    if row is None:
        session.add(ColumnMapping(name=name, kind=kind, columns=dict(columns), created_by=by, updated_at=now))
    else:
        row.kind, row.columns, row.created_by, row.updated_at = kind, dict(columns), by, now


def load_mapping(session: Session, name: str) -> dict[str, str]:
    row = session.get(ColumnMapping, name)
    if row is None:
        names = list(session.scalars(select(ColumnMapping.name).order_by(ColumnMapping.name)))
        raise MappingLookupError(name, f"no saved mapping {name!r} (saved: {', '.join(names) or 'none'})")
    return dict(row.columns)


def mappings(session: Session) -> list[dict[str, Any]]:
    return [{"name": m.name, "kind": m.kind, "columns": m.columns, "updated_at": m.updated_at.isoformat()}
            for m in session.scalars(select(ColumnMapping).order_by(ColumnMapping.name))]


def get_run(session: Session, run_id: int) -> ImportRun:
    run = session.get(ImportRun, run_id)
    if run is None:
        raise ImportLookupError(run_id)
    return run


# ----- matching against stored customers ------------------------------------------------------------------


@dataclass(slots=True)
class Match:
    """The stored customers a group's keys hit, and on which keys."""

    ids: set[int] = field(default_factory=set)
    on: dict[int, list[str]] = field(default_factory=dict)


def match_groups(session: Session, groups: Sequence[Group], match_on: Sequence[str] = ()) -> list[Match]:
    """For each group, the customers that already hold one of its phones, e-mails or match values."""
    wanted: dict[str, set[Any]] = defaultdict(set)
    for group in groups:
        for name, value in group.keys:
            wanted[name].add(value)
    holders: dict[tuple[str, Any], int] = {}
    for name, values in wanted.items():
        if name in ("phone", "email") or name in PROFILE_FIELDS:
            column = getattr(Customer, name)
            items = sorted(values, key=str)
            for start in range(0, len(items), _CHUNK):
                chunk = items[start:start + _CHUNK]
                for cid, value in session.execute(select(Customer.id, column).where(column.in_(chunk))):
                    holders.setdefault((name, value), cid)
        else:
            # A custom attribute: JSON paths differ between SQLite and PostgreSQL, so read them here.
            for cid, attributes in session.execute(select(Customer.id, Customer.attributes).where(Customer.status != "deleted")):
                value = (attributes or {}).get(name)
                if value in values:
                    holders.setdefault((name, value), cid)
    out = []
    for group in groups:
        match = Match()
        for key in group.keys:
            if (cid := holders.get(key)) is not None:
                match.ids.add(cid)
                match.on.setdefault(cid, []).append(key[0])
        out.append(match)
    return out


def changes_for(customer: Mapping[str, Any], group: Group) -> dict[str, list[Any]]:
    """{field: [stored, new]} for a group merged into a stored customer.

    An empty stored field takes the file's value; a different value replaces it unless the file
    says (``updated_at`` column) that its row is older than the customer's last change.
    """
    stamp = newest(group)
    older = stamp is not None and customer["updated_at"] is not None and stamp < customer["updated_at"]
    out: dict[str, list[Any]] = {}
    attributes = dict(customer.get("attributes") or {})
    yearless = group.attributes.get("birthday_year_known") is False
    keep_birthday = yearless and customer.get("birthday") is not None and attributes.get("birthday_year_known") is not False
    for key, value in group.values.items():
        if key == "birthday" and keep_birthday:
            continue  # "8月15日" does not replace a birthday with its year
        current = customer.get(key)
        if key == "tags":
            merged = sorted(set(current or []) | set(value))
            if merged != sorted(current or []):
                out[key] = [list(current or []), merged]
        elif key == "birthday_calendar":
            continue  # follows the birthday
        elif current in (None, "", []) or (current != value and not older):
            if current != value:
                out[key] = [current, value]
                if key == "birthday":
                    out["birthday_calendar"] = [customer.get("birthday_calendar"), group.values["birthday_calendar"]]
    for key, value in group.attributes.items():
        if key == "birthday_year_known":
            continue
        if attributes.get(key) in (None, "") or (attributes.get(key) != value and not older):
            if attributes.get(key) != value:
                out[f"attributes.{key}"] = [attributes.get(key), value]
    if "birthday" in out and attributes.get("birthday_year_known", True) != (not yearless):
        out["attributes.birthday_year_known"] = [attributes.get("birthday_year_known", True), not yearless]
    return out


def stored_profiles(session: Session, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    items = sorted(set(ids))
    out: dict[int, dict[str, Any]] = {}
    columns = [Customer.id, Customer.updated_at, Customer.attributes, Customer.status, *(getattr(Customer, f) for f in IMPORTED)]
    for start in range(0, len(items), _CHUNK):
        for row in session.execute(select(*columns).where(Customer.id.in_(items[start:start + _CHUNK]))):
            out[row.id] = dict(row._mapping)
    return out


# ----- writing a batch -------------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchResult:
    created: list[int] = field(default_factory=list)
    changed: dict[int, list[str]] = field(default_factory=dict)
    rejected_rows: list[int] = field(default_factory=list)


def _json(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def write_customer_batch(session: Session, run: ImportRun, groups: Sequence[Group], match_on: Sequence[str],
                         now: datetime) -> BatchResult:
    """Create or merge each group, checking the stored customers again inside this transaction."""
    result = BatchResult()
    matches = match_groups(session, groups, match_on)
    profiles = stored_profiles(session, (cid for m in matches for cid in m.ids))
    new_rows: list[dict[str, Any]] = []
    new_groups: list[Group] = []
    merges: list[dict[str, Any]] = []
    for group, match in zip(groups, matches):
        if len(match.ids) > 1 or any(profiles[c]["status"] == "deleted" for c in match.ids):
            result.rejected_rows.extend(group.rows)
            continue
        if not match.ids:
            if not group.values.get("name"):
                result.rejected_rows.extend(group.rows)
                continue
            new_rows.append(_new_customer(group, now))
            new_groups.append(group)
            continue
        (cid,) = match.ids
        changes = changes_for(profiles[cid], group)
        if changes:
            _apply_changes(session, cid, profiles[cid], changes, now)
            result.changed[cid] = sorted({k.split(".")[0] for k in changes})
        elif len(group.records) == 1:
            continue  # the row says nothing new: no log entry (re-importing a file logs nothing)
        merges.append({"customer_id": cid, "import_id": run.id, "at": now, "created": False, "rows": group.rows,
                       "matched_on": sorted(set(match.on[cid])),
                       "changes": {k: [_json(v) for v in pair] for k, pair in changes.items()}})
    if new_rows:
        # A plain executemany (no RETURNING, which SQLAlchemy pages slowly on SQLite); every new
        # customer has a phone or an e-mail that is unique, so that finds their ids.
        session.execute(insert(Customer.__table__), new_rows)
        ids = _ids_of(session, new_rows)
        result.created.extend(ids)
        session.execute(insert(TimelineEntry), [
            {"customer_id": cid, "at": now, "kind": "created", "title": {"zh": "客户已导入", "en": "Customer imported"},
             "data": {"import_id": run.id, "rows": g.rows}, "instance_id": None}
            for cid, g in zip(ids, new_groups)])
        merges.extend({"customer_id": cid, "import_id": run.id, "at": now, "created": True, "rows": g.rows,
                       "matched_on": _shared_keys(g), "changes": {}}
                      for cid, g in zip(ids, new_groups) if len(g.records) > 1)
    if merges:
        session.execute(insert(CustomerMerge), merges)
    return result


def _ids_of(session: Session, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    found: dict[tuple[str, Any], int] = {}
    for name in ("phone", "email"):
        values = [r[name] for r in rows if r[name] is not None and (name == "phone" or r["phone"] is None)]
        column = getattr(Customer, name)
        for start in range(0, len(values), _CHUNK):
            found.update(((name, v), cid) for cid, v in session.execute(
                select(Customer.id, column).where(column.in_(values[start:start + _CHUNK]))))
    return [found[("phone", r["phone"])] if r["phone"] is not None else found[("email", r["email"])] for r in rows]


def _shared_keys(group: Group) -> list[str]:
    counts: dict[tuple[str, Any], int] = defaultdict(int)
    for record in group.records:
        for key in set(record.keys(())):
            counts[key] += 1
    return sorted({name for (name, _v), n in counts.items() if n > 1}) or ["match"]


def _new_customer(group: Group, now: datetime) -> dict[str, Any]:
    values = {k: v for k, v in group.values.items() if k in IMPORTED}
    row: dict[str, Any] = {
        "name": values.pop("name"), "phone": None, "email": None, "birthday": None, "birthday_calendar": "solar",
        "birthday_key": None, "region": None, "grade": None, "expected_value": None, "owner": None, "tags": [],
        "preferred_channel": None, "language": "zh", "consent": {}, "status": "active", "last_purchase_at": None,
        "purchase_count": 0, "purchase_total": 0.0, "attributes": dict(group.attributes), "created_at": now, "updated_at": now,
    }
    row.update(values)
    if row["birthday"] is not None:
        row["birthday_key"] = birthday_key(row["birthday"], row["birthday_calendar"])
    return row


def _apply_changes(session: Session, cid: int, profile: Mapping[str, Any], changes: Mapping[str, list[Any]], now: datetime) -> None:
    columns: dict[str, Any] = {"updated_at": now}
    attributes = dict(profile.get("attributes") or {})
    for key, (_old, new) in changes.items():
        if key.startswith("attributes."):
            attributes[key.split(".", 1)[1]] = new
            columns["attributes"] = attributes
        else:
            columns[key] = new
    if "birthday" in columns:
        columns["birthday_key"] = birthday_key(columns["birthday"], columns.get("birthday_calendar", profile["birthday_calendar"]))
    session.execute(update(Customer).where(Customer.id == cid).values(**columns))


# ----- orders ----------------------------------------------------------------------------------------------


def customers_by_contact(session: Session, phones: Iterable[str], emails: Iterable[str]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for name, values in (("phone", sorted(set(phones))), ("email", sorted(set(emails)))):
        column = getattr(Customer, name)
        for start in range(0, len(values), _CHUNK):
            query = select(Customer.id, column).where(column.in_(values[start:start + _CHUNK]), Customer.status != "deleted")
            for cid, value in session.execute(query):
                out[(name, value)] = cid
    return out


def known_orders(session: Session, order_ids: Iterable[str]) -> set[str]:
    items = sorted(set(order_ids))
    found: set[str] = set()
    for start in range(0, len(items), _CHUNK):
        found.update(session.scalars(select(CustomerOrder.order_id).where(CustomerOrder.order_id.in_(items[start:start + _CHUNK]))))
    return found


def write_order_batch(session: Session, run: ImportRun, orders: Sequence[Mapping[str, Any]], now: datetime) -> tuple[int, dict[int, list[str]]]:
    """Add the orders not stored yet and update their customers' purchase figures.

    Returns (orders added, {customer id: changed fields}).
    """
    fresh = known_orders(session, (o["order_id"] for o in orders))
    new = [o for o in orders if o["order_id"] not in fresh]
    if not new:
        return 0, {}
    session.execute(insert(CustomerOrder), [
        {"order_id": o["order_id"], "customer_id": o["customer_id"], "ordered_at": o["ordered_at"], "amount": o["amount"],
         "import_id": run.id} for o in new])
    per: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for o in new:
        per[o["customer_id"]].append(o)
    changed: dict[int, list[str]] = {}
    for cid, items in per.items():
        customer = session.get(Customer, cid)
        assert customer is not None
        last = max(o["ordered_at"] for o in items)
        customer.purchase_count = (customer.purchase_count or 0) + len(items)
        customer.purchase_total = round((customer.purchase_total or 0.0) + sum(o["amount"] for o in items), 2)
        fields = ["purchase_count", "purchase_total"]
        if customer.last_purchase_at is None or last > customer.last_purchase_at:
            customer.last_purchase_at = last
            fields.append("last_purchase_at")
        # The churn score measures recency against the customer's usual gap, (last - first) / (count - 1).
        first = min(o["ordered_at"] for o in items)
        if customer.first_purchase_at is None or first < customer.first_purchase_at:
            customer.first_purchase_at = first
            fields.append("first_purchase_at")
        customer.updated_at = now
        changed[cid] = fields
    return len(new), changed


# ----- the merge log ----------------------------------------------------------------------------------------


def merge_dict(m: CustomerMerge) -> dict[str, Any]:
    return {"id": m.id, "customer_id": m.customer_id, "import_id": m.import_id, "at": m.at.isoformat(), "created": m.created,
            "rows": list(m.rows), "matched_on": list(m.matched_on), "changes": dict(m.changes)}


def merges(session: Session, customer_id: int | None = None, import_id: int | None = None, limit: int = 100,
           offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    query = select(CustomerMerge)
    if customer_id is not None:
        query = query.where(CustomerMerge.customer_id == customer_id)
    if import_id is not None:
        query = query.where(CustomerMerge.import_id == import_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(CustomerMerge.id.desc()).limit(limit).offset(offset))
    return [merge_dict(m) for m in rows], total


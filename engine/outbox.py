"""Delivering the outbox: claim, send with the idempotency key, record, retry, or raise an incident.

A message moves ``pending → sending → sent`` (or ``failed`` / ``suppressed`` / ``unknown``).
The claim commits before the provider is called, and the result commits after, so a crash in
between leaves a ``sending`` row whose lease runs out. Such a row is sent again only through a
connector that de-duplicates on the key; otherwise it becomes ``unknown`` with an incident, since
resending blindly could reach the customer twice.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import ConnectorError, Message
from connectors.channels import recipient
from connectors.registry import Registry
from engine.crashpoints import crash_point
from engine.errors import Conflict
from engine.runtime import events as ev
from engine.store import customers as cust
from engine.store.instances import Runtime, deliver, get_instance
from engine.store.models import Customer, Incident, OutboxMessage

LEASE = timedelta(seconds=120)


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    unknown: int = 0
    errors: list[str] = field(default_factory=list)


def _backoff(attempts: int, base: float, retry_after: float | None) -> timedelta:
    if retry_after is not None:
        return timedelta(seconds=retry_after)
    # Full exponential backoff with jitter so that many failing sends do not retry in lockstep.
    return timedelta(seconds=base * (2 ** max(attempts - 1, 0)) * (0.5 + random.random()))


def reclaim_expired(session: Session, registry: Registry, now: datetime) -> int:
    """Rows left in ``sending`` by a crashed dispatcher: resend if safe, else mark them unknown."""
    stale = list(session.scalars(select(OutboxMessage).where(OutboxMessage.status == "sending", OutboxMessage.lease_until < now)))
    for row in stale:
        if _idempotent(registry, row.connector):
            row.status = "pending"
            row.next_attempt_at = now
        else:
            row.status = "unknown"
            row.last_error = "the dispatcher stopped after calling the provider; whether it was delivered is unknown"
            session.add(Incident(instance_id=row.instance_id, token=row.token, step_id=row.step_id, outbox_id=row.id,
                                 kind="delivery_unknown", message=row.last_error, status="open", created_at=now))
    return len(stale)


def _idempotent(registry: Registry, name: str) -> bool:
    try:
        return bool(registry.get(name).idempotent)
    except LookupError:
        return False


def claim_due(session: Session, now: datetime, limit: int, worker: str) -> list[int]:
    ids = list(session.scalars(
        select(OutboxMessage.id).where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)
    ))
    claimed = []
    for mid in ids:
        # Compare-and-set, so two dispatchers never both claim one message (SQLite has no SKIP LOCKED).
        n = session.execute(
            update(OutboxMessage).where(OutboxMessage.id == mid, OutboxMessage.status == "pending")
            .values(status="sending", lease_until=now + LEASE, attempts=OutboxMessage.attempts + 1)
        ).rowcount
        if n == 1:
            claimed.append(mid)
    return claimed


def dispatch_due(
    factory: sessionmaker[Session],
    runtime: Callable[[], Runtime],
    registry: Registry,
    *,
    limit: int = 200,
    worker: str = "local",
    settings: Callable[[str], Mapping[str, Any]] = lambda name: {},
) -> DispatchReport:
    report = DispatchReport()
    with factory.begin() as session:
        rt = runtime()
        report.unknown += reclaim_expired(session, registry, rt.now)
        claimed = claim_due(session, rt.now, limit, worker)
    crash_point("after_claim")
    for mid in claimed:
        _deliver_one(factory, runtime, registry, mid, settings, report)
    return report


def _deliver_one(
    factory: sessionmaker[Session],
    runtime: Callable[[], Runtime],
    registry: Registry,
    mid: int,
    settings: Callable[[str], Mapping[str, Any]],
    report: DispatchReport,
) -> None:
    with factory() as session:
        row = session.get(OutboxMessage, mid)
        assert row is not None
        customer = session.get(Customer, row.customer_id) if row.customer_id is not None else None
        customer_data = cust.customer_dict(customer) if customer is not None else None
        message = Message(row.effect_key, row.connector, dict(row.payload), customer_data, row.attempts)
        connector_name = row.connector
    error: ConnectorError | None = None
    delivery = None
    suppressed = False
    try:
        connector, message, provider_settings, channel = _route(registry, message, customer_data, settings)
        suppressed = _opted_out(channel, customer_data)
        if not suppressed:
            crash_point("before_provider_call")
            delivery = connector.send(message, provider_settings)
            crash_point("after_provider_accept_before_ledger")
    except ConnectorError as exc:
        error = exc
    except LookupError as exc:
        error = ConnectorError(str(exc))
    with factory.begin() as session:
        rt = runtime()
        row = session.get(OutboxMessage, mid)
        assert row is not None
        if row.status != "sending":
            return  # an admin or a reclaim changed it meanwhile
        if suppressed:
            _finish(session, rt, row, "suppressed", {"suppressed": True})
            report.suppressed += 1
        elif error is None:
            row.provider_ref = delivery.provider_ref if delivery else None
            _finish(session, rt, row, "sent", {"provider_ref": row.provider_ref, **dict(delivery.detail if delivery else {})})
            report.sent += 1
        elif error.retryable and row.attempts < row.max_attempts:
            row.status = "pending"
            row.last_error = str(error)
            row.lease_until = None
            row.next_attempt_at = rt.now + _backoff(row.attempts, row.backoff_seconds, error.retry_after)
            report.retried += 1
        else:
            _fail(session, rt, row, str(error))
            report.failed += 1
    crash_point("after_ledger_before_ack")


def _route(
    registry: Registry, message: Message, customer: Mapping[str, Any] | None, settings: Callable[[str], Mapping[str, Any]]
) -> tuple[Any, Message, Mapping[str, Any], str | None]:
    """The connector that really sends, the message as it sends it, its settings, and the channel."""
    connector = registry.get(message.connector)
    if not getattr(connector, "routes", False):
        return connector, message, settings(message.connector), connector.channel
    channel = connector.route(customer)
    provider = settings(channel).get("provider")
    if not provider:
        raise ConnectorError(f"no provider is attached to the {channel} channel; attach one in the connector settings")
    params = {**message.params, "to": recipient(channel, message.params, customer), "channel": channel}
    return registry.get(provider), replace(message, params=params, connector=provider), settings(provider), channel


def _opted_out(channel: str | None, customer: Mapping[str, Any] | None) -> bool:
    if channel is None or customer is None:
        return False
    return (customer.get("consent") or {}).get(channel) is False


def _finish(session: Session, rt: Runtime, row: OutboxMessage, status: str, result: Mapping[str, Any]) -> None:
    row.status = status
    row.sent_at = rt.now
    row.lease_until = None
    if row.customer_id is not None:
        text = str(row.payload.get("text") or row.payload.get("subject") or row.connector)
        verb = {"sent": ("已发送", "sent"), "suppressed": ("未发送（客户已退订）", "suppressed (opted out)")}[status]
        cust.add_timeline(
            session, row.customer_id, rt.now, f"message_{status}",
            {"zh": f"{row.connector} {verb[0]}：{text}", "en": f"{row.connector} {verb[1]}: {text}"},
            {"connector": row.connector, "effect_key": row.effect_key, "status": status}, row.instance_id,
        )
    if row.wait and row.instance_id is not None and row.token is not None:
        deliver(session, rt, get_instance(session, row.instance_id), ev.ActionDone(row.token, row.gen or 0, dict(result)))


def _fail(session: Session, rt: Runtime, row: OutboxMessage, message: str) -> None:
    row.status = "failed"
    row.last_error = message
    row.lease_until = None
    session.add(Incident(instance_id=row.instance_id, token=row.token, step_id=row.step_id, outbox_id=row.id,
                         kind="delivery_failed", message=message, status="open", created_at=rt.now))
    if row.wait and row.instance_id is not None and row.token is not None:
        deliver(session, rt, get_instance(session, row.instance_id), ev.ActionFailed(row.token, row.gen or 0, message))


def retry_message(session: Session, rt: Runtime, outbox_id: int, by: str | None) -> OutboxMessage:
    """An admin sends a failed or unknown message again (a fresh set of attempts)."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        raise LookupError(f"No outbox message by the id {outbox_id!r} was found")
    if row.status not in ("failed", "unknown"):
        raise Conflict(f"message {outbox_id} is {row.status}; only failed or unknown messages can be retried")
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = rt.now
    session.execute(
        update(Incident).where(Incident.outbox_id == outbox_id, Incident.status == "open")
        .values(status="resolved", resolution="retried", resolved_at=rt.now, resolved_by=by)
    )
    return row

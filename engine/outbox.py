"""Delivering the outbox: claim, send with the idempotency key, record, retry, or raise an incident.

A message moves ``pending → claimed → sending → sent`` (or ``failed`` / ``suppressed`` /
``unknown``). Claiming commits a batch; each message is then marked ``sending`` in its own commit
just before the provider is called, and the result commits after. A crash leaves rows whose
lease runs out: a ``claimed`` one never reached the provider and is simply sent again; a
``sending`` one may have, so it is sent again only through a connector that de-duplicates on the
key, and otherwise becomes ``unknown`` with an incident, since resending blindly could reach the
customer twice. A provider call that got no answer (``AmbiguousSendError``) is treated the same.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from connectors.base import STAFF_CHANNELS, Connector, ConnectorError, Delivery, Message
from connectors.channels import recipient
from engine.crashpoints import crash_point
from engine.errors import Conflict, EngineError
from engine.reminders import CATEGORY as STAFF_CATEGORY
from engine.runtime import events as ev
from engine.store import customers as cust
from engine.store.instances import Runtime, deliver, get_instance
from engine.store.models import Customer, Incident, OutboxMessage

LEASE = timedelta(seconds=120)
#: How often recording a result is tried again when the instance changed meanwhile.
RECORD_TRIES = 5


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    suppressed: int = 0
    unknown: int = 0
    errors: list[str] = field(default_factory=list)


#: Bounds on a provider's Retry-After: "0" or a date in the past must not resend within the same
#: tick (a burst that uses up every attempt at once), and a bogus far-off date must not park a
#: message for months.
RETRY_AFTER_MIN = 1.0
RETRY_AFTER_MAX = 86_400.0


def _backoff(attempts: int, base: float, retry_after: float | None) -> timedelta:
    if retry_after is not None:
        return timedelta(seconds=min(max(retry_after, RETRY_AFTER_MIN), RETRY_AFTER_MAX))
    # Full exponential backoff with jitter so that many failing sends do not retry in lockstep.
    return timedelta(seconds=base * (2 ** max(attempts - 1, 0)) * (0.5 + random.random()))


Resolve = Callable[..., tuple[Connector, Mapping[str, Any]]]
#: The window a channel's ``marketing_per_week`` cap counts over.
CAP_WINDOW = timedelta(days=7)


def reclaim_expired(session: Session, resolve: Resolve, now: datetime) -> int:
    """Rows a crashed dispatcher left behind: resend what is safe, mark the rest unknown."""
    stale = list(session.scalars(select(OutboxMessage).where(
        OutboxMessage.status.in_(("claimed", "sending")), OutboxMessage.lease_until < now)))
    for row in stale:
        if row.status == "claimed" or _idempotent(resolve, row.connector, session):
            row.status = "pending"
            row.next_attempt_at = now
        else:
            _unknown(session, row, now, "the dispatcher stopped after calling the provider; whether it was delivered is unknown")
    return len(stale)


def _unknown(session: Session, row: OutboxMessage, now: datetime, message: str) -> None:
    row.status = "unknown"
    row.last_error = message
    row.lease_until = None
    session.add(Incident(instance_id=row.instance_id, token=row.token, step_id=row.step_id, outbox_id=row.id,
                         kind="delivery_unknown", message=message, status="open", created_at=now))


def _idempotent(resolve: Resolve, name: str, session: Session) -> bool:
    # A channel routes to a provider chosen per customer: assume the worst.
    try:
        connector, _settings = resolve(name, session)
    except LookupError:
        return False
    return bool(connector.idempotent) and not getattr(connector, "routes", False)


def claim_due(session: Session, now: datetime, limit: int) -> list[int]:
    ids = list(session.scalars(
        select(OutboxMessage.id).where(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id).limit(limit)
    ))
    claimed = []
    for mid in ids:
        # Compare-and-set, so two dispatchers never both claim one message (SQLite has no SKIP LOCKED).
        n = session.execute(
            update(OutboxMessage).where(OutboxMessage.id == mid, OutboxMessage.status == "pending")
            .values(status="claimed", lease_until=now + LEASE, attempts=OutboxMessage.attempts + 1)
        ).rowcount
        if n == 1:
            claimed.append(mid)
    return claimed


def dispatch_due(
    factory: sessionmaker[Session], runtime: Callable[[], Runtime], resolve: Resolve, *, limit: int = 200
) -> DispatchReport:
    report = DispatchReport()
    with factory.begin() as session:
        rt = runtime()
        report.unknown += reclaim_expired(session, resolve, rt.now)
        claimed = claim_due(session, rt.now, limit)
    crash_point("after_claim")
    for mid in claimed:
        _deliver_one(factory, runtime, resolve, mid, report)
    return report


@dataclass
class _Attempt:
    """What happened when one message was tried, recorded in the last transaction."""

    channel: str | None = None
    suppressed: str | None = None  # the reason, when not sent on purpose
    delivery: Delivery | None = None
    error: ConnectorError | None = None
    idempotent: bool = False
    lost: bool = False  # someone else took the message over meanwhile


@dataclass(frozen=True)
class Claimed:
    """What sending a claimed message needs from its row and its customer, read when it was claimed."""

    message: Message
    category: str
    customer_id: int | None

    @classmethod
    def of(cls, row: OutboxMessage, customer: Customer | None) -> Claimed:
        customer_data = cust.customer_dict(customer) if customer is not None else None
        return cls(Message(row.effect_key, row.connector, dict(row.payload), customer_data, row.attempts),
                   row.category, row.customer_id)


def _deliver_one(
    factory: sessionmaker[Session], runtime: Callable[[], Runtime], resolve: Resolve, mid: int, report: DispatchReport,
    *, fence: Fence | None = None, claimed: Claimed | None = None,
) -> None:
    """Send one claimed message and record the result.

    With a ``fence`` (distributed mode) the message is sent and recorded only while its claim is
    still the one the task was published for: a worker whose lease was taken over does nothing.
    ``claimed``: the row as read in the transaction that claimed it (a worker that claimed the
    messages of the step it just fired), so it is not read again; the fence is checked anyway
    when the message is marked ``sending`` and when its result is recorded.
    """
    if claimed is None:
        with factory() as session:
            row = session.get(OutboxMessage, mid)
            if row is None or (fence is not None and (row.status != "claimed" or row.attempts != fence.attempt)):
                return  # already settled, or claimed again by someone else: a repeat delivery of the task
            claimed = Claimed.of(row, session.get(Customer, row.customer_id) if row.customer_id is not None else None)
    message, category, customer_id = claimed.message, claimed.category, claimed.customer_id
    customer_data = message.customer
    attempt = _Attempt()
    try:
        connector, message, provider_settings, attempt.channel, cap = _route(resolve, message, customer_data)
        attempt.idempotent = bool(connector.idempotent)
        # A reminder to an employee: no customer's consent or marketing cap applies to it.
        staff = category == STAFF_CATEGORY
        if not staff and _opted_out(attempt.channel, customer_data):
            attempt.suppressed = "opted_out"
        elif not staff and category == "marketing" and cap is not None \
                and _over_cap(factory, customer_id, attempt.channel, cap, runtime().now):
            attempt.suppressed = "frequency_cap"
        else:
            crash_point("before_provider_call")
            if _mark_sending(factory, mid, fence):
                attempt.delivery = connector.send(message, provider_settings)
                crash_point("after_provider_accept_before_ledger")
            else:
                attempt.lost = True
    except ConnectorError as exc:
        attempt.error = exc
    except (LookupError, EngineError) as exc:
        # An unknown connector or undecryptable settings: fail this message visibly, not the tick.
        attempt.error = ConnectorError(str(exc))
    if attempt.lost:
        return
    for tries in range(RECORD_TRIES):
        try:
            with factory.begin() as session:
                if _record(session, runtime(), mid, attempt, report, fence) and fence is not None:
                    fence.recorded(session, mid)
            break
        except StaleDataError:
            # Another transition of the same instance committed first (a worker elsewhere fired
            # its timer); the message was sent, so record it again on the fresh state.
            if tries == RECORD_TRIES - 1:
                raise
    crash_point("after_ledger_before_ack")


def _mark_sending(factory: sessionmaker[Session], mid: int, fence: Fence | None = None) -> bool:
    """Commit that the provider is about to be called; False if the claim was lost meanwhile."""
    query = update(OutboxMessage).where(OutboxMessage.id == mid, OutboxMessage.status == "claimed")
    values: dict[str, Any] = {"status": "sending"}
    if fence is not None:
        query = query.where(OutboxMessage.attempts == fence.attempt)
        values["lease_until"] = fence.lease_until()
    with factory.begin() as session:
        return bool(session.execute(query.values(**values)).rowcount)


class Fence(Protocol):
    """A distributed claim: the attempt number the task was published with, and its lease."""

    attempt: int

    def lease_until(self) -> datetime: ...

    def recorded(self, session: Session, mid: int) -> None: ...


def _record(session: Session, rt: Runtime, mid: int, attempt: _Attempt, report: DispatchReport,
            fence: Fence | None = None) -> bool:
    row = session.get(OutboxMessage, mid)
    assert row is not None
    if row.status not in ("claimed", "sending"):
        return False  # an admin or a reclaim changed it meanwhile
    if fence is not None and row.attempts != fence.attempt:
        return False  # the lease was taken over: this worker's result is stale
    row.channel = attempt.channel
    error = attempt.error
    if attempt.suppressed:
        _finish(session, rt, row, "suppressed", {"suppressed": attempt.suppressed})
        row.last_error = attempt.suppressed
        report.suppressed += 1
    elif error is None:
        delivery = attempt.delivery or Delivery()
        row.provider_ref = delivery.provider_ref
        row.last_error = None
        _finish(session, rt, row, "sent", {"provider_ref": row.provider_ref, **dict(delivery.detail)})
        report.sent += 1
    elif getattr(error, "ambiguous", False) and not attempt.idempotent:
        _unknown(session, row, rt.now, f"{error} — not resent, since the provider cannot recognise a repeat")
        report.unknown += 1
    elif error.retryable and row.attempts < row.max_attempts:
        row.status = "pending"
        row.last_error = str(error)
        row.lease_until = None
        row.next_attempt_at = rt.now + _backoff(row.attempts, row.backoff_seconds, error.retry_after)
        report.retried += 1
    else:
        _fail(session, rt, row, str(error))
        report.failed += 1
    return True


def _route(
    resolve: Resolve, message: Message, customer: Mapping[str, Any] | None
) -> tuple[Connector, Message, Mapping[str, Any], str | None, int | None]:
    """The connector that really sends, the message as sent, its settings, the channel, the marketing cap."""
    connector, settings = resolve(message.connector)
    if not getattr(connector, "routes", False):
        return connector, message, settings, connector.channel, settings.get("marketing_per_week")
    channel = connector.route(customer)  # type: ignore[attr-defined]
    if channel == connector.channel:
        # ``email`` or a named ``email/marketing``: the configuration just resolved is the channel's.
        channel_settings = settings
    else:
        _channel_connector, channel_settings = resolve(channel)
    provider = channel_settings.get("provider")
    if not provider:
        raise ConnectorError(f"no provider is attached to the {channel} channel; attach one in the connector settings")
    params = {**message.params, "to": recipient(channel, message.params, customer), "channel": channel}
    provider_connector, provider_settings = resolve(str(provider))
    routed = replace(message, params=params, connector=str(provider))
    return provider_connector, routed, provider_settings, channel, channel_settings.get("marketing_per_week")


def _over_cap(factory: sessionmaker[Session], customer_id: int | None, channel: str | None, cap: int, now: datetime) -> bool:
    if customer_id is None:
        return False
    with factory() as session:
        sent = session.scalar(
            select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.customer_id == customer_id, OutboxMessage.channel == channel,
                OutboxMessage.category == "marketing", OutboxMessage.status == "sent",
                OutboxMessage.sent_at >= now - CAP_WINDOW,
            )
        )
    return int(sent or 0) >= int(cap)


def _opted_out(channel: str | None, customer: Mapping[str, Any] | None) -> bool:
    if channel is None or customer is None or channel in STAFF_CHANNELS:
        return False
    return (customer.get("consent") or {}).get(channel) is False


SUPPRESSED = {
    "opted_out": ("未发送（客户已退订）", "not sent (the customer opted out)"),
    "frequency_cap": ("未发送（超过营销频次上限）", "not sent (marketing frequency cap reached)"),
}


def _finish(session: Session, rt: Runtime, row: OutboxMessage, status: str, result: Mapping[str, Any]) -> None:
    row.status = status
    row.sent_at = rt.now
    row.lease_until = None
    if row.customer_id is not None:
        text = str(row.payload.get("subject") or row.payload.get("text") or row.connector)
        channel = row.channel or row.connector
        zh, en = ("已发送", "sent") if status == "sent" else SUPPRESSED[str(result.get("suppressed"))]
        cust.add_timeline(
            session, row.customer_id, rt.now, f"message_{status}",
            {"zh": f"{channel} {zh}：{text}", "en": f"{channel} {en}: {text}"},
            {"connector": row.connector, "channel": channel, "effect_key": row.effect_key, "status": status,
             **({"reason": result["suppressed"]} if status == "suppressed" else {})},
            row.instance_id,
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


def settle_message(session: Session, rt: Runtime, outbox_id: int, outcome: str, by: str | None) -> OutboxMessage:
    """An admin closes a failed or unknown message: ``sent`` (confirmed with the provider) or ``skipped``."""
    row = session.get(OutboxMessage, outbox_id)
    if row is None:
        raise LookupError(f"No outbox message by the id {outbox_id!r} was found")
    if row.status not in ("failed", "unknown"):
        raise Conflict(f"message {outbox_id} is {row.status}; only failed or unknown messages can be settled")
    session.execute(
        update(Incident).where(Incident.outbox_id == outbox_id, Incident.status == "open")
        .values(status="resolved", resolution="confirmed" if outcome == "sent" else "skipped", resolved_at=rt.now, resolved_by=by)
    )
    if outcome == "sent":
        _finish(session, rt, row, "sent", {"confirmed_by": by})
    else:
        row.status = "skipped"
        row.lease_until = None
        if row.wait and row.instance_id is not None and row.token is not None:
            # The flow waited for this message: let it go on, telling it the message was skipped.
            deliver(session, rt, get_instance(session, row.instance_id), ev.ActionDone(row.token, row.gen or 0, {"skipped": True}))
    return row

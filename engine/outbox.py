"""Delivering the outbox: claim, send with the idempotency key, record, retry, or raise an incident.

A message moves ``pending → claimed → sending → sent`` (or ``failed`` / ``suppressed`` /
``unknown``). Claiming commits a batch; each message is then marked ``sending`` in a commit just
before the provider is called, and the result commits after (for a provider that recognises a
repeat, in the commit that marks the next message, or in distributed mode a group's results in
one transaction: ``deliver_claimed``). A crash leaves rows whose
lease runs out: a ``claimed`` one never reached the provider and is simply sent again; a
``sending`` one may have, so it is sent again only through a connector that de-duplicates on the
key, and otherwise becomes ``unknown`` with an incident, since resending blindly could reach the
customer twice. A provider call that got no answer (``AmbiguousSendError``) is treated the same.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, func, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from connectors.base import STAFF_CHANNELS, Connector, ConnectorError, Delivery, Message
from connectors.channels import recipient
from engine.crashpoints import crash_point
from engine.errors import Conflict, EngineError
from engine.reminders import CATEGORY as STAFF_CATEGORY
from engine.runtime import events as ev
from engine.store import customers as cust
from engine.store.batch_results import Result, attach_known, deliver_results
from engine.store.instances import Runtime, Writes, deliver, get_instance
from engine.store.models import Customer, Incident, Instance, OutboxMessage
from engine.store.rows import execute as execute_rows

log = logging.getLogger(__name__)

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
    deliver_claimed(factory, runtime, resolve, [Outgoing(mid) for mid in claimed], report)
    return report


@dataclass
class _Attempt:
    """What happened when one message was tried, recorded in the last transaction."""

    channel: str | None = None
    suppressed: str | None = None  # the reason, when not sent on purpose
    delivery: Delivery | None = None
    error: ConnectorError | None = None
    idempotent: bool = False
    #: A message left ``sending`` by a crash is simply sent again (see ``_idempotent``).
    resendable: bool = False


@dataclass(frozen=True)
class Claimed:
    """What sending a claimed message needs from its row and its customer, read when it was claimed."""

    message: Message
    category: str
    customer_id: int | None
    #: Where its result goes, fixed when the row was written: the instance, and the token and
    #: generation that wait for it (``wait``). A group's results are recorded from these.
    instance_id: int | None = None
    token: str | None = None
    gen: int | None = None
    wait: bool = False

    @classmethod
    def of(cls, row: OutboxMessage, customer: Customer | None) -> Claimed:
        customer_data = cust.customer_dict(customer) if customer is not None else None
        return cls(Message(row.effect_key, row.connector, dict(row.payload), customer_data, row.attempts),
                   row.category, row.customer_id, row.instance_id, row.token, row.gen, bool(row.wait))


@dataclass
class Outgoing:
    """One claimed message to send: its id, the claim that fences it (distributed mode), its row as
    read when it was claimed (``claimed``; None: read it here), and its instance as the transaction
    that claimed it committed it (``instance``, detached; None: read it when the result is recorded).

    A worker that fires a timer claims the step's messages in the same transaction, so it holds the
    instance as it now stands; recording a message's result starts from that copy instead of
    reading the row again. The copy is only a starting point: the instance's revision is checked
    when it is written, and if another transaction changed it meanwhile, the result is recorded
    again on a fresh read (``_commit``).
    """

    mid: int
    fence: Fence | None = None
    claimed: Claimed | None = None
    instance: Instance | None = None


#: A provider call prepared for one message: the connector, the message as sent, its settings.
_Call = tuple[Connector, Message, Mapping[str, Any]]
#: Messages marked ``sending`` by one commit at most: all of them are in doubt until the group's results commit.
GROUP_LIMIT = 50


def read_claimed(session: Session, ids: list[int]) -> dict[int, tuple[OutboxMessage, Claimed]]:
    """The rows of these messages and what sending them needs: one query per table, not per message."""
    if not ids:
        return {}
    rows = list(session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))))
    customer_ids = {r.customer_id for r in rows if r.customer_id is not None}
    customers = ({c.id: c for c in session.scalars(select(Customer).where(Customer.id.in_(customer_ids)))}
                 if customer_ids else {})
    return {r.id: (r, Claimed.of(r, customers.get(r.customer_id) if r.customer_id is not None else None)) for r in rows}


def deliver_claimed(
    factory: sessionmaker[Session], runtime: Callable[[], Runtime], resolve: Resolve, messages: list[Outgoing],
    report: DispatchReport, *, lost: Callable[[int], bool] = lambda _mid: False,
    settled: Callable[[int], None] = lambda _mid: None, group: bool = False,
) -> None:
    """Send claimed messages one after the other, each to its provider once, each result recorded once.

    Every message is marked ``sending`` in a commit before its provider is called, and its result
    commits after the call, as it always was. When the next message goes through a provider that
    recognises a repeat (``_idempotent``), the result of one message commits in the same
    transaction that marks the next one ``sending``: at most one message is ever in doubt (the
    provider called, the result not committed), as with two commits per message, and k such
    messages take k + 1 commits instead of 2k. A crash between that commit and the call leaves
    the next message ``sending`` without its provider having seen it; the reclaim then sends it
    again with its key, which is harmless for such a provider only. For any other provider the
    mark keeps a commit of its own, so that a crash never turns an unsent message into an
    ``unknown`` one, and so does the result, right after the call: a crash while the next message
    is prepared must not leave a message in doubt that only an incident can settle. A result that
    needs no provider call (suppressed, no connector) goes with the next commit.

    With ``group`` (distributed mode), consecutive messages through a provider that recognises a
    repeat go as a group instead (``_send_group``, docs/decisions/0012-grouped-message-results.md):
    all marked ``sending`` in one commit, sent, and all their results recorded in one more, their
    instances advanced together. Any other message still goes as above, after the group before it.

    With a ``fence`` (distributed mode) a message is marked, and its result recorded, only while
    its claim is still the one the task was published for: a worker whose lease was taken over
    does nothing. Messages given without ``claimed`` are read first, all in one query, and skipped
    if already settled or claimed again by someone else (a repeat delivery of the task). ``lost``
    says a claim was taken over meanwhile (the lease heartbeat); ``settled`` is told of each
    message this call is done with.
    """
    unread = [o.mid for o in messages if o.claimed is None]
    if unread:
        with factory() as session:
            read = read_claimed(session, unread)
        todo = []
        for out in messages:
            if out.claimed is None:
                row, claimed = read.get(out.mid, (None, None))
                if row is None or (out.fence is not None and (row.status != "claimed" or row.attempts != out.fence.attempt)):
                    settled(out.mid)
                    continue
                out = Outgoing(out.mid, out.fence, claimed, out.instance)
            todo.append(out)
        messages = todo
    results: list[tuple[Outgoing, _Attempt]] = []  # to commit with the next transaction
    grouped: list[tuple[Outgoing, _Attempt, _Call]] = []  # prepared, to be marked and sent together
    for out in messages:
        if lost(out.mid):  # taken over while it waited: the newer claim sends it
            settled(out.mid)
            continue
        assert out.claimed is not None
        attempt, call = _prepare(factory, runtime, resolve, out.claimed,
                                 [*results, *((o, a) for o, a, _c in grouped)])
        if call is None:
            results.append((out, attempt))
            continue
        if group and attempt.resendable:
            grouped.append((out, attempt, call))
            if len(grouped) >= GROUP_LIMIT:
                _send_group(factory, runtime, report, results, grouped, lost, settled)
                results, grouped = [], []
            continue
        if grouped:
            _send_group(factory, runtime, report, results, grouped, lost, settled)
            results, grouped = [], []
        if results and not attempt.resendable:
            # A crash right after the commit that marks this message would leave it in doubt
            # though never sent; it must then not share that commit with the previous results.
            _commit(factory, runtime, report, results, settled)
            results = []
        crash_point("before_provider_call")
        marked = _commit(factory, runtime, report, results, settled, mark=[out])
        results = []
        if out.mid not in marked:
            settled(out.mid)  # claimed again by someone else meanwhile: nothing sent, nothing to record
            continue
        _call(attempt, call)
        results.append((out, attempt))
        if not attempt.resendable:
            # In doubt until recorded, and a message in doubt whose provider cannot recognise a
            # repeat ends ``unknown``: its result must not wait for the next message to be routed,
            # capped and reach ``before_provider_call``.
            _commit(factory, runtime, report, results, settled)
            results = []
    if grouped:
        _send_group(factory, runtime, report, results, grouped, lost, settled)
        results = []
    # Not in a ``finally``: after an unexpected error the result stays unrecorded, the claim's lease
    # runs out, and the reclaim decides, as after a crash.
    if results:
        _commit(factory, runtime, report, results, settled)


def _call(attempt: _Attempt, call: _Call) -> None:
    """Call the provider; what it answered goes into ``attempt``."""
    connector, message, provider_settings = call
    try:
        attempt.delivery = connector.send(message, provider_settings)
        crash_point("after_provider_accept_before_ledger")
    except ConnectorError as exc:
        attempt.error = exc
    except (LookupError, EngineError) as exc:
        attempt.error = ConnectorError(str(exc))


def _send_group(factory: sessionmaker[Session], runtime: Callable[[], Runtime], report: DispatchReport,
                results: list[tuple[Outgoing, _Attempt]], grouped: list[tuple[Outgoing, _Attempt, _Call]],
                lost: Callable[[int], bool], settled: Callable[[int], None]) -> None:
    """Mark a group of messages ``sending`` in one commit (with ``results``, still unrecorded), send
    each, and record all their results in one more (``_record_group``).

    Only for providers that recognise a repeat and are not routed per customer (``_idempotent``):
    after a crash anywhere in between, every message of the group is ``sending``, and the reclaim
    sends each again with its key, which the provider drops if it had it already. The rule that
    at most one message is in doubt buys nothing there. A message is still never sent before the
    commit that marks it, nor after its claim was taken over.
    """
    marked = _commit(factory, runtime, report, results, settled, mark=[out for out, _a, _c in grouped])
    sent: list[tuple[Outgoing, _Attempt]] = []
    for out, attempt, call in grouped:
        if out.mid not in marked or lost(out.mid):
            settled(out.mid)  # claimed again by someone else meanwhile: the newer claim sends it
            continue
        crash_point("before_provider_call")
        _call(attempt, call)
        sent.append((out, attempt))
    _record_group(factory, runtime, report, sent, settled)


def _record_group(factory: sessionmaker[Session], runtime: Callable[[], Runtime], report: DispatchReport,
                  sent: list[tuple[Outgoing, _Attempt]], settled: Callable[[int], None]) -> None:
    """The results of a group in one transaction (``_record_all``); if that cannot be, one per result."""
    if len(sent) > 1 and all(attempt.error is None for _out, attempt in sent):
        try:
            with factory.begin() as session:
                _record_all(session, runtime(), sent)
        except (_OneByOne, StaleDataError, EngineError) as exc:
            # Rolled back whole: each result is recorded on its own below, as without a group.
            log.debug("the results of a group of %d messages are recorded one by one: %r", len(sent), exc)
        else:
            report.sent += len(sent)
            for out, _attempt in sent:
                settled(out.mid)
                crash_point("after_ledger_before_ack")
            return
    for out, attempt in sent:
        # The instances are read afresh: the copies kept may be what made the group fail.
        _commit(factory, runtime, report, [(replace(out, instance=None), attempt)], settled)


class _OneByOne(Exception):
    """A group's results cannot be recorded in one transaction (two of one instance, a claim lost)."""


_SETTLE_SENT = (update(OutboxMessage)
                .where(OutboxMessage.id == bindparam("b_id"), OutboxMessage.status == "sending")
                .values(status="sent", channel=bindparam("b_channel"),
                        provider_ref=func.coalesce(bindparam("b_ref", type_=OutboxMessage.provider_ref.type),
                                                   OutboxMessage.provider_ref),
                        sent_at=bindparam("b_at", type_=OutboxMessage.sent_at.type), last_error=None, lease_until=None))
_SETTLE_SENT_FENCED = _SETTLE_SENT.where(OutboxMessage.attempts == bindparam("b_attempt"))


def _record_all(session: Session, rt: Runtime, sent: list[tuple[Outgoing, _Attempt]]) -> None:
    """What ``_record`` does for each message sent, for all of them: one UPDATE settles every row
    (each still ``sending`` under its claim, or the group fails), one INSERT logs them (fenced),
    and the instances that waited are advanced together (``batch_results.deliver_results``)."""
    fenced = [out.fence for out, _a in sent if out.fence is not None]
    if fenced and len(fenced) != len(sent):
        raise _OneByOne("fenced and unfenced messages in one group")
    params = []
    for out, attempt in sent:
        row = {"b_id": out.mid, "b_channel": attempt.channel, "b_ref": (attempt.delivery or Delivery()).provider_ref,
               "b_at": rt.now}
        if out.fence is not None:
            row["b_attempt"] = out.fence.attempt
        params.append(row)
    matched = execute_rows(session.connection(), _SETTLE_SENT_FENCED if fenced else _SETTLE_SENT, params).rowcount
    if matched != len(params):
        raise _OneByOne(f"{len(params) - matched} message(s) of the group changed meanwhile")
    written = []
    for out, attempt in sent:
        claimed = out.claimed
        assert claimed is not None
        written.append(_Written(out.mid, "sent", claimed.instance_id, claimed.token, claimed.gen, claimed.wait,
                                claimed.customer_id, claimed.message.params, claimed.message.connector,
                                claimed.message.effect_key, attempt.channel))
    if fenced:
        fenced[0].recorded_group(session, list(zip(fenced, written, strict=True)))
    writes = Writes(session, batch=True)
    waiting = []
    for (out, attempt), row, param in zip(sent, written, params, strict=True):
        result = {"provider_ref": param["b_ref"], **dict((attempt.delivery or Delivery()).detail)}
        if row.customer_id is not None:
            writes.timeline(row.customer_id, rt.now, *_timeline_entry(row, "sent", result), row.instance_id)
        if row.wait and row.instance_id is not None and row.token is not None:
            waiting.append(Result(row.instance_id, ev.ActionDone(row.token, row.gen or 0, result), out.instance))
    if not deliver_results(session, rt, waiting, writes):
        raise _OneByOne("two messages of one instance")
    writes.flush()


def _prepare(
    factory: sessionmaker[Session], runtime: Callable[[], Runtime], resolve: Resolve, claimed: Claimed,
    unrecorded: Sequence[tuple[Outgoing, _Attempt]] = (),
) -> tuple[_Attempt, _Call | None]:
    """Route a message and apply consent and caps; the provider call to make, or None (suppressed, failed).

    ``unrecorded``: results of this call not committed yet, which a marketing cap counts too.
    """
    message, category, customer_id = claimed.message, claimed.category, claimed.customer_id
    customer_data = message.customer
    attempt = _Attempt()
    try:
        connector, message, provider_settings, attempt.channel, cap, attempt.resendable = _route(resolve, message, customer_data)
        attempt.idempotent = bool(connector.idempotent)
        # A reminder to an employee: no customer's consent or marketing cap applies to it.
        staff = category == STAFF_CATEGORY
        if not staff and _opted_out(attempt.channel, customer_data):
            attempt.suppressed = "opted_out"
        elif not staff and category == "marketing" and cap is not None \
                and _over_cap(factory, customer_id, attempt.channel, cap, runtime().now,
                              _sent_unrecorded(unrecorded, customer_id, attempt.channel)):
            attempt.suppressed = "frequency_cap"
        else:
            return attempt, (connector, message, provider_settings)
    except ConnectorError as exc:
        attempt.error = exc
    except (LookupError, EngineError) as exc:
        # An unknown connector or undecryptable settings: fail this message visibly, not the tick.
        attempt.error = ConnectorError(str(exc))
    return attempt, None


def _commit(factory: sessionmaker[Session], runtime: Callable[[], Runtime], report: DispatchReport,
            results: list[tuple[Outgoing, _Attempt]], settled: Callable[[int], None],
            mark: Sequence[Outgoing] = ()) -> set[int]:
    """One transaction: record these results, then mark the messages of ``mark`` ``sending``; the ids marked.

    An instance another transition changed meanwhile (a worker elsewhere fired its timer) fails
    the transaction; it is tried again on the fresh state, the marking with it.
    """
    for tries in range(RECORD_TRIES):
        outcomes: list[str] = []
        try:
            with factory.begin() as session:
                rt = runtime()
                for out, attempt in results:
                    # A retry reads every instance afresh: the copy kept is what lost the race.
                    recorded = _record(session, rt, out.mid, attempt, out.fence, out.instance if tries == 0 else None)
                    if recorded is not None:
                        outcome, row = recorded
                        outcomes.append(outcome)
                        if out.fence is not None:
                            out.fence.recorded(session, row)
                marked = _mark_sending(session, mark) if mark else set()
            break
        except StaleDataError:
            if tries == RECORD_TRIES - 1:
                raise
    for outcome in outcomes:  # counted once committed, not once per try
        setattr(report, outcome, getattr(report, outcome) + 1)
    for out, _attempt in results:
        settled(out.mid)
        crash_point("after_ledger_before_ack")
    return marked


# Prebuilt: a message's result is recorded, and the next one marked, once per message sent.
_OUTBOX_BY_ID = select(OutboxMessage).where(OutboxMessage.id == bindparam("b_id"))
_MARK_SENDING = (update(OutboxMessage).where(OutboxMessage.id == bindparam("b_id"), OutboxMessage.status == "claimed")
                 .values(status="sending"))
_MARK_SENDING_FENCED = (update(OutboxMessage)
                        .where(OutboxMessage.id == bindparam("b_id"), OutboxMessage.status == "claimed",
                               OutboxMessage.attempts == bindparam("b_attempt"))
                        .values(status="sending", lease_until=bindparam("b_until")))


def _mark_sending(session: Session, messages: Sequence[Outgoing]) -> set[int]:
    """That their providers are about to be called (committed before they are); the ids still
    claimed as the caller holds them (a claim lost meanwhile is not marked).

    Core statements on the session's connection: no loaded object is one of these rows (the
    results recorded in the same transaction are other messages'), so the ORM has nothing to
    sync. A group (``_send_group``) is marked by one statement that returns the ids it marked.
    """
    conn = session.connection()
    if len(messages) == 1:
        mid, fence = messages[0].mid, messages[0].fence
        if fence is None:
            result = execute_rows(conn, _MARK_SENDING, [{"b_id": mid}])
        else:
            result = execute_rows(conn, _MARK_SENDING_FENCED,
                                  [{"b_id": mid, "b_attempt": fence.attempt, "b_until": fence.lease_until()}])
        return {mid} if result.rowcount else set()
    marked: set[int] = set()
    plain = [out.mid for out in messages if out.fence is None]
    if plain:
        marked.update(conn.scalars(update(OutboxMessage).where(OutboxMessage.id.in_(plain), OutboxMessage.status == "claimed")
                                   .values(status="sending").returning(OutboxMessage.id)))
    fences = [(out.mid, out.fence) for out in messages if out.fence is not None]
    if fences:
        # The task's claims share one lease: the latest end any of them asks for.
        until = max(fence.lease_until() for _mid, fence in fences)
        pairs = [(mid, fence.attempt) for mid, fence in fences]
        marked.update(conn.scalars(
            update(OutboxMessage)
            .where(tuple_(OutboxMessage.id, OutboxMessage.attempts).in_(pairs), OutboxMessage.status == "claimed")
            .values(status="sending", lease_until=until).returning(OutboxMessage.id)))
    return marked


class Fence(Protocol):
    """A distributed claim: the attempt number the task was published with, and its lease."""

    attempt: int

    def lease_until(self) -> datetime: ...

    def recorded(self, session: Session, row: OutboxMessage | _Written) -> None: ...

    def recorded_group(self, session: Session, rows: Sequence[tuple[Fence, _Written]]) -> None:
        """``recorded`` for each of these rows under its fence (this one among them), in one go."""


@dataclass(frozen=True)
class _Written:
    """The columns of a message row that settling it needs, as its recording UPDATE returned them."""

    id: int
    status: str
    instance_id: int | None
    token: str | None
    gen: int | None
    wait: bool
    customer_id: int | None
    payload: Mapping[str, Any]
    connector: str
    effect_key: str
    channel: str | None


_RETURNED = (OutboxMessage.instance_id, OutboxMessage.token, OutboxMessage.gen, OutboxMessage.wait,
             OutboxMessage.customer_id, OutboxMessage.payload, OutboxMessage.connector, OutboxMessage.effect_key)
_SETTLE = (update(OutboxMessage)
           .where(OutboxMessage.id == bindparam("b_id"), OutboxMessage.status.in_(("claimed", "sending")))
           .values(status=bindparam("b_status"), channel=bindparam("b_channel"),
                   provider_ref=func.coalesce(bindparam("b_ref", type_=OutboxMessage.provider_ref.type), OutboxMessage.provider_ref),
                   last_error=bindparam("b_error", type_=OutboxMessage.last_error.type),
                   sent_at=bindparam("b_at", type_=OutboxMessage.sent_at.type), lease_until=None)
           .returning(*_RETURNED))
_SETTLE_FENCED = _SETTLE.where(OutboxMessage.attempts == bindparam("b_attempt"))


def _record(session: Session, rt: Runtime, mid: int, attempt: _Attempt, fence: Fence | None = None,
            instance: Instance | None = None) -> tuple[str, OutboxMessage | _Written] | None:
    """Write one message's result; what it was (a ``DispatchReport`` field) and the row, or None if not ours.

    A message sent or suppressed (nearly all of them) is settled by one UPDATE that checks that
    the claim is still this one and returns what comes next needs; errors go through the ORM.
    """
    if attempt.error is None:
        status = "suppressed" if attempt.suppressed else "sent"
        ref = None if attempt.suppressed else (attempt.delivery or Delivery()).provider_ref
        params = {"b_id": mid, "b_status": status, "b_channel": attempt.channel, "b_ref": ref,
                  "b_error": attempt.suppressed, "b_at": rt.now}
        if fence is not None:
            params["b_attempt"] = fence.attempt
        returned = session.connection().execute(_SETTLE if fence is None else _SETTLE_FENCED, params).first()
        if returned is None:
            return None  # an admin or a reclaim changed it meanwhile, or the lease was taken over
        row = _Written(mid, status, *returned, channel=attempt.channel)
        if attempt.suppressed:
            _settled(session, rt, row, status, {"suppressed": attempt.suppressed}, instance)
            return "suppressed", row
        delivery = attempt.delivery or Delivery()
        _settled(session, rt, row, status, {"provider_ref": ref, **dict(delivery.detail)}, instance)
        return "sent", row
    loaded = cust.load_by_id(session, OutboxMessage, _OUTBOX_BY_ID, mid)
    assert loaded is not None
    if loaded.status not in ("claimed", "sending"):
        return None  # an admin or a reclaim changed it meanwhile
    if fence is not None and loaded.attempts != fence.attempt:
        return None  # the lease was taken over: this worker's result is stale
    loaded.channel = attempt.channel
    error = attempt.error
    if getattr(error, "ambiguous", False) and not attempt.idempotent:
        _unknown(session, loaded, rt.now, f"{error} — not resent, since the provider cannot recognise a repeat")
        return "unknown", loaded
    if error.retryable and loaded.attempts < loaded.max_attempts:
        loaded.status = "pending"
        loaded.last_error = str(error)
        loaded.lease_until = None
        loaded.next_attempt_at = rt.now + _backoff(loaded.attempts, loaded.backoff_seconds, error.retry_after)
        return "retried", loaded
    _fail(session, rt, loaded, str(error))
    return "failed", loaded


def _route(
    resolve: Resolve, message: Message, customer: Mapping[str, Any] | None
) -> tuple[Connector, Message, Mapping[str, Any], str | None, int | None, bool]:
    """The connector that really sends, the message as sent, its settings, the channel, the marketing
    cap, and whether a crash while it is ``sending`` resends it (``_idempotent``: never a routed one)."""
    connector, settings = resolve(message.connector)
    if not getattr(connector, "routes", False):
        return connector, message, settings, connector.channel, settings.get("marketing_per_week"), bool(connector.idempotent)
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
    return provider_connector, routed, provider_settings, channel, channel_settings.get("marketing_per_week"), False


def _sent_unrecorded(unrecorded: Sequence[tuple[Outgoing, _Attempt]], customer_id: int | None, channel: str | None) -> int:
    """Marketing messages to this customer and channel sent by this call whose results are not committed yet."""
    return sum(1 for out, attempt in unrecorded
               if out.claimed is not None and out.claimed.category == "marketing" and out.claimed.customer_id == customer_id
               and attempt.channel == channel and attempt.error is None and not attempt.suppressed)


def _over_cap(factory: sessionmaker[Session], customer_id: int | None, channel: str | None, cap: int, now: datetime,
              unrecorded: int = 0) -> bool:
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
    return int(sent or 0) + unrecorded >= int(cap)


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
    _settled(session, rt, row, status, result)


def _settled(session: Session, rt: Runtime, row: OutboxMessage | _Written, status: str, result: Mapping[str, Any],
             instance: Instance | None = None) -> None:
    """What follows a message sent or suppressed: the customer's timeline, and the step that waited for it.

    ``instance``: the message's instance as last committed by this worker, if it holds it (see ``Outgoing``).
    """
    if row.customer_id is not None:
        cust.add_timeline(session, row.customer_id, rt.now, *_timeline_entry(row, status, result), row.instance_id)
    if row.wait and row.instance_id is not None and row.token is not None:
        deliver(session, rt, _instance(session, row.instance_id, instance), ev.ActionDone(row.token, row.gen or 0, dict(result)))


def _timeline_entry(row: OutboxMessage | _Written, status: str,
                    result: Mapping[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The customer's timeline entry for a message sent or suppressed: its kind, title and data."""
    text = str(row.payload.get("subject") or row.payload.get("text") or row.connector)
    channel = row.channel or row.connector
    zh, en = ("已发送", "sent") if status == "sent" else SUPPRESSED[str(result.get("suppressed"))]
    return (f"message_{status}", {"zh": f"{channel} {zh}：{text}", "en": f"{channel} {en}: {text}"},
            {"connector": row.connector, "channel": channel, "effect_key": row.effect_key, "status": status,
             **({"reason": result["suppressed"]} if status == "suppressed" else {})})


def _instance(session: Session, instance_id: int, known: Instance | None) -> Instance:
    """The instance, from ``known`` when that is its last committed state held by no session, else read."""
    return attach_known(session, instance_id, known) or get_instance(session, instance_id)


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

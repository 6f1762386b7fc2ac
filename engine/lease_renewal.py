"""Lease renewal: a heartbeat keeps a worker's claims alive while it works on them.

A claim (``engine.scale``) holds for ``CAREFLOW_LEASE_SECONDS``; after that a scheduler may hand
the work to another worker. Work that runs longer than the lease (a slow SMTP server, a batch of
timers waiting its turn in one task) would then run twice at once: the attempt number (the fence)
stops the first worker's commit, but not a provider call already under way. So while a worker
holds claims, a thread renews them every third of the lease, with a compare-and-set on the
attempt number: a claim another scheduler took over meanwhile is *lost*, is no longer renewed,
and the work checks ``lost`` before calling a provider (the compare-and-sets of the work itself
stay the last word: a renewal only ever delays a takeover, it never makes a stale claim current).

A renewal runs in its own short transaction. On PostgreSQL it skips rows locked by another
transaction (usually this worker's own, firing the timer or recording the result: a claim
cannot take a locked row either, since it uses ``SKIP LOCKED``); whether a skipped row is still
this worker's is then read without a lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from engine.store.models import OutboxMessage, Timer

log = logging.getLogger(__name__)

#: Renewals per lease: a renewal may be late by two thirds of the lease before a claim runs out.
RENEWALS_PER_LEASE = 3
#: Claims still being worked on (settled ones are not renewed, and are not "lost" either).
_OPEN_MESSAGE = ("claimed", "sending")


def renew_timers(session: Session, claims: dict[int, int], until: datetime) -> set[int]:
    """Extend the leases of these ``{timer id: attempt}`` claims; returns the ids that were taken over."""
    if not claims:
        return set()
    pairs = list(claims.items())
    mine = (tuple_(Timer.id, Timer.attempt).in_(pairs), Timer.status == "pending")
    _renew(session, Timer, mine, until)
    rows = session.execute(select(Timer.id, Timer.attempt).where(Timer.id.in_(list(claims)))).all()
    return {int(i) for i, attempt in rows if int(attempt) != claims[int(i)]}


def renew_messages(session: Session, claims: dict[int, int], until: datetime) -> set[int]:
    """Extend the leases of these ``{message id: attempt}`` claims; returns the ids that were taken over.

    A reclaim hands an expired message back (``pending``) without changing its attempt number,
    so a pending row counts as taken over too.
    """
    if not claims:
        return set()
    pairs = list(claims.items())
    mine = (tuple_(OutboxMessage.id, OutboxMessage.attempts).in_(pairs), OutboxMessage.status.in_(_OPEN_MESSAGE))
    _renew(session, OutboxMessage, mine, until)
    rows = session.execute(select(OutboxMessage.id, OutboxMessage.attempts, OutboxMessage.status)
                           .where(OutboxMessage.id.in_(list(claims)))).all()
    return {int(i) for i, attempts, status in rows if int(attempts) != claims[int(i)] or status == "pending"}


def _renew(session: Session, model: Any, mine: tuple[Any, ...], until: datetime) -> None:
    if session.get_bind().dialect.name == "postgresql":
        # Never wait for a row lock: the holder is this worker's own transaction or a claimer.
        ids = select(model.id).where(*mine).with_for_update(skip_locked=True).scalar_subquery()
        statement = update(model).where(model.id.in_(ids))
    else:
        statement = update(model).where(*mine)  # SQLite: writers are serialised anyway
    session.execute(statement.values(lease_until=until).execution_options(synchronize_session=False))


class Heartbeat:
    """Renews the claims a worker holds while it works on them; a context manager.

    ``hold_*`` adds claims (with the attempt number they were made with), ``release_*`` drops them
    once their work committed or was given up; ``lost_timer`` / ``lost_message`` say whether a
    claim was taken over by a newer one.
    """

    def __init__(self, sessions: sessionmaker[Session], lease: timedelta, wall: Callable[[], datetime],
                 interval: float | None = None):
        self.sessions = sessions
        self.lease = lease
        self.wall = wall
        self.interval = interval if interval is not None else max(0.05, lease.total_seconds() / RENEWALS_PER_LEASE)
        self._timers: dict[int, int] = {}
        self._messages: dict[int, int] = {}
        self._lost_timers: set[int] = set()
        self._lost_messages: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0

    # ----- the claims held ----------------------------------------------------------------------

    def hold_timers(self, claims: Iterable[tuple[int, int]]) -> None:
        with self._lock:
            self._timers.update(claims)

    def hold_messages(self, claims: Iterable[tuple[int, int]]) -> None:
        with self._lock:
            self._messages.update(claims)

    def release_timer(self, timer_id: int) -> None:
        with self._lock:
            self._timers.pop(timer_id, None)

    def release_message(self, message_id: int) -> None:
        with self._lock:
            self._messages.pop(message_id, None)

    def lost_timer(self, timer_id: int) -> bool:
        with self._lock:
            return timer_id in self._lost_timers

    def lost_message(self, message_id: int) -> bool:
        with self._lock:
            return message_id in self._lost_messages

    # ----- renewing -----------------------------------------------------------------------------

    def renew(self) -> None:
        """One renewal of every claim held (the thread calls it; tests may call it directly)."""
        with self._lock:
            timers, messages = dict(self._timers), dict(self._messages)
        if not timers and not messages:
            return
        until = self.wall() + self.lease
        with self.sessions.begin() as session:
            lost_t = renew_timers(session, timers, until)
            lost_m = renew_messages(session, messages, until)
        self.renewals += 1
        if lost_t or lost_m:
            log.warning("claims taken over by another worker while this one worked on them: timers %s, messages %s; "
                        "their results will not be committed", sorted(lost_t), sorted(lost_m))
        with self._lock:
            self._lost_timers |= lost_t
            self._lost_messages |= lost_m
            for t in lost_t:
                self._timers.pop(t, None)  # a lost claim is not renewed again
            for m in lost_m:
                self._messages.pop(m, None)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except Exception:  # the database is away: try again next beat; the lease may run out
                log.exception("could not renew the leases of this worker's claims")

    def __enter__(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name="careflow-lease-renewal", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


__all__ = ["Heartbeat", "renew_messages", "renew_timers"]

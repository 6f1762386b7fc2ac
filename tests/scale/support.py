"""What the scale-out tests and bench/scale.py run in every scheduler and worker process.

``CAREFLOW_FACTORY=tests.scale.support:build`` makes ``careflow scheduler`` / ``careflow worker``
build their engine here: the database of ``CAREFLOW_DATABASE_URL``, the clock of
``CAREFLOW_CLOCK_FILE`` (one file moves the time of every process), and the logging provider
registered as ``scale_log``.

The provider is a fake on purpose (no real e-mail or SMS service can run here): it appends one
line per request to ``CAREFLOW_SCALE_LEDGER`` with a single ``write`` on an ``O_APPEND`` file,
so lines from several processes never interleave, and a process killed right after the call
still leaves its line behind. It de-duplicates on the idempotency key the way Resend-style APIs
do, so the engine may resend a message whose outcome it lost (RELIABILITY T01 b): such a resend
carries the same key and a newer attempt number. Two requests under the *same* claim (key and
attempt) would mean two workers sent for one claim, which fencing must make impossible.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from connectors.base import Delivery, Message
from connectors.registry import Registry
from engine.clock import FileClock, SystemClock
from engine.core import Careflow

FLOWS = Path(__file__).parent / "flows"
FLOW_ID = "scale_wait_send"


class LoggingProvider:
    name: ClassVar[str] = "scale_log"
    channel: ClassVar[str | None] = None
    idempotent: ClassVar[bool] = True
    settings_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}
    message_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}  # the parameters an action may give

    def __init__(self) -> None:
        self.ledger = os.environ.get("CAREFLOW_SCALE_LEDGER")
        # A slow provider (``CAREFLOW_SCALE_SLOW_SECONDS``): the request is logged, then the answer
        # takes this long, like an SMTP server that accepts the connection and stalls.
        self.slow = float(os.environ.get("CAREFLOW_SCALE_SLOW_SECONDS") or 0)

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        if self.ledger:
            fd = os.open(self.ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{message.effect_key}\t{message.attempt}\t{os.getpid()}\n".encode())
            finally:
                os.close(fd)
        if self.slow:
            time.sleep(self.slow)
        return Delivery(provider_ref=f"log-{message.effect_key}")


def registry() -> Registry:
    reg = Registry()
    reg.register(LoggingProvider(), "scale_log")
    return reg


def build() -> Careflow:
    clock_file = os.environ.get("CAREFLOW_CLOCK_FILE")
    return Careflow(os.environ["CAREFLOW_DATABASE_URL"], clock=FileClock(clock_file) if clock_file else SystemClock(),
                    registry=registry(), migrate_schema=False)


def ledger_counts(path: Path) -> Counter[tuple[str, int]]:
    """Requests per (idempotency key, attempt number of the claim that sent it)."""
    if not path.exists():
        return Counter()
    lines = (line.split("\t") for line in path.read_text().splitlines() if line)
    return Counter((key, int(attempt)) for key, attempt, _pid in lines)

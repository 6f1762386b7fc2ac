"""Named crash points for the crash sweep: kill the process at a chosen place, on a chosen hit.

Armed only through the environment (``CAREFLOW_CRASH_AT=name``, ``CAREFLOW_CRASH_HIT=N``), read
once per process (see ``rearm``), so a normal run pays one comparison per point.
"""

from __future__ import annotations

import os

POINTS = (
    "after_claim",
    "before_step_tx_commit",
    "after_step_tx_commit",
    "after_outbox_insert",
    "before_provider_call",
    "after_provider_accept_before_ledger",
    "after_ledger_before_ack",
    "before_timer_fire_commit",
    "after_timer_fire_commit",
    "during_form_submit_tx",
)

_hits: dict[str, int] = {}

#: (point, hit) as the environment armed them, read at the first crash point a process reaches:
#: points are passed several times per request, and reading the environment costs each time.
_armed: tuple[str | None, str] | None = None


def rearm() -> None:
    """Read the arming from the environment again at the next crash point.

    A forked process does so by itself (the crash sweep's fork server arms each child after the
    fork); call this after changing the environment in a running process.
    """
    global _armed
    _armed = None


os.register_at_fork(after_in_child=rearm)


def crash_point(name: str) -> None:
    """Exit at once with status 137 if this point is armed and its hit count is reached."""
    global _armed
    armed = _armed
    if armed is None:
        armed = _armed = (os.environ.get("CAREFLOW_CRASH_AT"), os.environ.get("CAREFLOW_CRASH_HIT", "1"))
    if armed[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(armed[1]):
        os._exit(137)

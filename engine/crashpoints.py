"""Named crash points for the crash sweep: kill the process at a chosen place, on a chosen hit.

Armed only through the environment (``CAREFLOW_CRASH_AT=name``, ``CAREFLOW_CRASH_HIT=N``), so a
normal run never pays more than one dictionary lookup.
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


def crash_point(name: str) -> None:
    """Exit at once with status 137 if this point is armed and its hit count is reached."""
    armed = os.environ.get("CAREFLOW_CRASH_AT")
    if armed != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(os.environ.get("CAREFLOW_CRASH_HIT", "1")):
        os._exit(137)

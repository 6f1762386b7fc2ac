"""Careflow's engine: flows, forms, the durable runtime and its store.

The names below are the public Python API; they are imported lazily so that the pure parts
(``engine.flow``, ``engine.expr``, ``engine.forms``) load without SQLAlchemy or Flask.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Careflow": "engine.core",
    "load_flow": "engine.flow.loader",
    "load_flow_text": "engine.flow.loader",
    "load_form": "engine.forms",
    "check_submission": "engine.forms",
    "FixedClock": "engine.clock",
    "SystemClock": "engine.clock",
    "BusinessCalendar": "engine.calendar",
    "EngineError": "engine.errors",
    "FlowInvalid": "engine.errors",
    "FormInvalid": "engine.errors",
    "SubmissionInvalid": "engine.errors",
    "Conflict": "engine.errors",
    "NotFound": "engine.errors",
    "Problem": "engine.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")

"""Instance status, its allowed transitions, and the versioned JSON state of an instance."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from engine.errors import InvalidTransition


class Status(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.RUNNING: frozenset({Status.RUNNING, Status.COMPLETED, Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.CANCELLED: frozenset(),
}


def check_transition(current: Status, new: Status) -> None:
    if new not in TRANSITIONS[current]:
        raise InvalidTransition(f"an instance that is {current.value} cannot become {new.value}")


SCHEMA_VERSION = 1


def new_state(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "status": Status.RUNNING.value,
        "outcome": None,
        "vars": copy.deepcopy(dict(variables)) if variables else {},
        "tokens": {},
        "splits": {},
        "visits": {},
        "seq": 0,
    }


# Stored states are upgraded on load, one version at a time; a state written by an older release
# must keep running after an upgrade (SpiffWorkflow's serializer breakage is the lesson).
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def load_state(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a stored state, migrated to the current schema version."""
    state = copy.deepcopy(dict(stored))
    version = int(state.get("schema_version", 1))
    if version > SCHEMA_VERSION:
        raise ValueError(f"instance state version {version} is newer than this release ({SCHEMA_VERSION})")
    while version < SCHEMA_VERSION:
        state = MIGRATIONS[version](state)
        version += 1
        state["schema_version"] = version
    return state

"""Many messages' results delivered to their instances in one transaction, as ``batch.fire_timers`` fires timers.

``outbox.deliver_claimed`` records the results of a group of messages sent through a provider
that recognises a repeat in one transaction (docs/decisions/0012-grouped-message-results.md).
Each instance that waited for one of them is advanced by its result event exactly as
``instances.deliver`` would do it; what changes is how the rows are read and written: the
instances the caller does not hold already, and their customers, are loaded with one query per
table, and the rows of every instance are gathered in the caller's ``Writes(batch=True)`` and
written together at its flush, each instance's optimistic lock (``revision``) checked. Any
failure raises and the caller rolls the whole group back, then records the results one per
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import inspect
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from engine.errors import InstanceLookupError
from engine.runtime import events as ev
from engine.store.batch import _CUSTOMERS, _INSTANCES, _by_id
from engine.store.definitions import flow_of_version
from engine.store.instances import Runtime, Writes, _run
from engine.store.models import Instance


@dataclass(frozen=True)
class Result:
    """One message's result for the instance that waited for it, and that instance as the caller
    last committed it (``known``, detached; None: read it here)."""

    instance_id: int
    event: ev.Event
    known: Instance | None = None


def attach_known(session: Session, instance_id: int, known: Instance | None) -> Instance | None:
    """``known`` added to the session when it is that instance's last committed state and the
    session holds no copy of its own; else None (the instance must be read)."""
    if known is None:
        return None
    key = identity_key(Instance, instance_id)
    state = inspect(known)  # its state, not its attributes: an expired one cannot load them detached
    # Expired: a rollback (see ``written_here``) made its values unknown, so they are read again.
    if state.key != key or not state.detached or state.expired_attributes or key in session.identity_map:
        return None
    session.add(known)
    return known


def deliver_results(session: Session, rt: Runtime, results: Sequence[Result], writes: Writes) -> bool:
    """Advance each result's instance by its event (in this order), the rows gathered in ``writes``.

    False, with nothing done, when two results belong to one instance: the second must see what
    the first one did, so they go one per transaction. An instance no longer running takes the
    event as ``deliver`` would (the interpreter ignores a token that no longer waits).
    """
    ids = [r.instance_id for r in results]
    if len(set(ids)) != len(ids):
        return False
    instances = {}
    for r in results:
        held = attach_known(session, r.instance_id, r.known)
        if held is not None:
            instances[r.instance_id] = held
    missing = [i for i in ids if i not in instances]
    if missing:
        instances.update(_by_id(session, _INSTANCES, missing))
    customer_ids = [i.customer_id for i in instances.values() if i.customer_id is not None]
    customers = _by_id(session, _CUSTOMERS, customer_ids) if customer_ids else {}
    for r in results:
        instance = instances.get(r.instance_id)
        if instance is None:
            raise InstanceLookupError(r.instance_id)
        customer = customers.get(instance.customer_id) if instance.customer_id is not None else None
        _run(session, rt, instance, flow_of_version(session, instance.flow_version_id), customer, r.event, writes)
        writes.request_done()
    return True

"""The connector interface: how Careflow reaches the outside world.

A connector is a class with a ``name``, the ``channel`` it speaks on (for consent checks), a
``settings_schema`` the admin pages render, a ``message_schema`` (the parameters a flow's action
step may pass it, checked by ``careflow validate``), and ``send``. Delivery goes through the outbox: the
dispatcher calls ``send`` after the step's transaction committed, with the message's idempotency
key, and retries on ``ConnectorError(retryable=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Message:
    """One outgoing message, as the outbox row holds it."""

    effect_key: str
    connector: str
    params: Mapping[str, Any]
    customer: Mapping[str, Any] | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the provider answered."""

    provider_ref: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class ConnectorError(Exception):
    """Raised when a send failed; ``retryable`` tells the dispatcher whether to try again."""

    def __init__(self, message: str, *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class TransientConnectorError(ConnectorError):
    """Raised for failures worth retrying: timeouts, 5xx, 429."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message, retryable=True, retry_after=retry_after)


class AmbiguousSendError(TransientConnectorError):
    """Raised when the request went out but no answer came back: the provider may have accepted it.

    Retrying is safe only for connectors that de-duplicate on the key (``idempotent``); for the
    others the dispatcher records the send as unknown and raises an incident.
    """

    ambiguous = True


#: Channels that reach staff or systems, not customers: a customer's opt-out does not apply.
STAFF_CHANNELS = frozenset({"webhook", "wecom", "dingtalk", "feishu"})


class ConnectorLookupError(LookupError):
    """Raised when no connector has the given name."""

    def __init__(self, name: str):
        super().__init__(f"No connector by the name {name!r} was found")
        self.name = name


@runtime_checkable
class Connector(Protocol):
    name: ClassVar[str]
    channel: ClassVar[str | None]
    #: True when a resend with the same effect_key cannot reach the customer twice.
    idempotent: ClassVar[bool]
    settings_schema: ClassVar[Mapping[str, Any]]
    #: JSON Schema of an action step's ``params`` (see connectors.messages).
    message_schema: ClassVar[Mapping[str, Any]]

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery: ...

"""Connectors by name: the entry-point group ``careflow.connectors`` plus explicit registrations."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from connectors.base import Connector, ConnectorLookupError

GROUP = "careflow.connectors"


class Registry:
    def __init__(self) -> None:
        self._classes: dict[str, type] = {}
        self._instances: dict[str, Connector] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=GROUP):
            self._classes.setdefault(ep.name, ep.load())

    def register(self, connector: type | Connector, name: str | None = None) -> None:
        """Add a connector class or a ready instance (tests, plugins); non-connectors raise TypeError."""
        instance = connector() if isinstance(connector, type) else connector
        if not isinstance(instance, Connector):
            raise TypeError(
                f"{type(instance).__name__} is not a connector: it needs name, channel, idempotent, settings_schema, message_schema and send()"
            )
        key = name or instance.name
        self._classes[key] = type(instance)
        self._instances[key] = instance

    def names(self) -> frozenset[str]:
        self._load()
        return frozenset(self._classes)

    def get(self, name: str) -> Connector:
        self._load()
        if name not in self._instances:
            cls = self._classes.get(name)
            if cls is None:
                raise ConnectorLookupError(name)
            instance = cls()
            if not isinstance(instance, Connector):
                raise TypeError(f"{cls.__name__} registered as {name!r} is not a connector")
            self._instances[name] = instance
        return self._instances[name]

    def message_schemas(self) -> dict[str, Mapping[str, Any]]:
        """Every connector type's message schema, for validating flows without a database."""
        return {name: self.get(name).message_schema for name in sorted(self.names())}

    def configurable(self) -> frozenset[str]:
        """The types a flow may address by configuration name (``feishu/care-team``)."""
        return frozenset(name for name in self.names() if getattr(self.get(name), "configurable", True))

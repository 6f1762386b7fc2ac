"""Attached connectors: admin-saved settings, secrets encrypted, resolved by name for delivery.

A configuration has a name (what flows and channels refer to) and a type (the connector class in
the registry). Channel configurations are named after the channel, ``email`` or ``sms``, have
the channel's type and name the provider configuration that carries them::

    smtp-main  type smtp   {host, port, username, password (secret), from_address}
    email      type email  {provider: smtp-main, marketing_per_week: 3}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import jsonschema
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.base import Connector, ConnectorLookupError
from connectors.registry import Registry
from engine.errors import Conflict, FieldError, NotFound, SubmissionInvalid
from engine.flow.model import CONFIGURATION_NAME, split_connector
from engine.secrets import SecretBox, mask, secret_fields
from engine.store.models import ConnectorConfig

NAME_PATTERN = CONFIGURATION_NAME.pattern


class ConnectorConfigLookupError(NotFound):
    """Raised when no attached connector has the given name."""

    kind = "connector"


def get_config(session: Session, name: str) -> ConnectorConfig:
    row = session.scalars(select(ConnectorConfig).where(ConnectorConfig.name == name)).first()
    if row is None:
        raise ConnectorConfigLookupError(name)
    return row


def _validate(connector: Connector, settings: Mapping[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(
        dict(connector.settings_schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [FieldError(e.json_path, _field_of(e), e.message, str(e.validator)) for e in validator.iter_errors(dict(settings))]
    check = getattr(connector, "check_settings", None)
    if check is not None:
        # Connectors that dial out check their address here (no private ranges, see connectors.net).
        try:
            check(settings)
        except ValueError as exc:
            errors.append(FieldError("$", "", str(exc), "invalid"))
    if errors:
        raise SubmissionInvalid(errors)


def _field_of(error: jsonschema.ValidationError) -> str:
    """The setting an error is about; for a missing one, its name (jsonschema reports the object)."""
    if error.path:
        return str(error.path[0])
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]
        return str(missing[0]) if missing else ""
    return ""


def save_config(
    session: Session,
    box: SecretBox,
    registry: Registry,
    name: str,
    type_: str,
    settings: Mapping[str, Any],
    *,
    now: datetime,
    by: str | None = None,
    enabled: bool = True,
) -> ConnectorConfig:
    """Create or update; a secret left out (or null) on update keeps its stored value."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise SubmissionInvalid([FieldError("$.name", "name", f"{name!r} is not a valid connector name", "pattern")])
    try:
        connector = registry.get(type_)
    except ConnectorLookupError as exc:
        raise SubmissionInvalid([FieldError("$.type", "type", str(exc), "enum")]) from exc
    row = session.scalars(select(ConnectorConfig).where(ConnectorConfig.name == name)).first()
    if row is not None and row.type != type_:
        raise Conflict(f"connector {name!r} is a {row.type} connector; delete it to change its type")
    secret_names = secret_fields(connector.settings_schema)
    merged = dict(settings)
    stored = dict(row.secrets) if row is not None else {}
    for field in secret_names:
        if merged.get(field) is None and field in stored:
            merged[field] = box.decrypt(stored[field])
        elif merged.get(field) is None:
            merged.pop(field, None)
    _validate(connector, merged)
    plain = {k: v for k, v in merged.items() if k not in secret_names}
    secrets = {k: box.encrypt(str(v)) for k, v in merged.items() if k in secret_names}
    if row is None:
        row = ConnectorConfig(name=name, type=type_, created_at=now)
        session.add(row)
    row.settings, row.secrets, row.enabled = plain, secrets, enabled
    row.updated_at, row.updated_by = now, by
    session.flush()
    return row


def masked(row: ConnectorConfig, box: SecretBox) -> dict[str, Any]:
    """A configuration as admins see it: secrets shown only as their last characters."""
    return {
        "name": row.name,
        "type": row.type,
        "enabled": row.enabled,
        "settings": {**row.settings, **{k: mask(box.decrypt(v)) for k, v in row.secrets.items()}},
        "updated_at": row.updated_at.isoformat(),
        "updated_by": row.updated_by,
    }


def full_settings(row: ConnectorConfig, box: SecretBox) -> dict[str, Any]:
    return {**row.settings, **{k: box.decrypt(v) for k, v in row.secrets.items()}}


def rotate_secrets(session: Session, box: SecretBox) -> int:
    """Re-encrypt every stored secret under the newest key; returns how many values changed."""
    count = 0
    for row in session.scalars(select(ConnectorConfig)):
        if row.secrets:
            row.secrets = {k: box.rotate(v) for k, v in row.secrets.items()}
            count += len(row.secrets)
    return count


class ConfigurationUnavailable(ConnectorLookupError):
    """Raised when a flow names a configuration (``feishu/care-team``) that is missing, disabled or of another type.

    The message names the configuration and says what to do; the delivery fails with an incident
    that an admin retries once the configuration is attached or enabled.
    """

    def __init__(self, reference: str, message: str):
        LookupError.__init__(self, message)
        self.name = reference


class Resolver:
    """Finds the connector and settings behind a name: an attached configuration, else a built-in.

    ``fallback`` holds settings given in code (tests, embedded defaults) for names that have no
    stored configuration.
    """

    def __init__(self, session_factory: Any, box: SecretBox, registry: Registry, fallback: Mapping[str, Mapping[str, Any]]):
        self.sessions = session_factory
        self.box = box
        self.registry = registry
        self.fallback = fallback

    def __call__(self, name: str, session: Session | None = None) -> tuple[Connector, Mapping[str, Any]]:
        """``session``: the caller's, when it already holds one (on SQLite a second one would wait for it)."""
        if session is None:
            with self.sessions() as own:
                return self._resolve(own, name)
        return self._resolve(session, name)

    def _resolve(self, session: Session, name: str) -> tuple[Connector, Mapping[str, Any]]:
        type_, config = split_connector(name)
        if config is not None:
            return self._named(session, type_, config)
        row = session.scalars(select(ConnectorConfig).where(ConnectorConfig.name == name)).first()
        if row is not None:
            if not row.enabled:
                raise ConfigurationUnavailable(
                    name, f"the connector configuration {name!r} is disabled; enable it "
                          f"(careflow connectors enable {name}) and retry this incident")
            return self.registry.get(row.type), full_settings(row, self.box)
        connector = self.registry.get(name)
        if name not in self.fallback and not getattr(connector, "routes", False) and connector.settings_schema.get("required"):
            # A provider type named in a flow with nothing attached under that name: say so, rather
            # than let the connector fail on its empty settings ("URL refused: empty").
            raise ConfigurationUnavailable(
                name, f"no connector configuration named {name!r} is attached; attach one (careflow connectors set "
                      f"{name} --type {name} --settings ...) or name an attached {name} configuration in the flow "
                      f"({name}/NAME), then retry this incident")
        return connector, self.fallback.get(name, {})

    def _named(self, session: Session, type_: str, config: str) -> tuple[Connector, Mapping[str, Any]]:
        reference = f"{type_}/{config}"
        row = session.scalars(select(ConnectorConfig).where(ConnectorConfig.name == config)).first()
        if row is None:
            raise ConfigurationUnavailable(
                reference, f"the flow sends through {reference!r}, but no connector configuration named {config!r} is "
                           f"attached; attach it (careflow connectors set {config} --type {type_} --settings ...) "
                           "and retry this incident")
        if row.type != type_:
            raise ConfigurationUnavailable(
                reference, f"the flow sends through {reference!r}, but the configuration {config!r} is a "
                           f"{row.type} connector, not {type_}")
        if not row.enabled:
            raise ConfigurationUnavailable(
                reference, f"the flow sends through {reference!r}, but the configuration {config!r} is disabled; "
                           f"enable it (careflow connectors enable {config}) and retry this incident")
        return self.registry.get(type_), full_settings(row, self.box)

"""Connector secrets encrypted at rest with MultiFernet; the keys live outside the database.

Keys come from ``CAREFLOW_SECRET_KEYS`` (comma-separated Fernet keys, newest first). Without it,
the embedded mode keeps one generated key in ``$CAREFLOW_HOME/secret.key`` (mode 0600), so a
copy of the database alone never reveals a password. Rotation: put a new key first, run
``careflow secrets rotate`` (every value re-encrypted under it), then drop the old key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from engine.errors import EngineError

KEY_FILE = "secret.key"
MASK = "••••"


class SecretsUnavailable(EngineError):
    """Raised when a stored secret cannot be decrypted with the configured keys."""

    code = "secrets_unavailable"
    status = 500


def _key_file(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("CAREFLOW_HOME", ".")) / KEY_FILE


def load_keys(environ: Mapping[str, str] | None = None) -> list[bytes]:
    env = os.environ if environ is None else environ
    configured = [k.strip() for k in env.get("CAREFLOW_SECRET_KEYS", "").split(",") if k.strip()]
    if configured:
        return [k.encode() for k in configured]
    path = _key_file(env)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not write two different keys.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return [path.read_bytes().strip()]
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
    return [path.read_bytes().strip()]


class SecretBox:
    """Encrypts with the first key, decrypts with any; the keys are read on first use."""

    def __init__(self, keys: list[bytes] | Callable[[], list[bytes]]):
        self._keys = keys
        self._fernet: MultiFernet | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SecretBox:
        return cls(lambda: load_keys(environ))

    @property
    def keys(self) -> list[bytes]:
        if callable(self._keys):
            self._keys = self._keys()
        return list(self._keys)

    @property
    def fernet(self) -> MultiFernet:
        if self._fernet is None:
            if not self.keys:
                raise ValueError("at least one secret key is needed")
            self._fernet = MultiFernet([Fernet(k) for k in self.keys])
        return self._fernet

    def encrypt(self, value: str) -> str:
        return self.fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self.fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise SecretsUnavailable("a stored secret cannot be decrypted with the configured keys (CAREFLOW_SECRET_KEYS)") from exc

    def rotate(self, token: str) -> str:
        try:
            return self.fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise SecretsUnavailable("a stored secret cannot be decrypted with the configured keys") from exc


def mask(value: str | None) -> str | None:
    """What the API shows of a secret: never more than its last four characters."""
    if not value:
        return None
    return MASK + (value[-4:] if len(value) >= 12 else "")


def secret_fields(schema: Mapping[str, Any]) -> frozenset[str]:
    """Fields a connector's settings schema marks secret (``x-secret`` or ``writeOnly``)."""
    props = schema.get("properties", {})
    return frozenset(k for k, v in props.items() if isinstance(v, Mapping) and (v.get("x-secret") or v.get("writeOnly")))

"""Who may do what: users, roles and record scope, API tokens, sign-in lockout, the audit log,
signed customer links and inbound webhook signatures.

Everything here works on a SQLAlchemy session and never commits; nothing imports Flask, so the
CLI and the engine use the same rules as the web app.
"""

from __future__ import annotations

from engine.auth.audit import audit

__all__ = ["audit"]

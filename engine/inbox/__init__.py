"""The employees' pages: the inbox, task forms, customer pages.

One blueprint, ``engine.inbox.bp``, registered by ``engine.app.create_app``; the views are in
``engine.inbox.views`` (inbox, tasks) and ``engine.inbox.customers``; record scope is the API's
(``engine.auth.scope``).
"""

from __future__ import annotations

from engine.inbox import customers as _customers  # noqa: F401  (registers the customer pages)
from engine.inbox import profile as _profile  # noqa: F401  (registers "My profile")
from engine.inbox.views import bp, task_url

__all__ = ["bp", "task_url"]

"""The employees' pages: the inbox, task forms, customer pages.

One blueprint, ``engine.inbox.bp``, registered by ``engine.app.create_app``; the views are in
``engine.inbox.views`` and record scope is the API's (``engine.auth.scope``).
"""

from __future__ import annotations

from engine.inbox.views import bp

__all__ = ["bp"]

"""The roles Careflow knows without configuration; admins may add custom roles to users."""

from __future__ import annotations

BUILTIN_ROLES = frozenset(
    {"admin", "designer", "account_manager", "team_lead", "service_agent", "service_lead"}
)

"""The security side of the ``Careflow`` facade: sign-in, users, tokens, webhooks, customer links.

``Careflow`` inherits these methods; like the rest of the facade, each one is one transaction and
writes its audit entries in that same transaction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from engine import forms
from engine.auth import hooks, links, lockout, tokens
from engine.auth import users as user_store
from engine.auth.audit import audit
from engine.auth.scope import Principal
from engine.clock import Clock
from engine.errors import Conflict, CustomerLookupError, FieldError, NotFound, PermissionDenied, SubmissionInvalid
from engine.runtime import events as ev
from engine.secrets import SecretBox
from engine.segments.surveys import record_answer as record_survey_answer
from engine.store import customers as cust
from engine.store.definitions import flow_of, latest_form
from engine.store.instances import NotEnrolled, Runtime, deliver, get_instance, start_instance
from engine.store.models import CustomerLink, FlowVersion, Instance, User, WebhookEndpoint, WebhookReceipt

MIN_LINK_TTL = timedelta(minutes=1)
MAX_LINK_TTL = timedelta(days=90)
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,200}")

_CUSTOMER_REF = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "phone": {"type": "string", "minLength": 1, "maxLength": 64},
        "email": {"type": "string", "minLength": 1, "maxLength": 254},
    },
    "minProperties": 1,
    "additionalProperties": False,
}
_IDENT = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"}
#: What a webhook delivery may say (JSON Schema 2020-12).
HOOK_PAYLOAD = {
    "type": "object",
    "required": ["action"],
    "properties": {"action": {"enum": ["start", "event"]}},
    "oneOf": [
        {
            "properties": {
                "action": {"const": "start"},
                "flow": _IDENT,
                "customer": _CUSTOMER_REF,
                "data": {"type": "object"},
            },
            "required": ["action", "flow"],
            "additionalProperties": False,
        },
        {
            "properties": {
                "action": {"const": "event"},
                "event": _IDENT,
                "instance_id": {"type": "integer", "minimum": 1},
                "customer": _CUSTOMER_REF,
                "flow": _IDENT,
                "data": {"type": "object"},
            },
            "required": ["action", "event"],
            "oneOf": [{"required": ["instance_id"]}, {"required": ["customer", "flow"]}],
            "additionalProperties": False,
        },
    ],
}
_HOOK_VALIDATOR = Draft202012Validator(HOOK_PAYLOAD)


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The outcome of a sign-in: the user, or why not (``locked_until`` set when locked out)."""

    user: dict[str, Any] | None
    session_epoch: int = 0
    locked_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class HookResult:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def waits_for(session: Session, instance: Instance, event: str) -> bool:
    """Whether a running instance would act on the named event (a wait step or the flow's goal)."""
    if instance.status != "running":
        return False
    version = session.get(FlowVersion, instance.flow_version_id)
    assert version is not None
    flow = flow_of(version)
    if flow.goal is not None and flow.goal.event == event:
        return True
    for token in (instance.state.get("tokens") or {}).values():
        wait = token.get("wait") or {}
        if wait.get("kind") == "event" and wait.get("event") == event:
            return True
    return False


class SecurityOperations:
    """Mixed into ``Careflow``; relies on its sessions, clock, runtime and secret box."""

    sessions: sessionmaker[Session]
    clock: Clock
    secrets: SecretBox
    runtime: Callable[[], Runtime]

    # ----- sign-in and tokens ------------------------------------------------------------------

    def login(self, username: str, password: str, ip: str) -> LoginResult:
        """Check a password, with lockout after repeated failures; every outcome is audited."""
        username = (username or "").strip()[:64]
        with self.sessions.begin() as s:
            now = self.clock.now()
            until = lockout.locked_until(s, username, ip, now)
            if until is not None:
                audit(s, username or None, "login.locked", "user", username, {"until": until}, at=now, ip=ip)
                return LoginResult(None, locked_until=until)
            user = user_store.find_user(s, username) if username else None
            ok = user_store.password_ok(user, password or "")
            lockout.record(s, username, ip, ok, now)
            if not ok or user is None:
                audit(s, username or None, "login.failed", "user", username, {}, at=now, ip=ip)
                return LoginResult(None)
            audit(s, user.username, "login.ok", "user", user.username, {}, at=now, ip=ip)
            return LoginResult(user_store.user_dict(user), user.session_epoch or 0)

    def logout(self, username: str, ip: str | None = None) -> None:
        """End every web session of the user (their session epoch moves on)."""
        with self.sessions.begin() as s:
            user = user_store.find_user(s, username)
            if user is not None:
                user.session_epoch = (user.session_epoch or 0) + 1
                audit(s, username, "logout", "user", username, {}, at=self.clock.now(), ip=ip)

    def session_user(self, username: str, epoch: int) -> dict[str, Any] | None:
        """The active user a web session names, if the session is still current."""
        with self.sessions() as s:
            user = user_store.find_user(s, username)
            if user is None or not user.active or (user.session_epoch or 0) != epoch:
                return None
            return user_store.user_dict(user)

    def authenticate_token(self, token: str) -> Principal | None:
        with self.sessions.begin() as s:
            found = tokens.authenticate(s, token, self.clock.now())
            if found is None:
                return None
            row, user = found
            return Principal.of(user, row.scopes, row.id)

    def principal(self, username: str) -> Principal | None:
        """The active user's principal with every scope (CLI and tests)."""
        with self.sessions() as s:
            user = user_store.find_user(s, username)
            return Principal.of(user) if user is not None and user.active else None

    def create_token(
        self, username: str, scopes: Iterable[str], *, name: str = "", actor: str | None = None,
        expires_at: datetime | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new token for the user: (its description, the token text shown once)."""
        with self.sessions.begin() as s:
            now = self.clock.now()
            user = user_store.get_user(s, username)
            if expires_at is not None and expires_at <= now:
                raise SubmissionInvalid([FieldError("$.expires_at", "expires_at", "the expiry must be in the future", "minimum")])
            row, secret = tokens.create_token(s, user, scopes, name=name, by=actor, now=now, expires_at=expires_at)
            info = tokens.token_dict(row, user.username)
            audit(s, actor, "token.create", "token", row.id, {"user": user.username, "scopes": row.scopes, "name": row.name}, at=now)
            return info, secret

    def revoke_token(self, token_id: int, *, actor: str | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            now = self.clock.now()
            row = tokens.revoke(s, token_id, by=actor, now=now)
            user = s.get(User, row.user_id)
            audit(s, actor, "token.revoke", "token", row.id, {"user": user.username if user else None}, at=now)
            return tokens.token_dict(row, user.username if user else "")

    def list_tokens(self, username: str | None = None, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return [tokens.token_dict(t, u) for t, u in tokens.list_tokens(s, username, include_revoked)]

    # ----- users -------------------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return [user_store.user_dict(u) for u in s.scalars(select(User).order_by(User.username))]

    def user(self, username: str) -> dict[str, Any]:
        with self.sessions() as s:
            return user_store.user_dict(user_store.get_user(s, username))

    def create_user(self, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        with self.sessions.begin() as s:
            now = self.clock.now()
            user = user_store.create_user(s, data, now)
            info = user_store.user_dict(user)
            audit(s, actor, "user.create", "user", user.username, {k: v for k, v in info.items() if k != "created_at"}, at=now)
            return info

    def update_user(self, username: str, data: Mapping[str, Any], *, actor: str | None = None) -> dict[str, Any]:
        """Change a user; an admin cannot deactivate themselves or drop their own admin role."""
        with self.sessions.begin() as s:
            now = self.clock.now()
            user = user_store.get_user(s, username)
            if actor == username:
                if data.get("active") is False:
                    raise Conflict("you cannot deactivate yourself")
                if "admin" in (user.roles or []) and isinstance(data.get("roles"), list) and "admin" not in data["roles"]:
                    raise Conflict("you cannot remove your own admin role")
            changed = user_store.update_user(s, user, data)
            info = user_store.user_dict(user)
            if changed:
                shown = {k: info[k] for k in changed if k in info}
                audit(s, actor, "user.update", "user", username, {"changed": changed, "values": shown}, at=now)
            return info

    def update_profile(self, username: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """A user changes their own language, reminder channel or IM id (and nothing else)."""
        refused = sorted(set(data) - set(user_store.SELF_EDITABLE))
        if refused:
            raise SubmissionInvalid([FieldError(f"$.{k}", k, f"{k!r} cannot be changed on the profile", "additionalProperties")
                                     for k in refused])
        with self.sessions.begin() as s:
            user = user_store.get_user(s, username)
            changed = user_store.update_user(s, user, data)
            info = user_store.user_dict(user)
            if changed:
                audit(s, username, "user.profile", "user", username,
                      {"changed": changed, "values": {k: info[k] for k in changed}}, at=self.clock.now())
            return info

    # ----- the audit log -----------------------------------------------------------------------

    def audit_entries(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        from engine.auth.audit import entry_dict, list_entries

        with self.sessions() as s:
            rows, total = list_entries(s, **filters)
            return [entry_dict(r) for r in rows], total

    def record_audit(self, actor: str | None, action: str, target_type: str | None = None, target_id: Any = None,
                     data: Mapping[str, Any] | None = None, *, ip: str | None = None) -> None:
        """Append one audit entry in its own transaction (for actions outside the engine)."""
        with self.sessions.begin() as s:
            audit(s, actor, action, target_type, target_id, data, at=self.clock.now(), ip=ip)

    # ----- inbound webhooks --------------------------------------------------------------------

    def webhooks(self) -> list[dict[str, Any]]:
        with self.sessions() as s:
            return [hooks.hook_dict(h) for h in s.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.name))]

    def webhook(self, name: str) -> dict[str, Any]:
        with self.sessions() as s:
            return hooks.hook_dict(hooks.get_hook(s, name))

    def create_webhook(
        self, name: str, *, flows: Iterable[str] | None = None, events: Iterable[str] | None = None,
        actor: str | None = None,
    ) -> tuple[dict[str, Any], str]:
        """A new inbound webhook: (its description, the signing secret shown once)."""
        with self.sessions.begin() as s:
            now = self.clock.now()
            hook, secret = hooks.create_hook(s, self.secrets, name, flows=flows, events=events, now=now, by=actor)
            info = hooks.hook_dict(hook)
            audit(s, actor, "webhook.create", "webhook", name, {"flows": info["flows"], "events": info["events"]}, at=now)
            return info, secret

    def delete_webhook(self, name: str, *, actor: str | None = None) -> None:
        with self.sessions.begin() as s:
            hook = hooks.get_hook(s, name)
            s.delete(hook)
            audit(s, actor, "webhook.delete", "webhook", name, {}, at=self.clock.now())

    def receive_webhook(
        self, name: str, body: bytes, *, timestamp: str | None, signature: str | None, idempotency_key: str | None,
    ) -> HookResult:
        """Verify and act on one delivery; a repeated idempotency key returns the first result."""
        now = self.clock.now()
        with self.sessions() as s:
            hook = hooks.get_hook(s, name)
            secret = self.secrets.decrypt(hook.secret)
            allowed_flows, allowed_events = list(hook.flows or []), list(hook.events or [])
        hooks.verify(secret, timestamp, signature, body, now)
        if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
            raise SubmissionInvalid([FieldError("$", "Idempotency-Key", "the Idempotency-Key is 1-200 visible ASCII characters", "pattern")])
        # Without a key, a byte-identical replay (same timestamp and body) is still recognised.
        key = idempotency_key or "sig:" + hooks.body_digest(f"{timestamp}.".encode() + body)
        digest = hooks.body_digest(body)
        prior = self._receipt(name, key, digest)
        if prior is not None:
            return prior
        payload = _parse_payload(body)
        try:
            with self.sessions.begin() as s:
                rt = self.runtime()
                try:
                    status, result = self._hook_action(s, rt, name, payload, allowed_flows, allowed_events)
                except NotFound as exc:
                    # The payload names something that does not exist: invalid input, not a missing URL.
                    field = {"flow": "flow", "customer": "customer", "instance": "instance_id"}.get(exc.kind, "")
                    raise SubmissionInvalid([FieldError(f"$.{field}" if field else "$", field, str(exc), "not_found")]) from None
                s.add(WebhookReceipt(hook=name, idempotency_key=key, body_hash=digest, received_at=rt.now,
                                     status=status, response=result))
                audit(s, f"hook:{name}", "webhook.receive", "webhook", name,
                      {"idempotency_key": key, "payload": payload, "result": result}, at=rt.now)
                s.flush()
        except IntegrityError:
            # A concurrent delivery with the same key committed first; this one rolled back whole.
            prior = self._receipt(name, key, digest)
            if prior is None:
                raise
            return prior
        return HookResult(status, result)

    def _receipt(self, name: str, key: str, digest: str) -> HookResult | None:
        with self.sessions() as s:
            row = s.scalars(select(WebhookReceipt).where(WebhookReceipt.hook == name, WebhookReceipt.idempotency_key == key)).first()
            if row is None:
                return None
            if row.body_hash != digest:
                raise IdempotencyKeyReused(f"the Idempotency-Key {key!r} was already used for a different payload")
            return HookResult(row.status, dict(row.response), replayed=True)

    def _hook_action(
        self, s: Session, rt: Runtime, name: str, payload: dict[str, Any], flows: list[str], events: list[str]
    ) -> tuple[int, dict[str, Any]]:
        data = payload.get("data") or {}
        customer_id = _find_customer(s, payload["customer"]) if "customer" in payload else None
        if payload["action"] == "start":
            flow_id = payload["flow"]
            if flows and flow_id not in flows:
                raise PermissionDenied(f"webhook {name!r} may not start flow {flow_id!r}")
            try:
                instance = start_instance(s, rt, flow_id, customer_id=customer_id, data=data,
                                          trigger={"type": "webhook", "hook": name}, started_by=f"hook:{name}")
            except NotEnrolled as exc:
                raise Conflict(str(exc)) from exc
            return 201, {"action": "start", "instance_id": instance.id, "instances": [instance.id]}
        event = payload["event"]
        if events and event not in events:
            raise PermissionDenied(f"webhook {name!r} may not deliver event {event!r}")
        if "instance_id" in payload:
            targets = [get_instance(s, payload["instance_id"])]
        else:
            targets = list(s.scalars(
                select(Instance).where(Instance.flow_id == payload["flow"], Instance.customer_id == customer_id,
                                       Instance.status == "running").order_by(Instance.id)
            ))
        if flows and any(i.flow_id not in flows for i in targets):
            raise PermissionDenied(f"webhook {name!r} may not deliver events to flow {targets[0].flow_id!r}")
        waiting = [i for i in targets if waits_for(s, i, event)]
        if not waiting:
            raise Conflict(f"no running instance waits for the event {event!r}")
        for instance in waiting:
            deliver(s, rt, instance, ev.Message(event, dict(data)))
        return 200, {"action": "event", "instance_id": waiting[0].id, "instances": [i.id for i in waiting]}

    # ----- customer links ----------------------------------------------------------------------

    def customer_link(
        self, instance_id: int, form_id: str, event: str, ttl: timedelta, *, secret: str | bytes,
        base_url: str = "", by: str | None = None,
    ) -> dict[str, Any]:
        """A signed single-use link to form_id whose answer reaches the instance as event."""
        errors = []
        if not isinstance(event, str) or not links.EVENT_RE.fullmatch(event):
            errors.append(FieldError("$.event", "event", "an event name is an identifier (letters, digits, _)", "pattern"))
        if not MIN_LINK_TTL <= ttl <= MAX_LINK_TTL:
            errors.append(FieldError("$.ttl_hours", "ttl_hours", "a link lives between one minute and 90 days", "maximum"))
        if errors:
            raise SubmissionInvalid(errors)
        with self.sessions.begin() as s:
            now = self.clock.now()
            instance = get_instance(s, instance_id)
            if instance.status != "running":
                raise Conflict(f"instance {instance_id} is {instance.status}")
            latest_form(s, form_id)
            link = links.new_link(s, instance_id, form_id, event, now=now, expires_at=now + ttl, by=by)
            token = links.sign(secret, link)
            audit(s, by, "link.create", "instance", instance_id,
                  {"link": link.id, "form": form_id, "event": event, "expires_at": link.expires_at}, at=now)
            return {
                "id": link.id,
                "instance_id": instance_id,
                "form": form_id,
                "event": event,
                "token": token,
                "url": f"{base_url.rstrip('/')}/l/{token}",
                "expires_at": link.expires_at.isoformat(),
            }

    def open_customer_link(self, token: str, *, secret: str | bytes) -> tuple[CustomerLink, forms.Form]:
        """The link and its form if the link can still be answered; LinkInvalid or LinkGone if not."""
        ref = links.unsign(secret, token)
        with self.sessions() as s:
            link = links.find_link(s, ref)
            links.check_usable(link, self.clock.now())
            if not waits_for(s, get_instance(s, link.instance_id), link.event):
                raise links.LinkGone("this link is no longer needed")
            return link, latest_form(s, link.form_id)

    def submit_customer_link(
        self, token: str, data: Mapping[str, Any], *, secret: str | bytes, locale: str = "zh", ip: str | None = None,
    ) -> dict[str, Any]:
        """Validate the answer, mark the link used and deliver the event, all in one transaction."""
        ref = links.unsign(secret, token)
        with self.sessions.begin() as s:
            rt = self.runtime()
            link = links.find_link(s, ref)
            links.check_usable(link, rt.now)
            form = latest_form(s, link.form_id)
            cleaned = forms.check_submission(form, data, locale=locale)
            instance = get_instance(s, link.instance_id)
            if not waits_for(s, instance, link.event):
                raise links.LinkGone("this link is no longer needed")
            result: Any = s.execute(
                update(CustomerLink).where(CustomerLink.id == link.id, CustomerLink.used_at.is_(None)).values(used_at=rt.now)
            )
            used = result.rowcount
            if used != 1:
                raise links.LinkGone("this link has already been used")
            deliver(s, rt, instance, ev.Message(link.event, cleaned))
            record_survey_answer(s, rt, instance, link.form_id, cleaned)
            audit(s, "customer", "link.submit", "instance", instance.id,
                  {"link": link.id, "form": link.form_id, "event": link.event, "data": cleaned}, at=rt.now, ip=ip)
            return {"instance_id": instance.id, "event": link.event, "data": cleaned}


class IdempotencyKeyReused(Conflict):
    """Raised when an idempotency key comes back with a different payload."""

    code = "idempotency_key_reused"


def _parse_payload(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SubmissionInvalid([FieldError("$", "", "the body is not JSON", "type")]) from None
    errors = sorted(_HOOK_VALIDATOR.iter_errors(payload), key=lambda e: list(e.absolute_path))
    if errors:
        raise SubmissionInvalid([
            FieldError(e.json_path, str(e.absolute_path[0]) if e.absolute_path else "", e.message[:300], str(e.validator))
            for e in errors[:20]
        ])
    assert isinstance(payload, dict)
    return payload


def _find_customer(s: Session, ref: Mapping[str, Any]) -> int:
    if "id" in ref:
        customer = cust.get_customer(s, int(ref["id"]))
        if customer.status == "deleted":
            raise CustomerLookupError(ref["id"])
        return customer.id
    found = cust.find_customer(s, ref.get("phone"), ref.get("email"))
    if found is None:
        raise CustomerLookupError(ref.get("phone") or ref.get("email"))
    return found.id

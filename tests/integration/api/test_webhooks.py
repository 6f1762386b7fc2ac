"""Inbound webhooks: HMAC signature, freshness, payload validation, idempotent retries."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from engine.auth.hooks import signature
from engine.core import Careflow
from engine.store.models import Instance, WebhookReceipt
from tests.integration.api import world as wd
from tests.integration.api.conftest import Api


class Hook:
    def __init__(self, api: Api, cf: Careflow, name: str, secret: str):
        self.api, self.cf, self.name, self.secret = api, cf, name, secret

    def send(self, payload: Any, *, key: str | None = None, skew: int = 0, secret: str | None = None,
             body: bytes | None = None, sig: str | None = None) -> Any:
        raw = body if body is not None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        ts = str(int(self.cf.clock.now().timestamp()) + skew)
        headers = {"X-Careflow-Timestamp": ts,
                   "X-Careflow-Signature": sig or signature(secret or self.secret, ts, raw),
                   "Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.api.client.post(f"/api/hooks/{self.name}", data=raw, headers=headers)


@pytest.fixture
def hook(api: Api, cf: Careflow) -> Hook:
    created = api.post("/api/webhooks", json={"name": "shop", "flows": ["complaint", "winback"]})
    assert created.status_code == 201
    secret = created.get_json()["secret"]
    assert secret.startswith("whsec_")
    return Hook(api, cf, "shop", secret)


def instances(cf: Careflow) -> int:
    with cf.session() as s:
        return s.scalar(select(func.count()).select_from(Instance).where(Instance.started_by == "hook:shop")) or 0


def test_start_a_flow_for_a_customer_by_phone(hook: Hook, cf: Careflow) -> None:
    cid = wd.new_customer(hook.cf, "wang")
    phone = wd.customer_phone(cf, cid)
    response = hook.send({"action": "start", "flow": "complaint", "customer": {"phone": phone},
                          "data": {"complaint_intake": wd.COMPLAINT}})
    assert response.status_code == 201
    iid = response.get_json()["instance_id"]
    detail = cf.describe(iid)
    assert detail["customer_id"] == cid and detail["status"] == "running"
    entry = cf.audit_entries(action="webhook.receive")[0][0]
    assert entry["actor"] == "hook:shop" and entry["data"]["result"]["instance_id"] == iid


def test_a_retried_delivery_acts_once(hook: Hook, cf: Careflow) -> None:
    payload = {"action": "start", "flow": "complaint", "data": {"complaint_intake": wd.COMPLAINT}}
    responses = [hook.send(payload, key="order-1001-paid") for _ in range(5)]
    assert [r.status_code for r in responses] == [201] * 5
    assert len({r.get_json()["instance_id"] for r in responses}) == 1
    assert [r.headers.get("Idempotent-Replayed") for r in responses] == [None] + ["true"] * 4
    assert instances(cf) == 1
    other = hook.send(payload, key="order-1002-paid")
    assert other.status_code == 201 and instances(cf) == 2


def test_replaying_the_same_signed_bytes_acts_once_without_a_key(hook: Hook, cf: Careflow) -> None:
    payload = {"action": "start", "flow": "complaint", "data": {}}
    first = hook.send(payload)
    again = hook.send(payload)
    assert first.get_json() == again.get_json() and instances(cf) == 1


def test_concurrent_duplicates_act_once(hook: Hook, cf: Careflow) -> None:
    payload = {"action": "start", "flow": "complaint", "data": {}}
    results: list[int] = []
    barrier = threading.Barrier(3)

    def send() -> None:
        barrier.wait()
        results.append(hook.send(payload, key="same-key").status_code)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201, 201, 201]
    assert instances(cf) == 1
    with cf.session() as s:
        assert s.scalar(select(func.count()).select_from(WebhookReceipt)) == 1


def test_same_key_with_another_payload_is_a_conflict(hook: Hook) -> None:
    assert hook.send({"action": "start", "flow": "complaint"}, key="k1").status_code == 201
    reused = hook.send({"action": "start", "flow": "winback"}, key="k1")
    assert reused.status_code == 409 and reused.get_json()["error"]["code"] == "idempotency_key_reused"


def test_deliver_an_event_by_instance_and_by_customer(hook: Hook, cf: Careflow, api: Api) -> None:
    cid = wd.new_customer(cf, "wang")
    iid = wd.complaint(cf, cid)
    by_id = hook.send({"action": "event", "instance_id": iid, "event": "complaint_withdrawn", "data": {"reason": "已解决"}})
    assert by_id.status_code == 200 and by_id.get_json()["instances"] == [iid]
    assert cf.describe(iid)["outcome"] == "withdrawn"
    iid2 = wd.complaint(cf, cid)
    by_customer = hook.send({"action": "event", "customer": {"id": cid}, "flow": "complaint", "event": "complaint_withdrawn"})
    assert by_customer.status_code == 200 and by_customer.get_json()["instances"] == [iid2]
    nothing_waits = hook.send({"action": "event", "customer": {"id": cid}, "flow": "complaint", "event": "complaint_withdrawn"},
                              key="a-new-delivery")
    assert nothing_waits.status_code == 409


def test_signature_checks(hook: Hook, cf: Careflow) -> None:
    payload = {"action": "start", "flow": "complaint"}
    wrong = hook.send(payload, secret="whsec_wrong")
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "signature_invalid"
    stale = hook.send(payload, skew=-301)
    assert stale.status_code == 401
    future = hook.send(payload, skew=301)
    assert future.status_code == 401
    assert hook.send(payload, skew=-299).status_code == 201
    garbage = hook.send(payload, sig="sha256=" + "0" * 64)
    assert garbage.status_code == 401
    raw = json.dumps(payload).encode()
    tampered = hook.send(payload, body=raw.replace(b"complaint", b"winback"), sig=signature(hook.secret, str(int(cf.clock.now().timestamp())), raw))
    assert tampered.status_code == 401
    unsigned = hook.api.client.post("/api/hooks/shop", json=payload)
    assert unsigned.status_code == 401
    assert instances(cf) == 1


def test_unknown_hook_and_bad_payloads(hook: Hook, api: Api) -> None:
    unknown = Hook(api, hook.cf, "nope", hook.secret).send({"action": "start", "flow": "complaint"})
    assert unknown.status_code == 404
    for payload in ({"action": "explode"}, {"action": "start"}, {"action": "event", "event": "x"},
                    {"action": "start", "flow": "complaint", "extra": 1}, [1, 2], "text"):
        response = hook.send(payload)
        assert response.status_code == 422, payload
        assert response.get_json()["error"]["details"]
    not_json = hook.send(None, body=b"\xff\xfe not json")
    assert not_json.status_code in (400, 422)
    assert hook.send({"action": "start", "flow": "follow_up"}).status_code == 403  # not among the hook's flows
    missing = hook.send({"action": "start", "flow": "complaint", "customer": {"id": 987654}})
    assert missing.status_code == 422 and missing.get_json()["error"]["details"][0]["field"] == "customer"


def test_deleted_hook_stops_working(hook: Hook, api: Api) -> None:
    assert api.delete("/api/webhooks/shop").status_code == 204
    assert hook.send({"action": "start", "flow": "complaint"}).status_code == 404
    assert api.get("/api/webhooks/shop").status_code == 404


def test_secret_is_stored_encrypted(hook: Hook, cf: Careflow) -> None:
    from engine.store.models import WebhookEndpoint

    with cf.session() as s:
        stored = s.scalars(select(WebhookEndpoint.secret)).one()
    assert hook.secret not in stored and cf.secrets.decrypt(stored) == hook.secret
    assert "secret" not in hook.api.get("/api/webhooks/shop").get_json()


def test_secret_survives_key_rotation(hook: Hook, cf: Careflow) -> None:
    """``careflow secrets rotate`` re-encrypts webhook secrets too, so the old key can be dropped."""
    from cryptography.fernet import Fernet

    from engine.secrets import SecretBox

    old_keys = list(cf.secrets._keys)  # type: ignore[arg-type]  # noqa: SLF001 - the fixture's own key list
    new_key = Fernet.generate_key()
    cf.secrets = SecretBox([new_key, *old_keys])
    assert cf.rotate_secrets(by="admin") >= 1
    cf.secrets = SecretBox([new_key])
    assert hook.send({"action": "start", "flow": "complaint"}).status_code == 201

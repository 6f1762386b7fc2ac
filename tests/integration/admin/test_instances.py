"""Instance pages: filters, one instance with its position on the diagram, cancel, incidents, scope."""

from __future__ import annotations

from engine.core import Careflow
from engine.store.models import Incident


def complaint(cf: Careflow, subject: str = "快递破损") -> int:
    result = cf.submit_form("complaint_intake", {"subject": subject, "description": "客户来电反映：" + subject,
                                                 "channel": "phone", "contact_phone": "13800138000"}, user="chen")
    return int(result["instances"][0])


def test_list_filters_by_flow_status_and_customer(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    customer = cf.create_customer({"name": "周杰", "phone": "+8613800138000", "owner": "wang"}, fire_triggers=False)
    first, second = complaint(cf), complaint(cf, "发票开错了")
    cf.cancel(second, actor="admin")
    admin = signed_in()
    all_rows = admin.text("/admin/instances?flow=complaint")
    assert f'href="/admin/instances/{first}"' in all_rows and f'href="/admin/instances/{second}"' in all_rows
    running = admin.text("/admin/instances?flow=complaint&status=running")
    assert f'href="/admin/instances/{first}"' in running and f'href="/admin/instances/{second}"' not in running
    assert cf.describe(first)["customer_id"] == customer
    by_customer = admin.text(f"/admin/instances?customer={customer}")
    assert f'href="/admin/instances/{first}"' in by_customer
    bad = admin.get("/admin/instances?customer=abc&status=weird")
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "A customer number is digits only." in text and "Unknown status." in text


def test_instance_page_and_graph_follow_the_instance(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    instance_id = complaint(cf)
    admin = signed_in()
    before = cf.describe(instance_id)["current_steps"]
    page = admin.text(f"/admin/instances/{instance_id}")
    assert f'data-graph-url="/admin/instances/{instance_id}/graph.json"' in page and 'data-poll="2000"' in page
    assert all(f"<code>{step}</code>" in page for step in before)
    graph = admin.get(f"/admin/instances/{instance_id}/graph.json").get_json()
    assert graph["current"] == before and graph["status"] == "running"
    highlighted = {n["id"] for n in graph["nodes"] if n["properties"]["current"]}
    assert highlighted == set(before)
    task = next(t for t in cf.tasks(instance_id=instance_id) if t["status"] == "open")
    cf.claim(task["id"], "chen")
    cf.complete(task["id"], {"category": "delivery", "severity": "high", "notes": "破损"}, "chen")
    after = admin.get(f"/admin/instances/{instance_id}/graph.json").get_json()
    assert after["current"] != before
    done = {n["id"] for n in after["nodes"] if n["properties"]["style"].get("stroke") == "#198754"}
    assert set(before) <= done


def test_cancel_needs_csrf_and_is_audited(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    instance_id = complaint(cf)
    admin = signed_in()
    admin.text(f"/admin/instances/{instance_id}")
    assert admin.post(f"/admin/instances/{instance_id}/cancel", {"reason": "test"}, csrf=False).status_code == 400
    response = admin.post(f"/admin/instances/{instance_id}/cancel", {"reason": "客户撤回"})
    assert response.status_code == 302
    assert cf.describe(instance_id)["status"] == "cancelled"
    entries, _ = cf.audit_entries(action="instance.cancel")
    assert entries[0]["target_id"] == str(instance_id) and entries[0]["data"] == {"reason": "客户撤回"}
    again = admin.post(f"/admin/instances/{instance_id}/cancel", {"reason": "x"})
    assert again.status_code == 302
    assert "This instance has already ended." in admin.text(f"/admin/instances/{instance_id}")


def test_record_scope_is_the_apis(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    instance_id = complaint(cf)
    # li (an account manager in another region) neither started it nor owns its customer
    li = signed_in("li")
    assert li.get(f"/admin/instances/{instance_id}").status_code == 404
    assert li.get(f"/admin/instances/{instance_id}/graph.json").status_code == 404
    assert f'href="/admin/instances/{instance_id}"' not in li.text("/admin/instances")
    li.text("/admin/instances")
    assert li.post(f"/admin/instances/{instance_id}/cancel", {"reason": "x"}).status_code in (403, 404)
    assert cf.describe(instance_id)["status"] == "running"
    # chen, the service agent, sees it (an open task of her role) but may not resolve incidents
    chen = signed_in("chen")
    page = chen.text(f"/admin/instances/{instance_id}")
    assert "Retry" not in page


def test_incident_retry_and_skip(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    instance_id = complaint(cf)
    with cf.sessions.begin() as s:
        token = next(iter(cf.describe(instance_id)["current_steps"]))
        incident = Incident(instance_id=instance_id, token=None, step_id=token, kind="step_failed", message="boom",
                            status="open", created_at=cf.clock.now())
        s.add(incident)
        s.flush()
        incident_id = incident.id
    admin = signed_in()
    page = admin.text(f"/admin/instances/{instance_id}")
    assert f'action="/admin/incidents/{incident_id}/retry"' in page and "boom" in page
    chen = signed_in("chen")
    chen.text(f"/admin/instances/{instance_id}")
    assert chen.post(f"/admin/incidents/{incident_id}/skip").status_code == 403
    # an incident without a step token cannot be skipped: the engine's refusal is shown, nothing changes
    response = admin.post(f"/admin/incidents/{incident_id}/skip")
    assert response.status_code == 302
    assert "The incident could not be resolved" in admin.text(f"/admin/instances/{instance_id}")
    with cf.session() as s:
        assert s.get(Incident, incident_id).status == "open"  # type: ignore[union-attr]


FAILING = """\
id: web_failing
name: {zh: 失败示例, en: Failing example}
triggers:
  - type: manual
steps:
  - id: compute
    type: set
    values:
      total: "{{ vars.order.amount * 2 }}"
    next: done
  - id: done
    type: end
    outcome: done
"""


def test_a_failed_step_is_retried_then_skipped_from_the_page(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    cf.deploy_flow_text(FAILING, "editor", by="ops")
    instance_id = cf.start("web_failing", started_by="admin")
    incident = cf.describe(instance_id)["incidents"][0]
    assert incident["status"] == "open" and incident["step"] == "compute"
    admin = signed_in()
    page = admin.text(f"/admin/instances/{instance_id}")
    assert f'action="/admin/incidents/{incident["id"]}/retry"' in page
    # retrying runs the step again: it fails again, so a new incident is open
    assert admin.post(f"/admin/incidents/{incident['id']}/retry").status_code == 302
    assert "Retried." in admin.text(f"/admin/instances/{instance_id}")
    after_retry = cf.describe(instance_id)["incidents"]
    assert [i["status"] for i in after_retry] == ["resolved", "open"]
    admin.post(f"/admin/incidents/{after_retry[1]['id']}/skip")
    described = cf.describe(instance_id)
    assert described["status"] == "completed" and described["current_steps"] == []
    actions = [e["action"] for e in cf.audit_entries(action="incident.")[0]]
    assert actions == ["incident.skip", "incident.retry"]

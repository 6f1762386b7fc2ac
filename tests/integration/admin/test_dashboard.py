"""The dashboard's figures: counted from the data, within the user's record scope."""

from __future__ import annotations

from datetime import timedelta

from admin.dashboard import nps
from engine.clock import FixedClock
from engine.core import Careflow


def complaint(cf: Careflow, phone: str = "13800138000") -> int:
    return int(cf.submit_form("complaint_intake", {"subject": "破损", "description": "客户来电", "channel": "phone",
                                                   "contact_phone": phone}, user="chen")["instances"][0])


def test_nps_is_promoters_minus_detractors() -> None:
    assert nps([10, 9, 8, 7, 0]) == 20.0
    assert nps([0, 6]) == -100.0


def test_dashboard_counts_instances_tasks_sla_messages_and_nps(cf: Careflow, clock: FixedClock, signed_in) -> None:  # type: ignore[no-untyped-def]
    first, second = complaint(cf), complaint(cf)
    task = next(t for t in cf.tasks(instance_id=first) if t["status"] == "open")
    cf.claim(task["id"], "chen")
    cf.complete(task["id"], {"category": "delivery", "severity": "low"}, "chen")
    # a new customer's onboarding: the welcome call, a week, then the survey answer arrives
    customer = cf.create_customer({"name": "周杰", "email": "zhoujie@example.com", "owner": "wang"})
    onboarding = next(i for i in cf.tasks(user="wang") if i["status"] == "open")
    cf.complete(onboarding["id"], {"reached": True, "call_notes": "已联系"}, "wang")
    clock.set(clock.now() + timedelta(days=8))
    cf.tick()
    instance = onboarding["instance_id"]
    assert cf.describe(instance)["current_steps"] == ["wait_survey"], cf.describe(instance)
    cf.message(instance, "satisfaction_survey", {"score": 5, "nps": 10})
    assert cf.describe(instance)["status"] == "completed" and customer
    admin = signed_in()
    html = admin.text("/admin/")
    started = html.split('data-total="1">')[1].split("<")[0]
    assert int(started) == 3  # two complaints and the onboarding
    assert 'id="chart-instances"' in html and 'id="chart-tasks"' in html and 'id="chart-channels"' in html
    assert 'data-empty="nps"' not in html and ">100<" in html.replace("</text>", "<")
    assert "<th scope=\"row\">2026-12</th>" in html  # the month the answer arrived (Shanghai time)
    sla_card = html.split('data-total="5">')[1].split("<")[0]
    assert sla_card == "100%"  # triage and the welcome call were done within their due times
    clock.set(clock.now() + timedelta(days=45))
    later = admin.text("/admin/")
    assert later.split('data-total="1">')[1].split("<")[0] == "0"


def test_dashboard_is_scoped_and_hides_messages_from_non_admins(cf: Careflow, signed_in) -> None:  # type: ignore[no-untyped-def]
    complaint(cf)
    li = signed_in("li")
    html = li.text("/admin/")
    assert html.split('data-total="1">')[1].split("<")[0] == "0"
    assert 'id="chart-channels"' not in html and 'data-empty="nps"' in html

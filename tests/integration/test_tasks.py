"""Human-task operations and the triggers and subflows around them."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from engine.errors import Conflict, PermissionDenied
from engine.store.models import Instance, TaskComment
from tests.support.flowtest import only_task

DATA = Path(__file__).resolve().parents[1] / "data" / "flows"


@pytest.fixture
def upgraded(cf):  # type: ignore[no-untyped-def]
    """A customer whose grade changed to A: parent starts, its child waits at a prefilled task."""
    cf.deploy([DATA / "child.yaml", DATA / "parent.yaml"])
    cid = cf.create_customer({"name": "陈晨", "phone": "13800138000", "grade": "B"}, fire_triggers=False)
    assert cf.update_customer(cid, {"region": "上海"}) == ["region"]
    cf.update_customer(cid, {"grade": "A"})
    with cf.session() as s:
        instances = {i.flow_id: i.id for i in s.scalars(select(Instance).where(Instance.customer_id == cid))}
    assert set(instances) == {"parent", "child"}
    return instances


def test_a_field_change_trigger_starts_a_flow_that_waits_for_its_subflow(cf, upgraded):
    task = only_task(cf, upgraded["child"])
    assert task["initial"] == {"contact_phone": "+8613800138000"}
    # contact_phone is read-only here: a submitted value is ignored, the prefilled one kept.
    cf.complete(task["id"], {"subject": "升级", "description": "客户升级", "contact_phone": "13911112222"}, "chen")
    assert cf.describe(upgraded["child"])["variables"]["intake"]["contact_phone"] == "+8613800138000"
    parent = cf.describe(upgraded["parent"])
    assert (parent["status"], parent["outcome"]) == ("completed", "completed")


def test_claim_hand_over_and_comment(cf, upgraded):
    task = only_task(cf, upgraded["child"])
    with pytest.raises(PermissionDenied):
        cf.claim(task["id"], "wang")  # not a service agent
    cf.claim(task["id"], "chen")
    with pytest.raises(Conflict, match="already claimed by chen"):
        cf.claim(task["id"], "liu")
    with pytest.raises(PermissionDenied):
        cf.hand_over(task["id"], "chen", "wang")  # wang lacks the role
    cf.hand_over(task["id"], "chen", "liu", "休假，请接手")
    assert only_task(cf, upgraded["child"])["assignee"] == "liu"
    with pytest.raises(PermissionDenied):
        cf.complete(task["id"], {"subject": "x", "description": "y"}, "chen")
    cf.comment(task["id"], "liu", "已联系客户")
    with pytest.raises(Conflict):
        cf.comment(task["id"], "liu", "   ")
    with cf.session() as s:
        kinds = [c.kind for c in s.scalars(select(TaskComment).where(TaskComment.task_id == task["id"]).order_by(TaskComment.id))]
    assert kinds == ["claim", "handover", "comment"]
    cf.complete(task["id"], {"subject": "x", "description": "y"}, "liu")


def test_my_inbox_has_my_tasks_and_my_roles_unclaimed_ones(cf, upgraded):
    assert [t["step"] for t in cf.tasks(user="chen")] == ["intake"]
    assert [t["step"] for t in cf.tasks(user="liu")] == ["intake"]  # liu is also a service agent
    assert cf.tasks(user="wang") == []
    cf.claim(only_task(cf, upgraded["child"])["id"], "liu")
    assert cf.tasks(user="chen") == []


def test_a_subflow_refused_by_enrollment_is_an_incident_and_the_parent_goes_on(cf):
    refusing = (DATA / "child.yaml").read_text("utf-8").replace("enrollment: {concurrent: unlimited}",
                                                                 "enrollment: {reenroll: never}")
    cf.deploy_flow_text(refusing, "child.yaml")
    cf.deploy([DATA / "parent.yaml"])
    cid = cf.create_customer({"name": "陈晨", "phone": "13800138000", "grade": "B"}, fire_triggers=False)
    first = cf.start("child", customer_id=cid)
    cf.complete(only_task(cf, first)["id"], {"subject": "x", "description": "y"}, "chen")
    cf.update_customer(cid, {"grade": "A"})  # parent starts and asks for the child a second time
    with cf.session() as s:
        parent = s.scalars(select(Instance).where(Instance.flow_id == "parent")).one()
    info = cf.describe(parent.id)
    assert (info["status"], info["outcome"]) == ("completed", "odd")  # the child's outcome was not_enrolled
    assert [i["kind"] for i in info["incidents"]] == ["subflow_refused"]

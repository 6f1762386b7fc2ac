"""A small company to test record scope against.

* ``c_wang``: customer of wang (account manager, team east); onboarding gave wang a welcome call.
* ``c_li``: customer of li (account manager, team north), who also filed a complaint: its triage
  task waits, unclaimed, for the service_agent role (chen; liu has that role too).
* ``qa``: a user with only a custom role, ``quality_auditor``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from engine.core import Careflow
from engine.store.models import Task

WELCOME = {"reached": True, "call_notes": "客户想了解培训安排", "needs": ["training"], "preferred_channel": "sms"}
COMPLAINT = {"subject": "快递破损", "description": "收到的商品外包装破损", "channel": "phone"}
TRIAGE = {"severity": "low", "category": "delivery"}
_numbers = itertools.count(100)


def phone() -> str:
    return f"+86139{next(_numbers):08d}"


def open_task(cf: Careflow, instance_id: int) -> int:
    with cf.session() as s:
        ids = list(s.scalars(select(Task.id).where(Task.instance_id == instance_id, Task.status == "open")))
    assert len(ids) == 1, ids
    return ids[0]


def instance_of(cf: Careflow, customer_id: int) -> int:
    from engine.store.models import Instance

    with cf.session() as s:
        return s.scalars(select(Instance.id).where(Instance.customer_id == customer_id).order_by(Instance.id)).first()  # type: ignore[return-value]


def new_customer(cf: Careflow, owner: str, **extra: Any) -> int:
    """A customer of owner; onboarding starts and gives owner a welcome call."""
    n = next(_numbers)
    return cf.create_customer({"name": f"客户{n}", "phone": phone(), "email": f"c{n}@example.com", "owner": owner,
                               "region": "上海", "expected_value": 50000, **extra})


def welcome_task(cf: Careflow, owner: str = "wang") -> int:
    return open_task(cf, instance_of(cf, new_customer(cf, owner)))


def complaint(cf: Careflow, customer_id: int | None = None, by: str = "admin") -> int:
    return cf.start("complaint", customer_id=customer_id, data={"complaint_intake": COMPLAINT}, started_by=by)


def resolve_task(cf: Careflow) -> int:
    """A complaint past triage: its resolve task waits for the service_agent role."""
    iid = complaint(cf)
    task = open_task(cf, iid)
    cf.claim(task, "chen")
    cf.complete(task, TRIAGE, "chen")
    return open_task(cf, iid)


@dataclass
class World:
    c_wang: int
    c_li: int
    onboarding_wang: int
    welcome_wang: int
    complaint_li: int
    triage_li: int


def build(cf: Careflow) -> World:
    cf.create_user({"username": "qa", "display_name": "质检 孙悦", "roles": ["quality_auditor"], "team": "quality"},
                   actor="admin")
    c_wang = new_customer(cf, "wang")
    c_li = new_customer(cf, "li")
    onboarding_wang = instance_of(cf, c_wang)
    result = cf.submit_form("complaint_intake", {**COMPLAINT, "contact_phone": customer_phone(cf, c_li)}, user="chen")
    complaint_li = result["instances"][0]
    return World(c_wang, c_li, onboarding_wang, open_task(cf, onboarding_wang), complaint_li, open_task(cf, complaint_li))


def customer_phone(cf: Careflow, customer_id: int) -> str:
    from engine.store.models import Customer

    with cf.session() as s:
        value = s.scalars(select(Customer.phone).where(Customer.id == customer_id)).one()
        assert value is not None
        return value

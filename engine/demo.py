"""Demo data: one user per role and about fifty customers, created once (idempotent)."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from engine.store import customers as cust
from engine.store.models import Customer, User

if TYPE_CHECKING:
    from engine.core import Careflow

DEMO_PASSWORD = "careflow-demo"

DEMO_USERS = (
    # username, display name, roles, region, team
    ("admin", "系统管理员", ["admin"], None, None),
    ("ops", "运营 周敏", ["designer"], None, None),
    ("wang", "客户经理 王磊", ["account_manager"], "上海", "east"),
    ("li", "客户经理 李娜", ["account_manager"], "北京", "north"),
    ("zhao", "团队主管 赵强", ["team_lead", "account_manager"], "上海", "east"),
    ("chen", "客服 陈静", ["service_agent"], None, "service"),
    ("liu", "客服主管 刘洋", ["service_lead", "service_agent"], None, "service"),
)

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = ("伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "霞", "平")
_REGIONS = ("上海", "北京", "广州", "深圳", "杭州")
_CHANNELS = ("email", "sms", "wecom", "phone")


def seed_users(engine: Careflow) -> int:
    created = 0
    with engine.sessions.begin() as s:
        now = engine.clock.now()
        existing = set(s.scalars(select(User.username)))
        for username, name, roles, region, team in DEMO_USERS:
            if username in existing:
                continue
            s.add(User(
                username=username, display_name=name, email=f"{username}@demo.careflow.local",
                password_hash=generate_password_hash(DEMO_PASSWORD), roles=roles, region=region, team=team,
                language=None, active=True, created_at=now,
            ))
            created += 1
    return created


def demo_customer(i: int, rng: random.Random, today: date) -> dict[str, Any]:
    name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
    region = rng.choice(_REGIONS)
    value = rng.choice((5_000, 15_000, 30_000, 60_000, 120_000, 250_000))
    lunar = i % 7 == 0
    birthday = date(rng.randint(1960, 2000), rng.randint(1, 12), rng.randint(1, 28))
    if i < 3:
        birthday = today.replace(year=1985 + i)  # someone always has a birthday in the demo
        lunar = False
    last_purchase = today - timedelta(days=rng.choice((5, 20, 45, 80, 120, 200)))
    profile = {
        "name": name,
        "phone": f"+86138{rng.randint(0, 99_999_999):08d}",
        "email": f"customer{i:03d}@example.com",
        "birthday": birthday.isoformat(),
        "birthday_calendar": "lunar" if lunar else "solar",
        "region": region,
        "expected_value": float(value),
        "grade": "A" if value >= 100_000 else ("B" if value >= 20_000 else "C"),
        "owner": "wang" if region in ("上海", "杭州") else "li",
        "preferred_channel": rng.choice(_CHANNELS),
        "language": "zh",
        "consent": {"email": True, "sms": i % 10 != 9},
        "last_purchase_at": f"{last_purchase.isoformat()}T10:00:00+08:00",
        "purchase_count": rng.randint(1, 30),
        "purchase_total": float(rng.randint(1_000, 300_000)),
        "tags": ["churn_risk"] if i % 13 == 5 else [],
    }
    # Purchases about monthly before the last one (no random draw: the demo data stays the same).
    first = last_purchase - timedelta(days=30 * (int(profile["purchase_count"]) - 1))
    profile["first_purchase_at"] = f"{first.isoformat()}T10:00:00+08:00"
    return profile


def seed(engine: Careflow, customers: int = 50) -> dict[str, int]:
    users = seed_users(engine)
    created = 0
    with engine.sessions.begin() as s:
        if (s.scalar(select(func.count()).select_from(Customer)) or 0) == 0:
            rng = random.Random(20261124)
            now = engine.clock.now()
            for i in range(customers):
                cust.create_customer(s, demo_customer(i, rng, now.date()), now)
                created += 1
    return {"users_created": users, "customers_created": created}

"""Task reminders and escalations reach the employee: e-mail at a real SMTP server, IM at a signing
Feishu stub, in the user's language, with a deep link that opens the task after sign-in.

The reminder fires an hour before the task's 4-hour due time, the escalation an hour after it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from sqlalchemy import select

from engine import outbox as outbox_module
from engine.app import create_app
from engine.store.models import AppSetting, OutboxMessage
from tests.integration.connectors.test_named_configurations import feishu_group

PASSWORD = "reminder-pass-1"
NORTH_SECRET = "north-group-signing-secret"
BASE_URL = "https://care.example.com"

FLOW = """
id: remind_me
name: {zh: 提醒测试, en: Reminder test}
steps:
  - id: check
    type: task
    name: {zh: 核对资料, en: Check the data}
    form: follow_up
    title: {zh: "核对资料 {{ customer.name }}", en: "Check the data of {{ customer.name }}"}
    assignee: {user: ASSIGNEE}
    due: {hours: 4}
    reminders:
      - before: {hours: 1}
    escalation:
      - after: {hours: 1}
        to_role: rem_lead
    next: done
  - id: done
    type: end
"""


def add_user(cf, username: str, roles: list[str], **extra: Any) -> None:  # type: ignore[no-untyped-def]
    cf.create_user({"username": username, "display_name": username.title(), "roles": roles,
                    "email": f"{username}@example.com", "password": PASSWORD, **extra}, actor="admin")


def set_up(cf, smtp, assignee: str = "amy") -> int:  # type: ignore[no-untyped-def]
    """SMTP behind the e-mail channel, two users, the flow; returns the open task's id."""
    cf.save_connector("smtp-main", "smtp", smtp.settings(), by="admin")
    cf.save_connector("email", "email", {"provider": "smtp-main"}, by="admin")
    cf.set_reminder_settings({"base_url": BASE_URL}, by="admin")
    add_user(cf, "amy", ["rem_agent"], language="en")
    add_user(cf, "lin", ["rem_lead"], language="zh")
    cf.deploy_flow_text(FLOW.replace("ASSIGNEE", assignee), "remind_me.yaml", by="ops")
    cid = cf.create_customer({"name": "韩梅梅", "phone": "+8613800138011"}, fire_triggers=False)
    iid = cf.start("remind_me", customer_id=cid)
    [task] = [t for t in cf.tasks(instance_id=iid) if t["status"] == "open"]
    return int(task["id"])


def mails(smtp) -> list[EmailMessage]:  # type: ignore[no-untyped-def]
    return [message_from_bytes(m.content, policy=default_policy) for m in smtp.handler.messages]  # type: ignore[misc]


def staff_rows(cf) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with cf.session() as s:
        return list(s.scalars(select(OutboxMessage).where(OutboxMessage.category == "staff").order_by(OutboxMessage.id)))


def link_in(text: str) -> str:
    match = re.search(rf"{re.escape(BASE_URL)}/tasks/\d+", text)
    assert match, text
    return match.group(0)


def test_a_reminder_and_an_escalation_each_send_one_mail_in_the_user_language(cf, smtp_server, clock):
    smtp = smtp_server()
    task_id = set_up(cf, smtp)
    start = clock.now()
    clock.set(start + timedelta(hours=3, minutes=1))
    cf.tick()
    cf.tick()  # a second tick finds nothing new to send
    [reminder] = mails(smtp)
    assert reminder["To"] == "amy@example.com"
    assert reminder["Subject"] == "Task due soon: Check the data of 韩梅梅"
    body = reminder.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert body.startswith("Hello Amy,") and "Due: " in body
    assert link_in(body) == f"{BASE_URL}/tasks/{task_id}"

    clock.set(start + timedelta(hours=5, minutes=1))
    cf.tick()
    cf.tick()
    assert len(mails(smtp)) == 2
    escalation = mails(smtp)[1]
    assert escalation["To"] == "lin@example.com"  # the role the task moved to; lin reads Chinese
    assert escalation["Subject"] == "任务已升级给您：核对资料 韩梅梅"
    assert link_in(escalation.get_body(("plain",)).get_content()) == f"{BASE_URL}/tasks/{task_id}"  # type: ignore[union-attr]
    rows = staff_rows(cf)
    assert [(r.status, r.customer_id, r.channel) for r in rows] == [("sent", None, "email"), ("sent", None, "email")]
    # The notification rows the inbox shows are still written.
    from engine.store.models import Notification

    with cf.session() as s:
        kinds = sorted(n.kind for n in s.scalars(select(Notification).where(Notification.task_id == task_id)))
    assert kinds == ["escalated", "reminder_before"]


def test_the_deep_link_goes_through_sign_in_and_lands_on_the_task(cf_sqlite, smtp_server, clock):
    cf = cf_sqlite
    smtp = smtp_server()
    task_id = set_up(cf, smtp)
    clock.set(clock.now() + timedelta(hours=3, minutes=1))
    cf.tick()
    [mail] = mails(smtp)
    link = urlsplit(link_in(mail.get_body(("plain",)).get_content()))  # type: ignore[union-attr]
    client = create_app({"TESTING": True, "SECRET_KEY": "test"}, engine=cf).test_client()
    chinese = {"Accept-Language": "zh-CN,zh;q=0.9"}

    away = client.get(link.path, headers=chinese)
    assert away.status_code == 302
    login_path = away.headers["Location"]
    assert urlsplit(login_path).path == "/login" and f"next=%2Ftasks%2F{task_id}" in login_path
    page = client.get(login_path, headers=chinese).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    signed_in = client.post(login_path, data={"username": "amy", "password": PASSWORD, "csrf_token": token},
                            headers=chinese)
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == f"/tasks/{task_id}"
    task_page = client.get(signed_in.headers["Location"], headers=chinese)
    html = task_page.get_data(as_text=True)
    assert task_page.status_code == 200 and "Check the data of 韩梅梅" in html
    assert '<html lang="en"' in html  # amy chose English: it wins over the Chinese browser

    # The same sign-in with another site as "next" stays on this site.
    for target in ("https://evil.example/tasks/1", "//evil.example/tasks/1", "/\\evil.example"):
        other = client.application.test_client()
        page = other.get("/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
        response = other.post(f"/login?next={quote(target, safe='')}",
                              data={"username": "amy", "password": PASSWORD, "csrf_token": token})
        assert response.status_code == 302 and response.headers["Location"] == "/", target


def test_an_im_reminder_reaches_the_team_robot_with_a_mention(cf_sqlite, smtp_server, stub_server, clock):
    cf = cf_sqlite
    smtp = smtp_server()
    north = stub_server(feishu_group(NORTH_SECRET))
    cf.save_connector("north", "feishu", {"webhook_url": f"{north.url}/open-apis/bot/v2/hook/north",
                                          "secret": NORTH_SECRET, "allow_private": True, "timeout": 5}, by="admin")
    add_user(cf, "bob", ["rem_agent"], team="north", notify="im", im_id="ou_bob", language="zh")
    cf.set_reminder_settings({"teams": {"north": "feishu/north"}}, by="admin")
    task_id = set_up(cf, smtp, assignee="bob")
    clock.set(clock.now() + timedelta(hours=3, minutes=1))
    cf.tick()
    cf.tick()
    assert mails(smtp) == []  # bob chose IM only
    [request] = north.requests
    text = request.json()["content"]["text"]
    assert text.startswith("任务即将到期：核对资料 韩梅梅\n截止时间：")
    assert f"打开任务：{BASE_URL}/tasks/{task_id}" in text and '<at user_id="ou_bob"></at>' in text
    [row] = staff_rows(cf)
    assert (row.connector, row.status, row.channel) == ("feishu/north", "sent", "feishu")


def test_no_message_for_a_user_who_chose_none(cf_sqlite, smtp_server, clock):
    cf = cf_sqlite
    smtp = smtp_server()
    add_user(cf, "cara", ["rem_agent"], notify="none")
    set_up(cf, smtp, assignee="cara")
    clock.set(clock.now() + timedelta(hours=3, minutes=1))
    cf.tick()
    assert staff_rows(cf) == [] and mails(smtp) == []


def test_staff_mails_ignore_customer_consent_and_caps(cf_sqlite, smtp_server, clock):
    """Even with a marketing cap of 0 on e-mail, a reminder goes out: it is no customer's message."""
    cf = cf_sqlite
    smtp = smtp_server()
    set_up(cf, smtp)
    cf.save_connector("email", "email", {"provider": "smtp-main", "marketing_per_week": 0}, by="admin")
    clock.set(clock.now() + timedelta(hours=3, minutes=1))
    cf.tick()
    assert len(mails(smtp)) == 1
    [row] = staff_rows(cf)
    assert row.status == "sent" and row.customer_id is None


class Crashed(Exception):
    """Stands for the process dying (the crash sweep kills a real one; here one tick dies)."""


def test_a_crash_after_the_provider_accepted_does_not_send_twice(cf_sqlite, smtp_server, clock, monkeypatch):
    cf = cf_sqlite
    smtp = smtp_server()
    set_up(cf, smtp)
    clock.set(clock.now() + timedelta(hours=3, minutes=1))

    def crash(name: str) -> None:
        if name == "after_provider_accept_before_ledger":
            raise Crashed(name)

    monkeypatch.setattr(outbox_module, "crash_point", crash)
    with pytest.raises(Crashed):
        cf.tick()
    monkeypatch.undo()
    assert len(mails(smtp)) == 1
    clock.set(clock.now() + outbox_module.LEASE + timedelta(seconds=1))
    cf.tick()
    cf.tick()
    assert len(mails(smtp)) == 1  # SMTP cannot recognise a repeat: recorded as unknown, not resent
    [row] = staff_rows(cf)
    assert row.status == "unknown"


def test_reminder_settings_are_checked(cf_sqlite):
    from engine.errors import SubmissionInvalid

    with pytest.raises(SubmissionInvalid) as caught:
        cf_sqlite.set_reminder_settings({"base_url": "ftp://x", "teams": {"north": "Feishu North"}})
    assert {e.field for e in caught.value.errors} == {"base_url", "teams"}
    assert cf_sqlite.set_reminder_settings({"im": "wecom/all"})["im"] == "wecom/all"
    with cf_sqlite.session() as s:
        assert s.get(AppSetting, "reminders").value == {"im": "wecom/all"}  # type: ignore[union-attr]

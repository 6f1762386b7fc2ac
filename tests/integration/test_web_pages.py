"""The employees' pages through the Flask test client: inbox, task form, customers (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from engine.app import create_app
from engine.core import Careflow
from engine.demo import seed
from engine.inbox import task_url
from tests.integration.test_app import sign_in
from tests.support.pagetext import untranslated

COMPLAINT = {"subject": "快递破损", "description": "收到的商品外包装破损", "channel": "phone", "contact_phone": "13800138000"}


@pytest.fixture
def app(cf: Careflow, tmp_path: Path):  # type: ignore[no-untyped-def]
    seed(cf, customers=12)
    return create_app({"TESTING": True, "SECRET_KEY": "test", "UPLOAD_FOLDER": str(tmp_path / "uploads")}, engine=cf)


@pytest.fixture
def client(app) -> FlaskClient:  # type: ignore[no-untyped-def]
    return app.test_client()


def token_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def file_complaint(cf: Careflow) -> int:
    return cf.submit_form("complaint_intake", dict(COMPLAINT), user="chen")["instances"][0]


def task_row(cf: Careflow, task_id: int) -> Any:
    from engine.store.models import Task

    with cf.session() as s:
        task = s.get(Task, task_id)
        assert task is not None
        return {"status": task.status, "data": task.data, "assignee": task.assignee}


def open_task_of(cf: Careflow, instance_id: int) -> dict[str, Any]:
    tasks = [t for t in cf.tasks(instance_id=instance_id) if t["status"] == "open"]
    assert len(tasks) == 1, tasks
    return tasks[0]


def test_inbox_lists_my_roles_unclaimed_tasks_with_counts(cf: Careflow, client: FlaskClient) -> None:
    iid = file_complaint(cf)
    task = open_task_of(cf, iid)
    sign_in(client, "chen")
    html = client.get("/inbox").get_data(as_text=True)
    assert f'data-task="{task["id"]}"' in html
    assert "未认领：1" in html and "我的：0" in html
    assert f'action="/tasks/{task["id"]}/claim"' in html
    # wang is an account manager: the service agents' complaint is not his
    other = client.application.test_client()
    sign_in(other, "wang")
    assert f'data-task="{task["id"]}"' not in other.get("/inbox").get_data(as_text=True)
    assert other.get(f"/tasks/{task['id']}").status_code == 404


def test_claim_then_the_task_is_mine(cf: Careflow, client: FlaskClient) -> None:
    task = open_task_of(cf, file_complaint(cf))
    sign_in(client, "chen")
    html = client.get(f"/tasks/{task['id']}").get_data(as_text=True)
    response = client.post(f"/tasks/{task['id']}/claim", data={"csrf_token": token_of(html)})
    assert response.status_code == 302
    assert open_task_of(cf, task["instance_id"])["assignee"] == "chen"
    html = client.get("/inbox?show=mine").get_data(as_text=True)
    assert f'data-task="{task["id"]}"' in html and "我的：1" in html


def test_inbox_filters_by_due_flow_and_customer(cf: Careflow, client: FlaskClient, clock: Any) -> None:
    complaint = open_task_of(cf, file_complaint(cf))
    sign_in(client, "chen")
    assert f'data-task="{complaint["id"]}"' in client.get("/inbox?flow=complaint").get_data(as_text=True)
    assert f'data-task="{complaint["id"]}"' not in client.get("/inbox?flow=onboarding").get_data(as_text=True)
    assert f'data-task="{complaint["id"]}"' not in client.get("/inbox?due=none").get_data(as_text=True)
    assert f'data-task="{complaint["id"]}"' not in client.get("/inbox?due=overdue").get_data(as_text=True)
    clock.set(clock.now() + timedelta(days=5))
    html = client.get("/inbox?due=overdue").get_data(as_text=True)
    assert f'data-task="{complaint["id"]}"' in html and "cf-overdue" in html and "已逾期" in html
    assert "没有符合筛选条件的任务" in client.get("/inbox?customer=nobody-called-this").get_data(as_text=True)


def test_complete_with_errors_then_correctly(cf: Careflow, client: FlaskClient) -> None:
    iid = file_complaint(cf)
    task = open_task_of(cf, iid)
    sign_in(client, "chen")
    page = client.get(f"/tasks/{task['id']}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert 'name="severity"' in page and 'name="category"' in page and 'enctype="multipart/form-data"' in page
    bad = client.post(f"/tasks/{task['id']}", data={"csrf_token": token_of(page), "severity": "high", "notes": "客户很生气"},
                      headers={"Accept-Language": "en"})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'id="err-category"' in html and 'aria-invalid="true"' in html and "Category" in html
    assert "客户很生气" in html and 'value="high" checked' in html  # what was typed is kept
    assert open_task_of(cf, iid)["id"] == task["id"]  # nothing moved
    good = client.post(f"/tasks/{task['id']}", data={"csrf_token": token_of(html), "severity": "low", "category": "delivery"})
    assert good.status_code == 302 and good.headers["Location"] == "/inbox"
    done = task_row(cf, task["id"])
    assert done["status"] == "completed" and done["data"]["category"] == "delivery"
    again = client.post(f"/tasks/{task['id']}", data={"csrf_token": token_of(html), "severity": "low", "category": "delivery"})
    assert again.status_code == 302
    assert "此任务已被完成" in client.get(again.headers["Location"]).get_data(as_text=True)


def test_errors_are_in_chinese_for_a_chinese_user(cf: Careflow, client: FlaskClient) -> None:
    task = open_task_of(cf, file_complaint(cf))
    sign_in(client, "chen")
    page = client.get(f"/tasks/{task['id']}").get_data(as_text=True)
    html = client.post(f"/tasks/{task['id']}", data={"csrf_token": token_of(page)}).get_data(as_text=True)
    assert "请修改标出的字段" in html and "严重程度" in html and 'id="err-severity"' in html


def test_task_page_shows_the_customer_and_timeline(cf: Careflow, client: FlaskClient) -> None:
    cid = cf.create_customer({"name": "周杰", "phone": "+8613900001111", "region": "上海", "owner": "wang"})
    iid = [i for i in cf.tasks(user="wang")]
    task = [t for t in iid if t["status"] == "open"][0]
    sign_in(client, "wang")
    html = client.get(task_url(task["id"])).get_data(as_text=True)
    assert 'id="customer-card"' in html and "周杰" in html and "+8613900001111" in html
    assert f'href="/customers/{cid}"' in html and 'id="timeline"' in html


def test_comment_hand_over_and_send_back(cf: Careflow, client: FlaskClient) -> None:
    iid = file_complaint(cf)
    triage = open_task_of(cf, iid)
    cf.claim(triage["id"], "chen")
    cf.complete(triage["id"], {"severity": "low", "category": "delivery"}, "chen")
    resolve = open_task_of(cf, iid)
    sign_in(client, "chen")
    page = client.get(f"/tasks/{resolve['id']}").get_data(as_text=True)
    token = token_of(page)
    assert client.post(f"/tasks/{resolve['id']}/comment", data={"csrf_token": token, "body": "已致电客户"}).status_code == 302
    html = client.get(f"/tasks/{resolve['id']}").get_data(as_text=True)
    assert "已致电客户" in html
    assert 'id="send-back-form"' in html and 'value="triage"' in html
    # sending back needs a reason
    client.post(f"/tasks/{resolve['id']}/send-back", data={"csrf_token": token, "to_step": "triage", "comment": ""})
    assert open_task_of(cf, iid)["id"] == resolve["id"]
    response = client.post(f"/tasks/{resolve['id']}/send-back", data={"csrf_token": token, "to_step": "triage", "comment": "类别选错了"})
    assert response.status_code == 302
    back = open_task_of(cf, iid)
    assert back["step"] == "triage"
    # hand over to a colleague with the role
    cf.claim(back["id"], "chen")
    page = client.get(f"/tasks/{back['id']}").get_data(as_text=True)
    assert 'value="liu"' in page
    response = client.post(f"/tasks/{back['id']}/hand-over", data={"csrf_token": token, "to": "liu", "comment": "请协助"})
    assert response.status_code == 302
    assert open_task_of(cf, iid)["assignee"] == "liu"


def test_forms_and_actions_need_csrf(cf: Careflow, client: FlaskClient) -> None:
    task = open_task_of(cf, file_complaint(cf))
    sign_in(client, "chen")
    for path in (f"/tasks/{task['id']}", f"/tasks/{task['id']}/claim", f"/tasks/{task['id']}/comment"):
        assert client.post(path, data={"body": "x", "severity": "low", "category": "other"}).status_code == 400, path
    assert open_task_of(cf, task["instance_id"])["assignee"] is None


def test_deep_link_goes_through_sign_in_to_the_task(cf: Careflow, client: FlaskClient) -> None:
    task = open_task_of(cf, file_complaint(cf))
    response = client.get(task_url(task["id"]))
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    next_ = re.search(r"next=([^&]+)", response.headers["Location"])
    assert next_ is not None
    signed = sign_in(client, "chen", next_=next_.group(1))
    assert signed.headers["Location"] == f"/tasks/{task['id']}"  # type: ignore[attr-defined]


def test_customer_list_search_filters_and_scope(cf: Careflow, client: FlaskClient) -> None:
    cf.create_customer({"name": "北京客户", "phone": "+8613700001234", "region": "北京", "owner": "li"}, fire_triggers=False)
    sign_in(client, "wang")
    html = client.get("/customers").get_data(as_text=True)
    total = int(re.search(r"共 (\d+) 位客户", html).group(1))  # type: ignore[union-attr]
    admin = client.application.test_client()
    sign_in(admin, "admin")
    all_total = int(re.search(r"共 (\d+) 位客户", admin.get("/customers").get_data(as_text=True)).group(1))  # type: ignore[union-attr]
    assert 0 < total < all_total  # wang sees only his own customers
    assert "北京" not in html.split('id="customer-list"', 1)[1]  # li's region
    html = admin.get("/customers?region=北京").get_data(as_text=True)
    rows = html.split('id="customer-list"', 1)[1].split("</table>")[0]
    assert "北京" in rows and "上海" not in rows
    grade_a = admin.get("/customers?grade=A").get_data(as_text=True).split('id="customer-list"', 1)
    assert len(grade_a) == 1 or ">B<" not in grade_a[1]
    cf.create_customer({"name": "欧阳娜娜", "phone": "+8613700007777", "owner": "li"})
    found = admin.get("/customers?q=欧阳").get_data(as_text=True)
    assert "欧阳娜娜" in found and "共 1 位客户" in found
    assert "欧阳娜娜" not in client.get("/customers?q=欧阳").get_data(as_text=True)


def test_customer_pages_paginate(cf: Careflow, client: FlaskClient) -> None:
    for i in range(30):
        cf.create_customer({"name": f"测试{i:02d}", "phone": f"+86137000{i:05d}", "owner": "wang"}, fire_triggers=False)
    sign_in(client, "admin")
    first = client.get("/customers").get_data(as_text=True)
    assert 'rel="next"' in first and "第 1 / 2 页" in first
    second = client.get("/customers?page=2").get_data(as_text=True)
    assert "第 2 / 2 页" in second
    names = lambda html: set(re.findall(r'translate="no">(测试\d\d)<', html))  # noqa: E731
    assert names(first).isdisjoint(names(second))


def test_customer_profile_and_timeline(cf: Careflow, client: FlaskClient) -> None:
    cid = cf.create_customer({"name": "周杰", "phone": "+8613900001111", "region": "上海", "owner": "wang"})
    sign_in(client, "wang")
    html = client.get(f"/customers/{cid}", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "周杰" in html and 'id="timeline"' in html and 'id="customer-tasks"' in html
    assert "New customer welcome" in html or "Onboarding" in html or "onboarding" in html.lower()
    other = client.application.test_client()
    sign_in(other, "li")
    assert other.get(f"/customers/{cid}").status_code == 404


def test_designer_has_no_customer_pages(client: FlaskClient) -> None:
    sign_in(client, "ops")
    assert client.get("/customers").status_code == 403
    assert 'href="/customers"' not in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_employee_pages_have_no_untranslated_text(cf: Careflow, client: FlaskClient, lang: str) -> None:
    iid = file_complaint(cf)
    task = open_task_of(cf, iid)
    cid = cf.create_customer({"name": "周杰", "phone": "+8613900001111", "region": "上海", "owner": "wang"})
    sign_in(client, "admin")
    headers = {"Accept-Language": lang}
    for path in ("/", "/inbox", f"/tasks/{task['id']}", "/customers", f"/customers/{cid}", "/customers?q=zzz", "/inbox?due=overdue",
                 "/tasks/999999"):
        response = client.get(path, headers=headers)
        assert response.status_code in (200, 404), path
        assert untranslated(response.get_data(as_text=True), lang) == [], path
    html = client.post(f"/tasks/{task['id']}", data={"csrf_token": token_of(client.get('/inbox').get_data(as_text=True))},
                       headers=headers).get_data(as_text=True)
    assert untranslated(html, lang) == []


def test_segment_filter_lists_exactly_the_members(cf: Careflow, client: FlaskClient) -> None:
    from sqlalchemy import select

    from engine.store.models import Segment, SegmentMember

    cf.create_segment({"name": "shanghai_a", "title": {"zh": "上海大客户", "en": "Shanghai big spenders"},
                       "filter": {"grade": ["A"], "region": ["上海"]}})
    cf.create_customer({"name": "甲大客户", "phone": "+8613700005551", "region": "上海", "expected_value": 200000, "owner": "wang"},
                       fire_triggers=False)
    cf.create_customer({"name": "乙北京客户", "phone": "+8613700005552", "region": "北京", "expected_value": 200000, "owner": "wang"},
                       fire_triggers=False)
    cf.recompute_segments()
    with cf.session() as s:
        segment_id = s.scalar(select(Segment.id).where(Segment.name == "shanghai_a"))
        members = set(s.scalars(select(SegmentMember.customer_id).where(SegmentMember.segment_id == segment_id)))
    assert members
    sign_in(client, "admin")
    page = client.get("/customers", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert '<option value="shanghai_a">Shanghai big spenders</option>' in page
    assert "上海大客户" in client.get("/customers", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    listed: set[int] = set()
    for page_no in (1, 2, 3, 4):
        html = client.get(f"/customers?segment=shanghai_a&page={page_no}").get_data(as_text=True)
        listed |= {int(i) for i in re.findall(r'href="/customers/(\d+)"', html.split('id="customer-list"', 1)[-1])}
    assert listed == members
    html = client.get("/customers?segment=shanghai_a").get_data(as_text=True)
    assert f"共 {len(members)} 位客户" in html and 'value="shanghai_a" selected' in html
    assert "乙北京客户" not in html
    # an unknown segment filters nothing instead of failing
    assert client.get("/customers?segment=nope").status_code == 200


def test_profile_shows_grade_rfm_and_churn_reason(cf: Careflow, client: FlaskClient, clock: Any) -> None:
    from engine.store.models import Customer

    cid = cf.create_customer({"name": "周流失", "phone": "+8613900002222", "owner": "wang"}, fire_triggers=False)
    with cf.session() as s, s.begin():
        row = s.get(Customer, cid)
        assert row is not None
        row.last_purchase_at = clock.now() - timedelta(days=400)
        row.first_purchase_at = clock.now() - timedelta(days=800)
        row.purchase_count, row.purchase_total = 3, 9000.0
    cf.recompute_segments([cid])
    with cf.session() as s:
        row = s.get(Customer, cid)
        assert row is not None and row.churn_reason and row.rfm_r is not None
        grade, rfm, reason = row.grade, (row.rfm_r, row.rfm_f, row.rfm_m), dict(row.churn_reason)
    sign_in(client, "wang")
    for lang, header in (("zh", "zh-CN"), ("en", "en")):
        html = client.get(f"/customers/{cid}", headers={"Accept-Language": header}).get_data(as_text=True)
        assert f'id="customer-grade">{grade}<' in html
        assert f"R {rfm[0]} · F {rfm[1]} · M {rfm[2]}" in html
        assert reason[lang] in html.split('id="customer-churn"', 1)[1].split("</dd>", 1)[0]
    assert "流失风险" in client.get(f"/customers/{cid}", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)

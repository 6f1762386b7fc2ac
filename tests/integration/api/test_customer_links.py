"""Customer links: signed, expiring, single-use; a used, expired or tampered link changes nothing."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient

from engine.core import Careflow
from tests.integration.api import world as wd
from tests.integration.api.conftest import Api

RESOLUTION = {"resolution": "补发新品", "compensation": "replacement"}


def waiting_for_confirmation(cf: Careflow) -> tuple[int, int]:
    """A complaint of wang's customer, resolved and waiting for the customer's confirmation."""
    cid = wd.new_customer(cf, "wang")
    iid = wd.complaint(cf, cid)
    triage = wd.open_task(cf, iid)
    cf.claim(triage, "chen")
    cf.complete(triage, wd.TRIAGE, "chen")
    cf.complete(wd.open_task(cf, iid), RESOLUTION, "chen")
    assert cf.describe(iid)["current_steps"] == ["wait_confirmation"]
    return cid, iid


def make_link(api: Api, iid: int, **extra: Any) -> dict[str, Any]:
    response = api.post(f"/api/instances/{iid}/links", as_="wang",
                        json={"form": "complaint_confirmation", "event": "complaint_confirmation", **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def path_of(link: dict[str, Any]) -> str:
    return "/l/" + link["token"]


def csrf(client: FlaskClient, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


@pytest.fixture
def visitor(app: Any) -> FlaskClient:
    """The customer's browser: no sign-in, no token."""
    return app.test_client()


def test_the_link_opens_the_form_and_its_answer_resumes_the_instance(api: Api, cf: Careflow, visitor: FlaskClient) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    assert link["url"].endswith(path_of(link)) and link["url"].startswith("http")
    page = visitor.get(path_of(link), headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "您对处理结果满意吗？" in html and "满意" in html and 'name="csrf_token"' in html
    assert page.headers["Cache-Control"] == "no-store"
    english = visitor.get(path_of(link) + "?lang=en").get_data(as_text=True)
    assert "Are you satisfied with the resolution?" in english
    token = csrf(visitor, path_of(link))
    answered = visitor.post(path_of(link), data={"csrf_token": token, "satisfied": "true", "comment": "谢谢"})
    assert answered.status_code == 200 and "谢谢" in answered.get_data(as_text=True)
    info = cf.describe(iid)
    assert (info["status"], info["outcome"]) == ("completed", "resolved")
    assert info["variables"]["complaint_confirmation"] == {"satisfied": True, "comment": "谢谢"}
    entry = cf.audit_entries(action="link.submit")[0][0]
    assert entry["target_id"] == str(iid) and entry["data"]["data"]["satisfied"] is True


def test_second_use_changes_nothing(api: Api, cf: Careflow, visitor: FlaskClient) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    token = csrf(visitor, path_of(link))
    assert visitor.post(path_of(link), data={"csrf_token": token, "satisfied": "false"}).status_code == 200
    # Not satisfied: the complaint went back to resolution; resolve again so it waits once more.
    cf.complete(wd.open_task(cf, iid), RESOLUTION, "chen")
    before = cf.describe(iid)
    again = visitor.post(path_of(link), data={"csrf_token": token, "satisfied": "true"})
    assert again.status_code == 410 and "已失效" in again.get_data(as_text=True)
    assert visitor.get(path_of(link)).status_code == 410
    assert cf.describe(iid) == before


def test_invalid_answers_are_shown_and_the_link_stays_usable(api: Api, cf: Careflow, visitor: FlaskClient) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    token = csrf(visitor, path_of(link))
    bad = visitor.post(path_of(link) + "?lang=en", data={"csrf_token": token, "comment": "x" * 2001})
    assert bad.status_code == 422
    html = bad.get_data(as_text=True)
    assert 'aria-invalid="true"' in html and "role=\"alert\"" in html
    assert cf.describe(iid)["current_steps"] == ["wait_confirmation"]
    good = visitor.post(path_of(link), data={"csrf_token": token, "satisfied": "true"})
    assert good.status_code == 200


def test_expired_link(api: Api, cf: Careflow, visitor: FlaskClient, clock: Any) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid, ttl_hours=1)
    token = csrf(visitor, path_of(link))
    clock.set(clock.now() + timedelta(hours=1, seconds=1))
    assert visitor.get(path_of(link)).status_code == 410
    assert visitor.post(path_of(link), data={"csrf_token": token, "satisfied": "true"}).status_code == 410
    assert cf.describe(iid)["current_steps"] == ["wait_confirmation"]


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
    lambda t: ("X" if t[0] != "X" else "Y") + t[1:],  # payload
    lambda t: t.split(".")[0],  # no signature at all
    lambda t: "not-a-token",
])
def test_tampered_link(api: Api, cf: Careflow, visitor: FlaskClient, mangle: Any) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    token = csrf(visitor, path_of(link))
    bad = "/l/" + mangle(link["token"])
    assert visitor.get(bad).status_code == 400
    assert visitor.post(bad, data={"csrf_token": token, "satisfied": "true"}).status_code == 400
    assert cf.describe(iid)["current_steps"] == ["wait_confirmation"]


def test_a_link_signed_with_another_key_is_refused(api: Api, cf: Careflow) -> None:
    from engine.app import create_app

    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    other = create_app({"TESTING": True, "SECRET_KEY": "another-key"}, engine=cf).test_client()
    assert other.get(path_of(link)).status_code == 400


def test_link_without_csrf_token_is_refused(api: Api, cf: Careflow, visitor: FlaskClient) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    visitor.get(path_of(link))
    assert visitor.post(path_of(link), data={"satisfied": "true"}).status_code == 400
    assert cf.describe(iid)["current_steps"] == ["wait_confirmation"]


def test_link_for_an_instance_that_stopped_waiting(api: Api, cf: Careflow, visitor: FlaskClient) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    link = make_link(api, iid)
    cf.cancel(iid)
    assert visitor.get(path_of(link)).status_code == 410


def test_link_creation_errors(api: Api, cf: Careflow) -> None:
    _cid, iid = waiting_for_confirmation(cf)
    assert api.post(f"/api/instances/{iid}/links", json={"form": "nope", "event": "complaint_confirmation"}).status_code == 422
    assert api.post(f"/api/instances/{iid}/links", json={"form": "complaint_confirmation", "event": "bad event"}).status_code == 422
    assert api.post(f"/api/instances/{iid}/links", json={"form": "complaint_confirmation", "event": "x", "ttl_hours": 0}).status_code == 422
    assert api.post("/api/instances/999999/links", json={"form": "complaint_confirmation", "event": "x"}).status_code == 404
    cf.cancel(iid)
    assert api.post(f"/api/instances/{iid}/links", json={"form": "complaint_confirmation", "event": "x"}).status_code == 409


def test_satisfaction_survey_link_for_onboarding(api: Api, cf: Careflow, visitor: FlaskClient, clock: Any) -> None:
    cid = wd.new_customer(cf, "wang")
    iid = wd.instance_of(cf, cid)
    cf.complete(wd.open_task(cf, iid), wd.WELCOME, "wang")
    clock.set(clock.now() + timedelta(days=7, hours=1))
    cf.tick()
    assert cf.describe(iid)["current_steps"] == ["wait_survey"]
    link = make_link(api, iid, form="satisfaction_survey", event="satisfaction_survey")
    html = visitor.get(path_of(link)).get_data(as_text=True)
    assert "满意度" in html and 'type="radio" name="score" value="5"' in html
    token = csrf(visitor, path_of(link))
    assert visitor.post(path_of(link), data={"csrf_token": token, "score": "4", "nps": "9"}).status_code == 200
    assert cf.describe(iid)["outcome"] == "onboarded"

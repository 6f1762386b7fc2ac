"""Segments, grading fields and the NPS report over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from engine.store.models import SurveyAnswer
from tests.conftest import SHANGHAI, START
from tests.integration.api.conftest import Api

NOW = START.astimezone(timezone.utc)


def test_segment_crud_and_members(api: Api, cf) -> None:  # type: ignore[no-untyped-def]
    created = api.post("/api/segments", json={"name": "sh_vip", "title": {"zh": "上海 VIP", "en": "Shanghai VIP"},
                                              "filter": {"grade": ["A"], "region": ["上海"]}})
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["members"] == 0 and created.get_json()["builtin"] is False
    assert api.post("/api/segments", json={"name": "sh_vip"}).status_code == 409
    bad = api.post("/api/segments", json={"name": "x", "filter": {"grade": ["Z"], "colour": 1}})
    assert bad.status_code == 422
    assert sorted(d["field"] for d in bad.get_json()["error"]["details"]) == ["colour", "grade"]

    cid = api.post("/api/customers", json={
        "name": "王总", "region": "上海", "purchase_count": 8, "purchase_total": 250000,
        "first_purchase_at": (NOW - timedelta(days=140)).isoformat(), "last_purchase_at": (NOW - timedelta(days=42)).isoformat(),
    }).get_json()["id"]
    recomputed = api.post("/api/grading/recompute", json={})
    assert recomputed.status_code == 200 and recomputed.get_json()["segments"]["entered"]["sh_vip"] == 1

    shown = api.get("/api/segments/sh_vip").get_json()
    assert shown["members"] == 1 and shown["title"] == {"zh": "上海 VIP", "en": "Shanghai VIP"}
    members = api.get("/api/segments/sh_vip/members").get_json()
    assert members["total"] == 1
    [member] = members["items"]
    assert member["id"] == cid and member["grade"] == "A" and member["rfm"]["cell"] is not None
    assert member["churn_score"] == 3.0
    assert member["churn_reason"]["en"] == "42 days without a purchase; usually buys every 14 days"
    assert api.get(f"/api/customers/{cid}").get_json()["churn_reason"]["zh"] == "42 天未购买，平时约每 14 天购买一次"
    assert "churn_risk" in {s["name"] for s in api.get("/api/segments").get_json()}

    patched = api.patch("/api/segments/sh_vip", json={"filter": {"region": ["北京"]}})
    assert patched.status_code == 200 and patched.get_json()["filter"] == {"region": ["北京"]}
    assert api.patch("/api/segments/nope", json={"filter": {}}).status_code == 404
    assert api.delete("/api/segments/churn_risk").status_code == 409
    assert api.delete("/api/segments/sh_vip").status_code == 204
    assert api.get("/api/segments/sh_vip").status_code == 404


def test_nps_report(api: Api, cf) -> None:  # type: ignore[no-untyped-def]
    with cf.sessions.begin() as s:
        for score, flow, when in ((10, "nps_survey", datetime(2026, 10, 5, tzinfo=SHANGHAI)),
                                  (2, "nps_survey", datetime(2026, 10, 6, tzinfo=SHANGHAI)),
                                  (9, "onboarding", datetime(2026, 11, 6, tzinfo=SHANGHAI))):
            s.add(SurveyAnswer(flow_id=flow, form_id="nps_survey", kind="nps", score=score, answered_at=when))
    by_month = api.get("/api/reports/nps?by=month").get_json()
    assert [(g["key"], g["nps"]) for g in by_month["groups"]] == [("2026-10", 0.0), ("2026-11", 100.0)]
    by_flow = api.get("/api/reports/nps?by=flow&from=2026-10-01&to=2026-10-31").get_json()
    assert [(g["key"], g["answers"], g["detractors"]) for g in by_flow["groups"]] == [("nps_survey", 2, 1)]
    assert by_flow["from"] == "2026-10-01" and by_flow["total"]["nps"] == 0.0
    assert api.get("/api/reports/nps?by=week").status_code == 422
    assert api.get("/api/reports/nps?from=0001-01-01&to=9999-12-31").status_code == 200

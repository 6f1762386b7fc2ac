"""RFM scores, A/B/C grades and churn risk on known data, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from click.testing import CliRunner

from engine import expr
from engine.cli import main
from engine.core import BUILTIN_FLOWS
from engine.errors import SubmissionInvalid
from engine.flow.loader import load_flow
from engine.segments.grading import grade_for
from engine.segments.settings import GradingSettings
from tests.conftest import START

NOW = START.astimezone(timezone.utc)


def buyer(cf, i: int, **extra):  # type: ignore[no-untyped-def]
    """Customer i: i purchases, i × 10,000 CNY, the last one 10 × i days ago."""
    data = {"name": f"客户{i}", "phone": f"+86139001390{i:02d}", "purchase_count": i, "purchase_total": i * 10000.0,
            "last_purchase_at": (NOW - timedelta(days=10 * i)).isoformat()}
    data.update(extra)
    return cf.create_customer(data, fire_triggers=False)


def grading(cf, cid):  # type: ignore[no-untyped-def]
    return cf.customer_grading(cid)


def test_quintiles_grades_and_cells_on_known_data(cf):
    ids = {i: buyer(cf, i) for i in range(1, 11)}
    prospect = cf.create_customer({"name": "潜在大客户", "expected_value": 150000}, fire_triggers=False)
    by_hand = cf.create_customer({"name": "手工分级", "grade": "B"}, fire_triggers=False)
    nothing = cf.create_customer({"name": "无数据"}, fire_triggers=False)

    result = cf.recompute_segments()

    assert result["grading"]["customers"] == 13
    # Ten distinct values fall two by two into the quintiles; recency scores fewer days higher.
    cells = {i: grading(cf, cid)["rfm"]["cell"] for i, cid in ids.items()}
    assert cells == {1: "511", 2: "511", 3: "422", 4: "422", 5: "333", 6: "333", 7: "244", 8: "244", 9: "155", 10: "155"}
    grades = {i: grading(cf, cid)["grade"] for i, cid in ids.items()}
    assert grades == {1: "C", **{i: "B" for i in range(2, 10)}, 10: "A"}
    assert grading(cf, prospect)["grade"] == "A" and grading(cf, prospect)["rfm"]["cell"] is None
    assert grading(cf, by_hand)["grade"] == "B"  # no figure of value: the grade given by hand stays
    assert grading(cf, nothing)["grade"] == "C"
    total, members = cf.segment_members("grade_a")
    assert total == 2 and {m["id"] for m in members} == {ids[10], prospect}

    # A second run changes nothing.
    assert cf.recompute_segments()["grading"]["changed"] == 0


def test_configured_edges_and_thresholds(cf):
    ids = {i: buyer(cf, i) for i in range(1, 11)}
    cf.set_grading_settings({"recency_days_edges": [15, 35, 55, 75], "frequency_edges": [1, 2, 5, 8],
                             "grade_a_min": 50000, "grade_b_min": 30000})
    cf.recompute_segments()
    r = {i: grading(cf, cid)["rfm"]["r"] for i, cid in ids.items()}
    assert r == {1: 5, 2: 4, 3: 4, 4: 3, 5: 3, 6: 2, 7: 2, 8: 1, 9: 1, 10: 1}
    f = {i: grading(cf, cid)["rfm"]["f"] for i, cid in ids.items()}
    assert f == {1: 1, 2: 2, 3: 3, 4: 3, 5: 3, 6: 4, 7: 4, 8: 4, 9: 5, 10: 5}
    grades = {i: grading(cf, cid)["grade"] for i, cid in ids.items()}
    assert grades == {1: "C", 2: "C", 3: "B", 4: "B", **{i: "A" for i in range(5, 11)}}
    # Back to quintiles.
    cf.set_grading_settings({"recency_days_edges": None})
    cf.recompute_segments()
    assert grading(cf, ids[2])["rfm"]["r"] == 5


def test_bad_settings_name_the_field(cf):
    with pytest.raises(SubmissionInvalid) as err:
        cf.set_grading_settings({"recency_days_edges": [90, 60, 30, 10], "recompute_at": "25:00"})
    fields = {e.field for e in err.value.errors}
    assert fields == {"recompute_at"} or fields == {"recompute_at", "recency_days_edges"}
    with pytest.raises(SubmissionInvalid) as err:
        cf.set_grading_settings({"recency_days_edges": [90, 60, 30, 10]})
    assert [e.field for e in err.value.errors] == ["recency_days_edges"]
    with pytest.raises(SubmissionInvalid) as err:
        cf.set_grading_settings({"grade_a_min": 10, "grade_b_min": 20})
    assert [e.field for e in err.value.errors] == ["grade_a_min"]


def test_recompute_grades_the_same_way_as_onboarding():
    """The onboarding flow's grade step and the recompute agree on every threshold."""
    template = load_flow(BUILTIN_FLOWS / "onboarding.yaml").step("grade").fields["grade"]
    settings = GradingSettings()
    for value in (0, 19999.99, 20000, 50000, 99999, 100000, 1e7):
        onboarding = expr.render_value(template, {"customer": {"expected_value": value}})
        assert onboarding == grade_for(value, settings), value


def test_churn_risk_explains_itself(cf):
    regular = cf.create_customer({
        "name": "老主顾", "purchase_count": 8, "purchase_total": 8000.0,
        "first_purchase_at": (NOW - timedelta(days=140)).isoformat(), "last_purchase_at": (NOW - timedelta(days=42)).isoformat(),
    }, fire_triggers=False)
    once = cf.create_customer({"name": "只买过一次", "purchase_count": 1, "purchase_total": 300.0,
                               "last_purchase_at": (NOW - timedelta(days=45)).isoformat()}, fire_triggers=False)
    never = cf.create_customer({"name": "未购买"}, fire_triggers=False)
    cf.recompute_segments()

    g = grading(cf, regular)
    assert g["churn_score"] == 3.0
    assert g["churn_reason"] == {"zh": "42 天未购买，平时约每 14 天购买一次",
                                 "en": "42 days without a purchase; usually buys every 14 days"}
    assert "churn_risk" in g["segments"]
    g = grading(cf, once)
    assert g["churn_score"] == 0.5 and "按约每 90 天购买一次估计" in g["churn_reason"]["zh"]
    assert "churn_risk" not in g["segments"]
    assert grading(cf, never)["churn_score"] is None and grading(cf, never)["churn_reason"] is None

    runner = CliRunner()
    out = runner.invoke(main, ["--database", cf.url, "customers", "risk", str(regular)])
    assert out.exit_code == 0, out.output
    assert "42 天未购买，平时约每 14 天购买一次" in out.output and "churn_risk" in out.output
    out = runner.invoke(main, ["--database", cf.url, "customers", "risk", str(regular), "--lang", "en"])
    assert "usually buys every 14 days" in out.output


def test_recompute_for_some_customers_places_them_among_everyone(cf):
    ids = {i: buyer(cf, i) for i in range(1, 11)}
    cf.recompute_segments()
    newcomer = buyer(cf, 11, phone="+8613700137000", purchase_count=50, purchase_total=1e6,
                     last_purchase_at=NOW.isoformat())
    result = cf.recompute_segments([newcomer])
    assert result["grading"]["customers"] == 1
    assert grading(cf, newcomer)["rfm"]["cell"] == "555" and grading(cf, newcomer)["grade"] == "A"
    assert "grade_a" in grading(cf, newcomer)["segments"]
    assert cf.segment("grade_a")["members"] == 2  # customer 10 and the newcomer
    assert grading(cf, ids[1])["rfm"]["cell"] == "511"  # the others were not touched

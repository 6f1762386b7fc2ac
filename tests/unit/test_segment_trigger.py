"""The ``segment`` trigger in the flow DSL: parsed, checked against the known segments, located errors."""

from __future__ import annotations

import pytest

from engine.errors import FlowInvalid
from engine.flow.loader import load_flow_text
from engine.flow.validate import Catalog

FLOW = """\
id: seg
name: {zh: 分群, en: Segment}
triggers:
  - type: segment
    segment: %s
    event: %s
steps:
  - id: done
    type: end
"""
CATALOG = Catalog(segments=frozenset({"churn_risk", "grade_a"}))


def test_a_segment_trigger_is_parsed() -> None:
    flow = load_flow_text(FLOW % ("churn_risk", "leave"), "seg.yaml", CATALOG)
    [trigger] = flow.triggers
    assert (trigger.type, trigger.segment, trigger.event) == ("segment", "churn_risk", "leave")
    assert "churn_risk" in trigger.key


def test_an_unknown_segment_or_event_is_located() -> None:
    with pytest.raises(FlowInvalid) as err:
        load_flow_text(FLOW % ("grade_b", "enter"), "seg.yaml", CATALOG)
    [problem] = err.value.problems
    assert (problem.line, problem.column) == (5, 14) and "unknown segment 'grade_b'" in problem.message
    with pytest.raises(FlowInvalid) as err:
        load_flow_text(FLOW % ("grade_a", "sideways"), "seg.yaml", CATALOG)
    assert err.value.problems[0].line == 6


def test_without_a_catalog_of_segments_any_name_passes() -> None:
    assert load_flow_text(FLOW % ("anything", "enter"), "seg.yaml", Catalog()).triggers[0].segment == "anything"

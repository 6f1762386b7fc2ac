"""The public Python API is exactly what engine.__all__ says, and every name resolves."""

from __future__ import annotations

import engine


def test_public_api_is_pinned() -> None:
    assert engine.__all__ == [
        "BusinessCalendar", "Careflow", "Conflict", "EngineError", "FixedClock", "FlowInvalid", "FormInvalid",
        "NotFound", "Problem", "SubmissionInvalid", "SystemClock", "check_submission", "load_flow", "load_flow_text",
        "load_form",
    ]
    for name in engine.__all__:
        assert getattr(engine, name).__name__ == name

"""The five built-in flows driven along their main path, as lists of operations for the crash sweep.

Each operation is one request to the driver (``tests.reliability.driver``), run in its own process
at a planned time on the engine clock. Every operation is written so that running it again after a
crash does only what is left to do (a client that retries a failed request, not a blind replay):
customers and form submissions are skipped when they already exist, ``complete`` and ``message``
act only on tasks still open and tokens still waiting, and ``tick`` is idempotent by design.

The expected result of every instance is spelled out here: its outcome, the steps that log
``step_completed`` on the way (each exactly once), and how many messages it sends.

Operations are planned with at least ten minutes of slack after the timers they wait for, because
a restart may come up to 126 s of engine time late (0–5 s, plus the 120 s lease for half the seeds)
and every later timer of the instances it started moves with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")
#: Tuesday 24 November 2026, 09:00 in Shanghai (as tests/conftest.py): the flows are deployed then.
START = datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)

#: Who completes a task that has a role and no assignee.
USER_FOR_ROLE = {"service_agent": "chen", "service_lead": "liu", "team_lead": "zhao", "account_manager": "wang",
                 "admin": "admin"}


def phone(i: int) -> str:
    """Customer ``i``'s phone number, E.164; the index is read back from its last eight digits."""
    return f"+86139{i:08d}"


def index_of(phone_number: str | None) -> int:
    return int((phone_number or "0")[-8:])


def email(i: int) -> str:
    return f"customer{i:04d}@example.com"


def _owner(i: int) -> str:
    return "wang" if i % 2 == 0 else "li"


@dataclass(frozen=True)
class Op:
    """One driver request at a planned time (the harness never moves the clock backwards)."""

    at: datetime
    request: Mapping[str, Any]

    @property
    def name(self) -> str:
        extra = self.request.get("step") or self.request.get("event") or ""
        return f"{self.request['op']}{':' + extra if extra else ''}"


@dataclass(frozen=True)
class Scenario:
    flow: str
    #: The customer profile of index i (created with fire_triggers=False), or None when the start creates it.
    customer: Callable[[int], dict[str, Any]] | None
    #: The form that starts instance i, when the flow starts from a form.
    start_form: Callable[[int], tuple[str, dict[str, Any]]] | None
    #: Form answers per task step.
    answers: Mapping[str, Mapping[str, Any]]
    ops: Callable[[int], list[Op]]
    outcome: Callable[[int], str]
    #: The steps that log ``step_completed`` for instance i, in order (each once on the main path).
    path: Callable[[int], list[str]]
    #: Messages (outbox rows) instance i sends.
    messages: Callable[[int], int]
    notes: str = ""
    event_data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def req(op: str, flow: str, **kw: Any) -> dict[str, Any]:
    return {"op": op, "flow": flow, **kw}


# ----- 1. onboarding: form → welcome e-mail + SMS → welcome call → 7 days → survey → answer -------------

def _onboarding_form(i: int) -> tuple[str, dict[str, Any]]:
    return "new_customer", {
        "name": f"新客户{i:03d}", "phone": f"139{i:08d}", "email": email(i).upper(),
        "region": "上海" if i % 2 == 0 else "北京",
        # Grade B: the follow-up flow picks grade B only in Jan/Apr/Jul/Oct, so the 1 December tick
        # of this scenario starts no follow-up for these customers.
        "expected_value": 30000, "preferred_channel": "email", "language": "zh", "consent_marketing": True,
    }


def _onboarding_ops(n: int) -> list[Op]:
    f = "onboarding"
    return [
        Op(START, req("start", f, count=n)),
        Op(START, req("tick", f)),
        Op(START + timedelta(hours=1), req("complete", f, count=n, step="welcome_call")),
        Op(START + timedelta(days=7, hours=2), req("tick", f)),
        Op(START + timedelta(days=7, hours=3), req("message", f, count=n, event="satisfaction_survey")),
    ]


ONBOARDING = Scenario(
    flow="onboarding",
    customer=None,
    start_form=_onboarding_form,
    answers={"welcome_call": {"reached": True, "call_notes": "客户想了解培训安排", "needs": ["training"],
                              "preferred_channel": "sms"}},
    ops=_onboarding_ops,
    outcome=lambda i: "onboarded",
    path=lambda i: ["standardise", "grade", "has_owner", "assign_manager", "has_email", "welcome_email", "has_phone",
                    "welcome_sms", "welcome_call", "record_preferences", "wait_7_days", "send_survey", "record_score",
                    "done"],
    messages=lambda i: 3,
    event_data={"satisfaction_survey": {"score": 5}},
    notes="new_customer form; welcome e-mail and SMS; welcome call; 7-day wait timer; survey SMS; survey answer",
)


# ----- 2. follow-up: monthly schedule for grade A → reminder timer → task done ---------------------------

def _follow_up_customer(i: int) -> dict[str, Any]:
    return {"name": f"回访客户{i:03d}", "phone": phone(i), "email": email(i), "region": "上海", "grade": "A",
            "owner": _owner(i), "preferred_channel": "email", "consent": {"email": True, "sms": True}}


def _follow_up_ops(n: int) -> list[Op]:
    f = "follow_up"
    first = datetime(2026, 12, 1, 9, 0, tzinfo=SHANGHAI)
    return [
        Op(START, req("customers", f, count=n)),
        Op(first, req("tick", f)),  # the monthly trigger starts one instance per grade-A customer
        # Due five business days later (Tue 8 Dec 09:00); the "after 2 hours" reminder fires at 11:00.
        Op(datetime(2026, 12, 8, 12, 0, tzinfo=SHANGHAI), req("tick", f)),
        Op(datetime(2026, 12, 8, 12, 30, tzinfo=SHANGHAI), req("complete", f, count=n, step="follow_up")),
    ]


FOLLOW_UP = Scenario(
    flow="follow_up",
    customer=_follow_up_customer,
    start_form=None,
    answers={"follow_up": {"channel": "phone", "outcome": "satisfied", "satisfaction": 4,
                           "next_action": "下季度介绍新品"}},
    ops=_follow_up_ops,
    outcome=lambda i: "followed_up",
    path=lambda i: ["follow_up", "record", "outcome", "done"],
    messages=lambda i: 0,
    notes="cron trigger (1st of the month, grade A); overdue reminder timer; follow-up task",
)


# ----- 3. complaint: intake form → acknowledgement → reminder → triage → resolve → confirm ----------------

def _complaint_customer(i: int) -> dict[str, Any]:
    return {"name": f"投诉客户{i:03d}", "phone": phone(i), "email": email(i), "region": "上海", "grade": "B",
            "owner": "wang", "preferred_channel": "email", "consent": {"email": True, "sms": True}}


def _complaint_form(i: int) -> tuple[str, dict[str, Any]]:
    return "complaint_intake", {"subject": f"快递破损 {i}", "description": "收到的商品外包装破损", "channel": "phone",
                                "contact_phone": f"139{i:08d}"}


def _complaint_ops(n: int) -> list[Op]:
    f = "complaint"
    return [
        Op(START, req("customers", f, count=n)),
        Op(START, req("start", f, count=n)),
        Op(START, req("tick", f)),  # acknowledgements
        # Triage reminders (1 h before the 4 h due); 10 minutes of slack for a restart that came late.
        Op(START + timedelta(hours=3, minutes=10), req("tick", f)),
        Op(START + timedelta(hours=3, minutes=15), req("complete", f, count=n, step="triage")),
        Op(START + timedelta(hours=3, minutes=20), req("complete", f, count=n, step="resolve")),
        Op(START + timedelta(hours=3, minutes=25), req("tick", f)),  # confirmation requests
        Op(START + timedelta(hours=3, minutes=40), req("message", f, count=n, event="complaint_confirmation")),
    ]


COMPLAINT = Scenario(
    flow="complaint",
    customer=_complaint_customer,
    start_form=_complaint_form,
    answers={"triage": {"severity": "low", "category": "delivery"},
             "resolve": {"resolution": "补发新品", "compensation": "replacement"}},
    ops=_complaint_ops,
    outcome=lambda i: "resolved",
    path=lambda i: ["ticket", "has_customer", "acknowledge", "triage", "severity", "resolve", "count_round",
                    "can_confirm", "ask_confirmation", "satisfied", "close", "resolved"],
    messages=lambda i: 2,
    event_data={"complaint_confirmation": {"satisfied": True}},
    notes="complaint_intake form; acknowledgement; triage reminder timer; triage and resolution tasks; "
          "confirmation request; customer confirms",
)


# ----- 4. birthday: daily date trigger → greeting → coupon → call (grade A) ------------------------------

def _birthday_customer(i: int) -> dict[str, Any]:
    return {"name": f"寿星{i:03d}", "phone": phone(i), "email": email(i), "region": "上海", "grade": "A",
            "owner": _owner(i), "preferred_channel": "email", "birthday": "1980-11-25",
            "consent": {"email": True, "sms": True}}


def _birthday_ops(n: int) -> list[Op]:
    f = "birthday"
    morning = START + timedelta(days=1)  # deployed at START, so 25 November 09:00 is the first run
    return [
        Op(START, req("customers", f, count=n)),
        Op(morning, req("tick", f)),
        Op(morning + timedelta(hours=1), req("complete", f, count=n, step="birthday_call")),
    ]


BIRTHDAY = Scenario(
    flow="birthday",
    customer=_birthday_customer,
    start_form=None,
    answers={"birthday_call": {"reached": True, "notes": "客户很开心"}},
    ops=_birthday_ops,
    outcome=lambda i: "greeted_and_called",
    path=lambda i: ["greet", "is_grade_a", "coupon", "send_coupon", "birthday_call", "done_with_call"],
    messages=lambda i: 2,
    notes="daily date trigger on the birthday; greeting and coupon; birthday call task (no timers)",
)


# ----- 5. win-back: daily scan → offer → reply (even i) or 7-day timeout and a call (odd i) ---------------

def _winback_customer(i: int) -> dict[str, Any]:
    # Grade C: the follow-up flow picks grade C only in January and July.
    return {"name": f"沉睡客户{i:03d}", "phone": phone(i), "email": email(i), "region": "上海", "grade": "C",
            "owner": _owner(i), "preferred_channel": "email", "last_purchase_at": "2026-08-01T10:00:00+08:00",
            "consent": {"email": True, "sms": True}}


def _winback_ops(n: int) -> list[Op]:
    f = "winback"
    scan = datetime(2026, 11, 24, 10, 0, tzinfo=SHANGHAI)
    return [
        Op(START, req("customers", f, count=n)),
        Op(scan, req("tick", f)),
        Op(scan + timedelta(hours=2), req("message", f, count=n, event="customer_replied", parity=0)),
        # The odd ones time out (10 minutes of slack for a late restart of the scan): call tasks.
        Op(scan + timedelta(days=7, minutes=10), req("tick", f)),
        Op(scan + timedelta(days=7, hours=1), req("complete", f, count=n, step="call", parity=1)),
    ]


WINBACK = Scenario(
    flow="winback",
    customer=_winback_customer,
    start_form=None,
    answers={"call": {"reason": "price", "recovered": True}},
    ops=_winback_ops,
    outcome=lambda i: "recovered",
    path=lambda i: (["mark_at_risk", "offer", "mark_active", "won_back"] if i % 2 == 0
                    else ["mark_at_risk", "offer", "call", "recovered", "mark_active", "won_back"]),
    messages=lambda i: 1,
    event_data={"customer_replied": {"text": "好的"}},
    notes="daily cron scan (90 days without purchase); offer; even customers reply, odd ones time out "
          "(7-day timer) and are called",
)


SCENARIOS: dict[str, Scenario] = {s.flow: s for s in (ONBOARDING, FOLLOW_UP, COMPLAINT, BIRTHDAY, WINBACK)}
FLOWS = tuple(SCENARIOS)

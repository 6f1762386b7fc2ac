"""The demo's mailbox: a local SMTP server (aiosmtpd) that keeps every message it receives.

``careflow run --demo-mail`` starts it on 127.0.0.1:8025 and ``careflow demo`` attaches an SMTP
connector to it, so the five processes send real e-mail through the real SMTP connector and the
messages can be read at ``/demo/mail``. Nothing leaves the machine.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from flask import Blueprint, current_app, render_template
from flask_login import login_required

DEMO_MAIL_PORT = 8025
DEMO_SMTP_SETTINGS = {
    "host": "127.0.0.1",
    "port": DEMO_MAIL_PORT,
    "security": "none",
    "from_address": "care@demo.example.com",
    "from_name": "Careflow 客户关怀",
}


class _Keep:
    """aiosmtpd handler: write each message as an .eml file, named so they sort by arrival."""

    def __init__(self, folder: Path):
        self.folder = folder

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        (self.folder / f"{stamp}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def start_mailbox(folder: Path, port: int = DEMO_MAIL_PORT) -> Controller:
    folder.mkdir(parents=True, exist_ok=True)
    controller = Controller(_Keep(folder), hostname="127.0.0.1", port=port)
    controller.start()
    return controller


@dataclass(frozen=True, slots=True)
class Mail:
    received: str
    sender: str
    to: str
    subject: str
    body: str


def read_mailbox(folder: Path, limit: int = 100) -> list[Mail]:
    """The newest messages first."""
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.glob("*.eml"), reverse=True)[:limit]:
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        part = msg.get_body(preferencelist=("plain", "html"))
        body = part.get_content() if part is not None else ""
        out.append(Mail(path.stem, str(msg["From"]), str(msg["To"]), str(msg["Subject"]), str(body)))
    return out


bp = Blueprint("demo_mail", __name__)


@bp.get("/demo/mail")
@login_required
def mailbox_page() -> str:
    folder = Path(current_app.config.get("DEMO_MAILBOX", ""))
    return render_template("demo_mail.html", mails=read_mailbox(folder))

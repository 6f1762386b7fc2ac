"""The ``smtp`` connector: e-mail through any SMTP server (plain, STARTTLS or implicit TLS, AUTH).

The Message-ID is derived from the effect key, so a message sent twice after an operator's
"resend" carries the same Message-ID and mail clients can tell. SMTP has no idempotency key,
hence ``idempotent = False``: a connection that breaks after the message body went out is
reported as ambiguous, not retried blindly (RELIABILITY T03).

Header values come from flow data, so a CR/LF in a subject or address is refused as a
permanent error before anything is sent; CPython's email package would otherwise raise
mid-send and leave the message stuck (RELIABILITY T19, PIT-E1).
"""

from __future__ import annotations

import base64
import hashlib
import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar

from email_validator import EmailNotValidError, validate_email

from connectors.base import ConnectorError, Delivery, Message, TransientConnectorError
from connectors.messages import EMAIL_MESSAGE
from connectors.net import AmbiguousSendError, short
from engine.errors import ExpressionError
from engine.expr import single_line

DEFAULT_PORTS = {"none": 25, "starttls": 587, "ssl": 465}


@dataclass(frozen=True)
class EmailFields:
    """The checked parts of an e-mail message; shared with the SendGrid connector."""

    to: str  # ASCII form (IDNA domain) unless the local part itself is not ASCII
    needs_smtputf8: bool
    subject: str
    text: str
    html: str | None


def checked_address(value: Any, what: str) -> tuple[str, bool]:
    """(address, needs SMTPUTF8); raises a permanent ConnectorError for a bad or multi-line address."""
    header = checked_line(value, what)
    try:
        valid = validate_email(header, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ConnectorError(f"{what} {header!r} is not a valid e-mail address: {exc}") from None
    if valid.ascii_email:
        return valid.ascii_email, False
    return valid.normalized, True


def checked_line(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConnectorError(f"the e-mail needs a {what}")
    try:
        return single_line(value.strip())
    except ExpressionError as exc:
        raise ConnectorError(f"{what}: {exc}") from None


def email_fields(message: Message) -> EmailFields:
    params = message.params
    to, utf8 = checked_address(params.get("to"), "recipient")
    subject = checked_line(params.get("subject"), "subject")
    text = params.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConnectorError("the e-mail needs a non-empty 'text'")
    html = params.get("html")
    return EmailFields(to, utf8, subject, text, html if isinstance(html, str) and html.strip() else None)


def message_id(effect_key: str, from_address: str) -> str:
    """The same Message-ID for every send of one effect; hashed so any key makes a valid id."""
    digest = hashlib.sha256(effect_key.encode("utf-8")).hexdigest()[:32]
    domain = from_address.rsplit("@", 1)[-1]
    return f"<careflow.{digest}@{domain}>"


class SmtpConnector:
    name: ClassVar[str] = "smtp"
    channel: ClassVar[str | None] = "email"
    idempotent: ClassVar[bool] = False
    message_schema: ClassVar[Mapping[str, Any]] = EMAIL_MESSAGE
    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["host", "from_address"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "SMTP server host name"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535,
                     "description": "Default: 587 for STARTTLS, 465 for SSL, 25 for none"},
            "security": {"type": "string", "enum": ["starttls", "ssl", "none"], "default": "starttls"},
            "username": {"type": "string"},
            "password": {"type": "string", "x-secret": True, "writeOnly": True},
            "from_address": {"type": "string", "format": "email"},
            "from_name": {"type": "string", "maxLength": 100},
            "timeout": {"type": "number", "minimum": 1, "maximum": 120, "default": 30},
            "ca_cert": {"type": "string",
                        "description": "PEM certificate(s) to trust instead of the public CAs (an internal mail relay)"},
        },
        "additionalProperties": False,
    }

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        if settings.get("ca_cert"):
            try:
                ssl.create_default_context(cadata=str(settings["ca_cert"]))
            except (ssl.SSLError, ValueError) as exc:
                raise ValueError(f"ca_cert is not a valid PEM certificate: {exc}") from None

    def send(self, message: Message, settings: Mapping[str, Any]) -> Delivery:
        fields = email_fields(message)
        sender, sender_utf8 = checked_address(settings.get("from_address"), "from_address")
        utf8 = fields.needs_smtputf8 or sender_utf8
        mid = message_id(message.effect_key, sender)
        payload = self._compose(message, settings, fields, sender, mid, utf8)
        smtp = self._open(settings)
        try:
            reply = self._transaction(smtp, str(settings.get("host")), sender, fields.to, payload, utf8)
        except BaseException:
            smtp.close()  # no QUIT: after a timeout it would only wait once more
            raise
        _quit_quietly(smtp)
        return Delivery(provider_ref=mid, detail={"message_id": mid, "smtp_reply": short(reply, 200)})

    def _compose(
        self, message: Message, settings: Mapping[str, Any], fields: EmailFields, sender: str, mid: str, utf8: bool
    ) -> bytes:
        try:
            msg = EmailMessage(policy=email_policy.SMTPUTF8 if utf8 else email_policy.SMTP)
            from_name = checked_line(settings["from_name"], "from_name") if settings.get("from_name") else ""
            msg["From"] = Address(display_name=from_name, addr_spec=sender)
            msg["To"] = fields.to
            msg["Subject"] = fields.subject
            msg["Date"] = formatdate(usegmt=True)
            msg["Message-ID"] = mid
            msg["X-Careflow-Key"] = checked_line(message.effect_key, "effect key")
            msg.set_content(fields.text)
            if fields.html:
                msg.add_alternative(fields.html, subtype="html")
            return msg.as_bytes()
        except (ValueError, TypeError) as exc:  # the email package refusing a header, say
            raise ConnectorError(f"the e-mail could not be built: {exc}") from None

    def _tls_context(self, settings: Mapping[str, Any]) -> ssl.SSLContext:
        ca = settings.get("ca_cert")
        return ssl.create_default_context(cadata=str(ca)) if ca else ssl.create_default_context()

    def _open(self, settings: Mapping[str, Any]) -> smtplib.SMTP:
        """A connected, secured and authenticated session; nothing of the message was sent yet."""
        security = settings.get("security") or "starttls"
        host = str(settings.get("host") or "")
        port = int(settings.get("port") or DEFAULT_PORTS.get(security, 587))
        timeout = float(settings.get("timeout") or 30)
        smtp: smtplib.SMTP | None = None
        try:
            if security == "ssl":
                smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=self._tls_context(settings))
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
                if security == "starttls":
                    smtp.ehlo()
                    smtp.starttls(context=self._tls_context(settings))  # never falls back to plain text
                    smtp.ehlo()
            if settings.get("username"):
                _login(smtp, str(settings["username"]), str(settings.get("password") or ""))
            return smtp
        except Exception as exc:
            if smtp is not None:
                smtp.close()
            raise _before_data_error(exc, host) from None

    def _transaction(self, smtp: smtplib.SMTP, host: str, sender: str, to: str, payload: bytes, utf8: bool) -> str:
        body_sent = False
        try:
            smtp.ehlo_or_helo_if_needed()
            options: list[str] = []
            if utf8:
                if not smtp.has_extn("smtputf8"):
                    raise ConnectorError(f"the SMTP server does not support SMTPUTF8, which {to} needs")
                options = ["SMTPUTF8", "BODY=8BITMIME"]
            code, reply = smtp.mail(sender, options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            code, reply = smtp.rcpt(to)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({to: (code, reply)})
            # DATA by hand rather than smtp.sendmail(): only once the server said 354 and the
            # body went out can a lost answer mean "delivered"; before that a retry is safe.
            code, reply = smtp.docmd("DATA")
            if code != 354:
                raise smtplib.SMTPDataError(code, reply)
            body_sent = True
            smtp.send(_dot_stuffed(payload))
            code, reply = smtp.getreply()
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
            return reply.decode("utf-8", errors="replace")
        except ConnectorError:
            raise
        except smtplib.SMTPResponseException as exc:  # the server answered: nothing ambiguous
            raise _before_data_error(exc, host) from None
        except OSError as exc:  # smtplib's own errors are OSErrors too: disconnects, timeouts
            if body_sent:
                raise AmbiguousSendError(
                    f"the SMTP server received the message but its answer was lost ({type(exc).__name__}); "
                    "it may have been delivered"
                ) from None
            raise _before_data_error(exc, host) from None


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """One AUTH attempt: PLAIN when offered (UTF-8 per RFC 4616), else smtplib's CRAM-MD5/LOGIN."""
    smtp.ehlo_or_helo_if_needed()
    if "plain" not in smtp.esmtp_features.get("auth", "").lower().split():
        if not (username + password).isascii():
            raise ConnectorError("the SMTP server does not offer AUTH PLAIN, needed for a non-ASCII user name or password")
        smtp.login(username, password)
        return
    # By hand: smtplib's login() encodes as ASCII and, after a refusal, tries the next method.
    token = base64.b64encode(b"\0" + username.encode("utf-8") + b"\0" + password.encode("utf-8")).decode("ascii")
    code, reply = smtp.docmd("AUTH", "PLAIN " + token)
    if code not in (235, 503):  # 503: already authenticated
        raise smtplib.SMTPAuthenticationError(code, reply)


def _dot_stuffed(payload: bytes) -> bytes:
    """The DATA section: lines starting with '.' doubled, CRLF line ends, closing '.' line."""
    data = re.sub(rb"(?m)^\.", b"..", re.sub(rb"\r?\n|\r", b"\r\n", payload))
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _reply_error(code: int, reply: Any, what: str) -> ConnectorError:
    text = reply.decode("utf-8", errors="replace") if isinstance(reply, bytes) else str(reply)
    message = f"the SMTP server refused {what}: {code} {short(text)}"
    # 4xx replies are temporary by definition (RFC 5321 §4.2.1); 5xx will not change on retry.
    return TransientConnectorError(message) if 400 <= code < 500 else ConnectorError(message)


def _before_data_error(exc: Exception, host: str) -> ConnectorError:
    """Errors from before the message body was sent: nothing was delivered, so a retry is safe."""
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        if 400 <= exc.smtp_code < 500:
            return _reply_error(exc.smtp_code, exc.smtp_error, "the login for now")
        return ConnectorError(f"SMTP authentication failed: {exc.smtp_code} {short(exc.smtp_error.decode('utf-8', 'replace'))}")
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        return _reply_error(code, reply, "the recipient")
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return _reply_error(exc.smtp_code, exc.smtp_error, "the sender")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(exc.smtp_code, exc.smtp_error, "the message")
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return ConnectorError(f"the SMTP server at {host} does not support what the settings ask for: {exc}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectorError(f"the certificate of the SMTP server at {host} is not trusted: {exc.verify_message}")
    if isinstance(exc, smtplib.SMTPServerDisconnected) or not isinstance(exc, smtplib.SMTPException):
        if isinstance(exc, OSError):  # refused, reset, timed out, DNS, TLS handshake
            return TransientConnectorError(f"could not reach the SMTP server at {host}: {type(exc).__name__}: {short(exc)}")
        return ConnectorError(f"SMTP error with {host}: {type(exc).__name__}")
    return ConnectorError(f"SMTP error with {host}: {short(exc)}")  # e.g. no usable AUTH mechanism


def _quit_quietly(smtp: smtplib.SMTP) -> None:
    """QUIT, but a failure here must not turn a delivered message into an error."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        smtp.close()

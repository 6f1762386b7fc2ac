"""The connectors' setting descriptions (English in their schemas) in the page's language.

The connector packages describe their settings in English; this table lets the settings form
show them in Chinese too. A description not listed here is shown as written, marked English.
"""

from __future__ import annotations

from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

KNOWN: dict[str, LazyString] = {
    "The approved signature, without 【】": _l("The approved signature, without 【】"),
    "Default template, e.g. SMS_123456789": _l("Default template, e.g. SMS_123456789"),
    "The template variable that receives the message text": _l("The template variable that receives the message text"),
    "Longest text allowed, in SMS parts; longer texts fail instead of being sent":
        _l("Longest text allowed, in SMS parts; longer texts fail instead of being sent"),
    "Add the unsubscribe text (China: 回T退订) to every SMS that does not already contain it":
        _l("Add the unsubscribe text (China: 回T退订) to every SMS that does not already contain it"),
    "The robot's webhook address (it contains the robot's key)": _l("The robot's webhook address (it contains the robot's key)"),
    "Allow an address on the company network (a privately deployed IM server)":
        _l("Allow an address on the company network (a privately deployed IM server)"),
    "The robot's 加签 secret (starts with SEC)": _l("The robot's 加签 secret (starts with SEC)"),
    "The connector that delivers this channel": _l("The connector that delivers this channel"),
    "At most this many marketing messages per customer in 7 days": _l("At most this many marketing messages per customer in 7 days"),
    "The robot's signature-verification secret": _l("The robot's signature-verification secret"),
    "A verified sender in SendGrid": _l("A verified sender in SendGrid"),
    "https://api.eu.sendgrid.com for EU subusers": _l("https://api.eu.sendgrid.com for EU subusers"),
    "SMTP server host name": _l("SMTP server host name"),
    "Default: 587 for STARTTLS, 465 for SSL, 25 for none": _l("Default: 587 for STARTTLS, 465 for SSL, 25 for none"),
    "PEM certificate(s) to trust instead of the public CAs (an internal mail relay)":
        _l("PEM certificate(s) to trust instead of the public CAs (an internal mail relay)"),
    "E.164 number or alphanumeric sender id": _l("E.164 number or alphanumeric sender id"),
    "Twilio posts delivery status here; the effect key is added as a query parameter":
        _l("Twilio posts delivery status here; the effect key is added as a query parameter"),
    "http(s) URL that receives the POST": _l("http(s) URL that receives the POST"),
    "Signing secret; whsec_<base64> is used as its decoded bytes": _l("Signing secret; whsec_<base64> is used as its decoded bytes"),
    "Extra request headers (shown to admins: no secrets here)": _l("Extra request headers (shown to admins: no secrets here)"),
    "Allow a URL on the company network; cloud metadata addresses stay refused":
        _l("Allow a URL on the company network; cloud metadata addresses stay refused"),
}


def described(text: str) -> tuple[str, bool]:
    """(the description to show, whether it is in the page's language)."""
    known = KNOWN.get(text)
    return (str(known), True) if known is not None else (text, False)

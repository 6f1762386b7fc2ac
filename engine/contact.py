"""Phone and e-mail normalisation: +86 mobiles and landlines to E.164, e-mails checked and lower-cased."""

from __future__ import annotations

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_REGION = "CN"


def e164(value: object, region: str = DEFAULT_REGION) -> str | None:
    """The E.164 form of a phone number, or None when it is not a valid number.

    Numbers without a leading ``+`` are read as Chinese numbers; any other country's number must
    start with ``+`` (with region CN, ``(415) 555-2671`` would otherwise pass as a CN landline).
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    # Full-width digits and plus signs come from Chinese input methods.
    text = text.translate({0xFF0B: "+", **{0xFF10 + i: str(i) for i in range(10)}})
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(value: object) -> str | None:
    """The normalised address (domain lower-cased; whole address lower-cased), or None if invalid."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError:
        return None
    return result.normalized.lower()

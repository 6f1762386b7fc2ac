"""Phone and e-mail normalisation: +86 mobiles and landlines to E.164, e-mails checked and lower-cased."""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from email_validator import EmailNotValidError, validate_email

DEFAULT_REGION = "CN"

# Normalising is pure and costly (phonenumbers, email_validator: 0.1-0.5 ms), and a flow step that
# normalises a value is usually followed by the customer store normalising its result again: both
# are remembered, the result as its own normal form (normalising a normal form changes nothing).
_MEMO_SIZE = 4096
_phones: dict[tuple[str, str], str | None] = {}
_emails: dict[str, str | None] = {}


def _remember(memo: dict[Any, Any], key: Any, result: str | None, normal_key: Any) -> None:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = result
    if result is not None and result.isascii():
        memo[normal_key] = result


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
    key = (text, region)
    if key in _phones:
        return _phones[key]
    result = _e164(text, region)
    _remember(_phones, key, result, (result, region))
    return result


def _e164(text: str, region: str) -> str | None:
    mobile = _cn_mobile(text) if region == "CN" else None
    if mobile is not None:
        return mobile
    # Full-width digits and plus signs come from Chinese input methods.
    text = text.translate({0xFF0B: "+", **{0xFF10 + i: str(i) for i in range(10)}})
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# A Chinese mobile number as typed (11 digits, perhaps spaced or after +86) is checked against
# phonenumbers' own CN mobile pattern directly: what parse + is_valid_number + format would say,
# without their generic machinery (about 0.1 ms). Numbers starting 11, 12 or 179 are left to
# phonenumbers, whose CN parsing strips such prefixes as carrier codes.
_CN_TYPED = re.compile(r"(?:\+86)?(1[0-9]{10})")
_CN_MOBILE = re.compile(phonenumbers.PhoneMetadata.metadata_for_region("CN").mobile.national_number_pattern)


def _cn_mobile(text: str) -> str | None:
    typed = _CN_TYPED.fullmatch(text.replace(" ", "").replace("-", ""))
    if typed is None:
        return None
    digits = typed.group(1)
    if digits.startswith(("11", "12", "179")) or not _CN_MOBILE.fullmatch(digits):
        return None
    return "+86" + digits


def normalize_email(value: object) -> str | None:
    """The normalised address (domain lower-cased; whole address lower-cased), or None if invalid."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text in _emails:
        return _emails[text]
    normalized = _plain_email(text)
    if normalized is None:
        normalized = _validated_email(text)
    _remember(_emails, text, normalized, normalized)
    return normalized


def _validated_email(text: str) -> str | None:
    """email_validator's answer (0.05-0.1 ms): the normalised address lower-cased, or None."""
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


# A plain ASCII address (dot-atom local part, letter-only top-level domain, no label with "--",
# within the length limits) is one email_validator accepts and normalises to itself lower-cased:
# it is answered without it. Anything else (quotes, IDNA and punycode labels, special-use domains,
# every invalid address) is left to email_validator. tests/unit/test_import_cleaning.py compares
# both answers.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63})"
)
#: Top-level domains email_validator refuses (special-use names).
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def _plain_email(text: str) -> str | None:
    """The normal form of a plainly valid ASCII address; None when email_validator must decide."""
    if not text.isascii() or len(text) > 254:
        return None
    lowered = text.lower()
    plain = _PLAIN_EMAIL.fullmatch(lowered)
    if plain is None or plain.group(1) in _SPECIAL_TLDS:
        return None
    local, _, domain = lowered.rpartition("@")
    if len(local) > 64 or "--" in domain:
        return None
    return lowered

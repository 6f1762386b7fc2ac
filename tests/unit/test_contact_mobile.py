"""The shortcut for Chinese mobile numbers in ``engine.contact.e164`` says what phonenumbers says."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from engine import contact


def by_phonenumbers(text: str) -> str | None:
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else "CN")
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def test_the_shortcut_agrees_with_phonenumbers_for_every_prefix() -> None:
    rng = random.Random(20261205)
    taken = 0
    for prefix in range(100, 200):
        for _ in range(20):
            digits = f"{prefix}{rng.randint(0, 10**8 - 1):08d}"
            for text in (digits, f"{digits[:3]} {digits[3:7]} {digits[7:]}", f"+86 {digits[:3]}-{digits[3:7]}-{digits[7:]}"):
                shortcut = contact._cn_mobile(text)
                if shortcut is not None:
                    taken += 1
                    assert shortcut == by_phonenumbers(text), text
    assert taken > 1000  # the shortcut is taken for most mobile numbers


@pytest.mark.parametrize("text", ["13800138000", "138 0013 8000", "+86 138-0013-8000", "+8613800138000"])
def test_a_mobile_number_is_normalised_by_the_shortcut(text: str) -> None:
    assert contact._cn_mobile(text) == "+8613800138000" == contact.e164(text)


@pytest.mark.parametrize("text", ["12345678901", "11800138000", "17912345678", "1380013800", "010 6552 9988",
                                  "+1 415 555 2671", "１３８００１３８０００"])
def test_other_numbers_are_left_to_phonenumbers(text: str) -> None:
    assert contact._cn_mobile(text) is None
    assert contact.e164(text) == by_phonenumbers(text.translate({0xFF10 + i: str(i) for i in range(10)}))

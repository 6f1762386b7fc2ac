"""SMS length rules: GSM-7 and UCS-2 parts, Chinese carrier counting, the unsubscribe suffix."""

from __future__ import annotations

import pytest

from connectors.base import ConnectorError
from connectors.sms_text import Segments, count_segments, prepare_sms, with_unsubscribe


@pytest.mark.parametrize("text, encoding, units, segments", [
    ("a" * 160, "gsm7", 160, 1),
    ("a" * 161, "gsm7", 161, 2),
    ("a" * 306, "gsm7", 306, 2),
    ("a" * 307, "gsm7", 307, 3),
    ("€" * 80, "gsm7", 160, 1),  # extension characters take two septets
    ("€" * 81, "gsm7", 162, 2),
    ("a" * 152 + "€" + "a" * 8, "gsm7", 162, 2),  # the escape pair is not split across parts
    ("a" * 152 + "€" + "a" * 153, "gsm7", 307, 3),
    ("你" * 70, "ucs2", 70, 1),
    ("你" * 71, "ucs2", 71, 2),
    ("你" * 134, "ucs2", 134, 2),
    ("你" * 135, "ucs2", 135, 3),
    ("a" * 69 + "é", "gsm7", 70, 1),  # é is in the GSM-7 alphabet
    ("a" * 69 + "ê", "ucs2", 70, 1),  # ê is not: the whole text becomes UCS-2
    ("😀" * 35, "ucs2", 70, 1),  # emoji: two UTF-16 units each
    ("😀" * 36, "ucs2", 72, 2),
    ("a" * 66 + "😀" + "a" * 3, "ucs2", 71, 2),
])
def test_gsm_counting(text, encoding, units, segments):
    assert count_segments(text) == Segments(encoding, units, segments)


@pytest.mark.parametrize("length, segments", [(70, 1), (71, 2), (134, 2), (135, 3)])
def test_chinese_carrier_counting_treats_every_character_alike(length, segments):
    assert count_segments("a" * length, "cn").segments == segments
    assert count_segments("好" * length, "cn").segments == segments


def test_unsubscribe_suffix():
    assert with_unsubscribe("您好，欢迎加入。") == "您好，欢迎加入。回T退订"
    assert with_unsubscribe("Hello.", "Reply T to unsubscribe") == "Hello. Reply T to unsubscribe"
    assert with_unsubscribe("活动详情见官网，回T退订") == "活动详情见官网，回T退订"


def test_prepare_appends_only_when_configured():
    assert prepare_sms("您好", {}) == "您好"
    assert prepare_sms("您好", {"append_unsubscribe": True}) == "您好回T退订"
    assert prepare_sms("您好回T退订", {"append_unsubscribe": True}) == "您好回T退订"


def test_prepare_refuses_texts_over_the_part_limit():
    prepare_sms("你" * 335, {})  # 5 parts of 67
    with pytest.raises(ConnectorError) as caught:
        prepare_sms("你" * 336, {})
    assert not caught.value.retryable
    with pytest.raises(ConnectorError):
        prepare_sms("你" * 71, {"max_segments": 1})


def test_the_suffix_counts_toward_the_limit():
    prepare_sms("你" * 70, {"max_segments": 1})
    with pytest.raises(ConnectorError):
        prepare_sms("你" * 70, {"max_segments": 1, "append_unsubscribe": True})


def test_a_signature_counts_but_is_not_added():
    assert prepare_sms("好" * 60, {"max_segments": 1}, counting="cn", signature="【某某公司】") == "好" * 60
    with pytest.raises(ConnectorError):
        prepare_sms("好" * 65, {"max_segments": 1}, counting="cn", signature="【某某公司】")


@pytest.mark.parametrize("text", ["", "   ", None, 42])
def test_empty_text_is_refused(text):
    with pytest.raises(ConnectorError):
        prepare_sms(text, {})

"""Cleaning imported values, reading files in their encodings, mapping columns, grouping duplicates."""

from __future__ import annotations

import io
from datetime import date, datetime, timezone
from pathlib import Path

import openpyxl
import pytest

from engine import cleaning
from engine.cleaning import CleaningProblem
from engine.customer_import import clean_record, group_records
from engine.import_files import ImportFileError, map_columns, parse_map, read_table

DATA = Path(__file__).resolve().parents[1] / "data" / "import"


@pytest.mark.parametrize("raw, expected", [
    ("138 0013 8000", "+8613800138000"),
    ("＋８６　１３８００１３８０００", "+8613800138000"),
    ("0086-138-0013-8000", "+8613800138000"),
    ("8613800138000", "+8613800138000"),
    ("(138)0013-8000", "+8613800138000"),
    ("021-6234 5678", "+862162345678"),
    ("010 8888 6666", "+861088886666"),
    ("+1 415 555 2671", "+14155552671"),
])
def test_phones_become_e164_with_china_by_default(raw: str, expected: str) -> None:
    assert cleaning.clean_phone(cleaning.text(raw)) == expected


@pytest.mark.parametrize("raw", ["12345", "abc", "1370000", "+86 123"])
def test_bad_phones_are_named(raw: str) -> None:
    with pytest.raises(CleaningProblem) as info:
        cleaning.clean_phone(raw)
    assert info.value.code == "bad_phone" and raw in info.value.en and raw in info.value.zh


def test_emails_are_lower_cased_and_checked() -> None:
    assert cleaning.clean_email(cleaning.text(" ZhangWei@Example.COM ")) == "zhangwei@example.com"
    assert cleaning.clean_email(cleaning.text("ｌｉｎａ＠ｅｘａｍｐｌｅ．ｃｏｍ")) == "lina@example.com"
    with pytest.raises(CleaningProblem, match="not a valid e-mail"):
        cleaning.clean_email("wangfang@example")


def test_text_trims_and_folds_full_width() -> None:
    assert cleaning.text("\u3000 张　伟 ") == "张 伟"
    assert cleaning.text("ＡＢＣ１２３") == "ABC123"
    assert cleaning.text(13800138000.0) == "13800138000"  # a phone Excel stored as a number


@pytest.mark.parametrize("raw, day, calendar, year_known", [
    ("1990-08-15", date(1990, 8, 15), "solar", True),
    ("1990/8/15", date(1990, 8, 15), "solar", True),
    ("1990.8.15", date(1990, 8, 15), "solar", True),
    ("1990年8月15日", date(1990, 8, 15), "solar", True),
    ("19900815", date(1990, 8, 15), "solar", True),
    ("８月１５日", date(1904, 8, 15), "solar", False),
    ("2月29日", date(1904, 2, 29), "solar", False),
    ("农历1990年八月十五", date(1990, 8, 15), "lunar", True),
    ("农历 1990-08-15", date(1990, 8, 15), "lunar", True),
    ("阴历一九八八年腊月初八", date(1988, 12, 8), "lunar", True),
    ("农历正月廿三", date(1904, 1, 23), "lunar", False),
])
def test_birthdays_in_common_spellings(raw: str, day: date, calendar: str, year_known: bool) -> None:
    birthday = cleaning.clean_birthday(raw)
    assert (birthday.day, birthday.calendar, birthday.year_known) == (day, calendar, year_known)


def test_an_excel_date_cell_and_a_calendar_column() -> None:
    assert cleaning.clean_birthday(datetime(1990, 8, 15)).day == date(1990, 8, 15)
    assert cleaning.clean_birthday("1990-08-15", "lunar").calendar == "lunar"


@pytest.mark.parametrize("raw, code", [
    ("2023-02-30", "bad_date"),
    ("1990-13-01", "bad_date"),
    ("Feb 30", "bad_date"),
    ("农历2026年二月三十", "bad_date"),  # lunar 2026 month 2 has 29 days
    ("1850-01-01", "bad_date"),
])
def test_impossible_birthdays_are_refused(raw: str, code: str) -> None:
    with pytest.raises(CleaningProblem) as info:
        cleaning.clean_birthday(raw)
    assert info.value.code == code


@pytest.mark.parametrize("raw", ["上海", "上海市", "shanghai", " Shanghai ", "SHANGHAI", "Shanghai City"])
def test_region_spellings_become_one(raw: str) -> None:
    assert cleaning.clean_region(raw) == "上海"


def test_regions_with_province_suffixes_and_unknown_places() -> None:
    assert cleaning.clean_region("广东省") == "广东"
    assert cleaning.clean_region("新疆维吾尔自治区") == "新疆"
    assert cleaning.clean_region("义乌") == "义乌"


def test_amounts_and_purchase_times() -> None:
    assert cleaning.clean_amount("¥1,299.50") == 1299.5
    assert cleaning.clean_amount("88元") == 88.0
    with pytest.raises(CleaningProblem):
        cleaning.clean_amount("abc")
    assert cleaning.clean_instant("2026-11-02") == datetime(2026, 11, 1, 16, 0, tzinfo=timezone.utc)
    assert cleaning.clean_instant("2026/11/20 10:30") == datetime(2026, 11, 20, 2, 30, tzinfo=timezone.utc)


# ----- files ---------------------------------------------------------------------------------------------


def test_gbk_file_with_chinese_headers() -> None:
    table = read_table((DATA / "customers_gbk.csv").read_bytes(), "customers_gbk.csv")
    assert table.encoding == "GB18030"
    assert table.headers == ["客户姓名", "联系电话", "电子邮箱", "出生日期", "所在城市"]
    assert table.rows[0] == (2, ["吴刚", "13700001234", "wugang@example.cn", "1979/12/01", "苏州市"])
    mapping = map_columns(table.headers, None)
    assert mapping.as_dict() == {"客户姓名": "name", "联系电话": "phone", "电子邮箱": "email", "出生日期": "birthday",
                                 "所在城市": "region"}


def test_bom_file_with_english_headers() -> None:
    table = read_table((DATA / "customers_bom.csv").read_bytes(), "customers_bom.csv")
    assert table.encoding == "UTF-8 (BOM)" and table.headers[0] == "Name"
    assert map_columns(table.headers, None).as_dict()["E-mail"] == "email"


def test_undecodable_bytes_name_the_line() -> None:
    with pytest.raises(ImportFileError) as info:
        read_table((DATA / "customers_broken.csv").read_bytes(), "customers_broken.csv")
    assert "customers_broken.csv line 3" in info.value.en and "第 3 行" in info.value.zh


def test_xlsx_rows_keep_spreadsheet_numbers() -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["姓名", "手机", "生日"])
    sheet.append(["张伟", 13800138000, datetime(1990, 8, 15)])
    sheet.append([None, None, None])
    sheet.append(["李娜", "139 0000 1111", "农历八月十五"])
    buffer = io.BytesIO()
    book.save(buffer)
    table = read_table(buffer.getvalue(), "list.xlsx")
    assert table.format == "xlsx" and table.encoding is None
    assert [r for r, _cells in table.rows] == [2, 4]
    record = clean_record(2, table.rows[0][1], map_columns(table.headers, None))
    assert record.values == {"name": "张伟", "phone": "+8613800138000", "birthday": date(1990, 8, 15), "birthday_calendar": "solar"}


def test_explicit_map_and_its_errors() -> None:
    headers = ["客户", "联系方式", "会员号", "备注"]
    mapping = map_columns(headers, parse_map("客户=name, 联系方式=phone,会员号=member_no,备注=-"))
    assert mapping.as_dict() == {"客户": "name", "联系方式": "phone", "会员号": "member_no"}
    with pytest.raises(ImportFileError, match="no phone or e-mail column"):
        map_columns(headers, {"客户": "name"})
    with pytest.raises(ImportFileError, match="'手机' of the mapping is not in the file"):
        map_columns(headers, {"手机": "phone"})
    with pytest.raises(ImportFileError, match="'Phone' is not a field"):
        map_columns(headers, {"联系方式": "Phone"})
    with pytest.raises(ImportFileError, match="COLUMN=FIELD"):
        parse_map("客户")


def test_duplicates_written_differently_form_one_group() -> None:
    table = read_table((DATA / "customers_messy.csv").read_bytes(), "customers_messy.csv")
    mapping = map_columns(table.headers, None)
    records = [clean_record(r, cells, mapping) for r, cells in table.rows]
    groups = group_records(records)
    assert sorted(g.rows for g in groups) == [[2, 3], [4, 5], [6], [7], [9], [10], [11]]
    zhang = next(g for g in groups if g.rows == [2, 3])
    assert zhang.values["phone"] == "+8613800138000" and zhang.values["email"] == "zhangwei@example.com"
    assert zhang.values["tags"] == ["VIP", "老客户"] and zhang.values["region"] == "上海"
    li = next(g for g in groups if g.rows == [4, 5])
    assert li.values["birthday"] == date(1988, 8, 15) and li.values["birthday_calendar"] == "lunar"
    assert li.values["region"] == "北京"  # "北京" then "Beijing": the later row wins, both are 北京
    chen = next(g for g in groups if g.rows == [9])
    assert chen.attributes == {"birthday_year_known": False}


def test_match_on_joins_rows_sharing_a_member_number() -> None:
    headers = ["姓名", "手机", "会员号"]
    mapping = map_columns(headers, {"会员号": "member_no"})
    records = [clean_record(2, ["张伟", "13800138000", "M1"], mapping), clean_record(3, ["张伟", "13900139000", "M1"], mapping)]
    assert [g.rows for g in group_records(records)] == [[2], [3]]
    merged = group_records(records, ["member_no"])
    assert [g.rows for g in merged] == [[2, 3]] and merged[0].values["phone"] == "+8613900139000"


def test_the_fast_paths_agree_with_phonenumbers_and_email_validator() -> None:
    """Large imports skip the full parse for CN mobiles, and every caller skips email_validator for
    plain ASCII e-mails: same answers."""
    import random

    from engine.contact import _validated_email, e164, normalize_email

    def fast(fn, value: str) -> str | None:  # type: ignore[no-untyped-def]
        try:
            return fn(value)  # type: ignore[no-any-return]
        except CleaningProblem:
            return None

    rng = random.Random(20261205)
    for _ in range(5000):
        number = "1" + "".join(rng.choice("0123456789") for _ in range(10))
        assert fast(cleaning.clean_phone, number) == e164(number), number
    for address in ("a.b@example.com", "a..b@example.com", ".a@example.com", "a@example.local", "a@-x.com", "a@x-.com",
                    "x@y.co", "A+b@Sub.Example.ORG", "a@b.c", "a@123.com", "a@example.test", "user@exa_mple.com",
                    "a" * 65 + "@x.com", "a@" + "b" * 64 + ".com", "o'brien@example.ie", "用户@例子.中国",
                    "a@xn--abc.com", "a@xn--fiqs8s.com", "a@ab--c.com", "a@b--c.com", "a@x.com.", "-a@x.com",
                    "a/b@x.com", "a@x.arpa", "x@sub.local.com", " Customer7@Example.COM ", "\u212a@x.com",
                    "a@" + ".".join(["b" * 60] * 4) + ".com", "a@x.c0m", "a@x.co-m"):
        assert fast(cleaning.clean_email, address) == _validated_email(address.strip()), address
        assert normalize_email(address) == _validated_email(address.strip()), address

"""Reading import files (CSV in UTF-8 with or without BOM or GBK/GB18030, XLSX) and mapping their
columns to customer or order fields.

Row numbers are the spreadsheet's: the header is row 1, so "row 7" is the row a user sees as 7 in
Excel whichever format the file was saved in.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError

#: What the user may map a column to, besides custom attributes (any other lower-case name).
CUSTOMER_FIELDS = ("name", "phone", "email", "birthday", "birthday_calendar", "region", "grade", "expected_value",
                   "owner", "tags", "preferred_channel", "language", "updated_at")
ORDER_FIELDS = ("order_id", "phone", "email", "ordered_at", "amount")
IGNORE = "-"

#: Header spellings recognised without a mapping (compared after NFKC, lower-casing, no spaces/_/-).
ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("姓名", "名字", "客户姓名", "客户名称", "客户名", "联系人", "name", "fullname", "customername", "customer"),
    "phone": ("手机", "手机号", "手机号码", "电话", "电话号码", "联系电话", "移动电话", "phone", "mobile", "tel",
              "telephone", "phonenumber", "mobilephone", "cellphone"),
    "email": ("邮箱", "电子邮箱", "电子邮件", "邮件", "邮箱地址", "email", "mail", "emailaddress"),
    "birthday": ("生日", "出生日期", "生日日期", "birthday", "dateofbirth", "dob", "birthdate"),
    "birthday_calendar": ("历法", "生日历法", "calendar", "birthdaycalendar"),
    "region": ("地区", "区域", "城市", "省份", "所在地", "所在城市", "region", "city", "area", "province"),
    "grade": ("等级", "客户等级", "级别", "grade"),
    "expected_value": ("预期价值", "预计价值", "expectedvalue"),
    "owner": ("负责人", "客户经理", "归属", "owner", "accountmanager"),
    "tags": ("标签", "tags", "tag"),
    "preferred_channel": ("首选渠道", "偏好渠道", "联系偏好", "preferredchannel", "channel"),
    "language": ("语言", "language", "lang"),
    "updated_at": ("更新时间", "最后更新", "修改时间", "updatedat", "lastupdated", "modified"),
    "order_id": ("订单号", "订单编号", "订单id", "orderid", "orderno", "ordernumber", "order"),
    "ordered_at": ("下单时间", "下单日期", "订单日期", "订单时间", "购买日期", "购买时间", "日期", "orderedat", "orderdate", "date",
                   "purchasedate", "purchasedat"),
    "amount": ("金额", "订单金额", "实付金额", "实付", "消费金额", "amount", "total", "ordertotal", "price"),
}
_ATTRIBUTE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_BYTES = 50 * 1024 * 1024


class ImportFileError(EngineError):
    """A file that cannot be read, or a mapping that does not fit it; the message names which part."""

    code = "import_file_invalid"
    status = 422

    def __init__(self, zh: str, en: str):
        super().__init__(en)
        self.zh, self.en = zh, en


@dataclass
class Table:
    headers: list[str]
    rows: list[tuple[int, list[Any]]]  # (spreadsheet row number, cells)
    format: str  # "csv" or "xlsx"
    encoding: str | None = None  # for CSV: "UTF-8", "UTF-8 (BOM)" or "GB18030"


@dataclass
class Mapping_:
    """Which column feeds which field; ``columns`` is (column index, header, field)."""

    columns: list[tuple[int, str, str]]
    unmapped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, str]:
        return {header: target for _i, header, target in self.columns}


def _key(header: str) -> str:
    return re.sub(r"[\s_\-:：()（）*]", "", unicodedata.normalize("NFKC", header)).lower()


_BY_ALIAS = {_key(alias): target for target, aliases in ALIASES.items() for alias in aliases}


# ----- reading ----------------------------------------------------------------------------------------


def read_table(data: bytes, filename: str = "", sheet: str | None = None) -> Table:
    """The file's header row and data rows; XLSX by content (a ZIP) or name, CSV otherwise."""
    if len(data) > MAX_BYTES:
        raise ImportFileError(f"{filename or '文件'}超过 50 MB", f"{filename or 'the file'} is larger than 50 MB")
    if data[:4] == b"PK\x03\x04" or filename.lower().endswith((".xlsx", ".xlsm")):
        return _read_xlsx(data, filename, sheet)
    return _read_csv(data, filename)


def decode(data: bytes, filename: str = "") -> tuple[str, str]:
    """(text, encoding name): UTF-8 (with or without BOM) first, then GB18030 (a superset of GBK,
    what Excel writes for "CSV" on a Chinese Windows)."""
    if data.startswith(b"\xef\xbb\xbf"):
        candidates = [("utf-8-sig", "UTF-8 (BOM)")]
    else:
        candidates = [("utf-8", "UTF-8"), ("gb18030", "GB18030")]
    furthest: UnicodeDecodeError | None = None
    for codec, name in candidates:
        try:
            return data.decode(codec), name
        except UnicodeDecodeError as exc:
            if furthest is None or exc.start > furthest.start:
                furthest = exc
    assert furthest is not None
    line = data.count(b"\n", 0, furthest.start) + 1
    bad = data[furthest.start:furthest.start + 4].hex(" ")
    where = filename or "file"
    raise ImportFileError(
        f"{where} 第 {line} 行：无法按 UTF-8 或 GBK/GB18030 解码的字节（{bad}）；请另存为“CSV UTF-8”或 XLSX",
        f"{where} line {line}: bytes ({bad}) are neither UTF-8 nor GBK/GB18030; save the file as 'CSV UTF-8' or XLSX",
    )


def _read_csv(data: bytes, filename: str) -> Table:
    content, encoding = decode(data, filename)
    sample = content[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",\t;")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(content, newline=""), dialect)
    headers: list[str] | None = None
    rows: list[tuple[int, list[Any]]] = []
    record = 0
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                if headers is not None:
                    record += 1
                continue
            record += 1
            if headers is None:
                headers = [c.strip() for c in cells]
                record = 1
            else:
                rows.append((record, cells))
    except csv.Error as exc:
        raise ImportFileError(f"{filename or '文件'} 第 {reader.line_num} 行：CSV 格式错误（{exc}）",
                              f"{filename or 'file'} line {reader.line_num}: malformed CSV ({exc})") from None
    if headers is None:
        raise ImportFileError(f"{filename or '文件'}是空的", f"{filename or 'the file'} is empty")
    return Table(headers, rows, "csv", encoding)


def _read_xlsx(data: bytes, filename: str, sheet: str | None) -> Table:
    from zipfile import BadZipFile

    import openpyxl

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ImportFileError(f"{filename or '文件'}不是有效的 XLSX 文件（{exc}）",
                              f"{filename or 'the file'} is not a valid XLSX workbook ({exc})") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise ImportFileError(f"没有名为“{sheet}”的工作表（有：{'、'.join(book.sheetnames)}）",
                                  f"no sheet named {sheet!r} (there are: {', '.join(book.sheetnames)})")
        ws = book[sheet] if sheet is not None else book.worksheets[0]
        headers: list[str] | None = None
        rows: list[tuple[int, list[Any]]] = []
        for number, values in enumerate(ws.iter_rows(values_only=True), start=1):
            cells = ["" if v is None else v for v in values]
            if not any(str(c).strip() for c in cells):
                continue
            if headers is None:
                headers = [str(c).strip() for c in cells]
                header_row = number
            else:
                rows.append((number - header_row + 1, cells))
    finally:
        book.close()
    if headers is None:
        raise ImportFileError(f"{filename or '文件'}的工作表是空的", f"the sheet of {filename or 'the file'} is empty")
    return Table(headers, rows, "xlsx")


# ----- mapping -----------------------------------------------------------------------------------------


def parse_map(text: str) -> dict[str, str]:
    """``'客户=name,会员号=member_no,备注=-'`` as {column: field}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        column, sep, target = part.rpartition("=")
        if not sep or not column.strip() or not target.strip():
            raise ImportFileError(f"--map 中的“{part}”应写成 列名=字段", f"{part!r} in --map should be COLUMN=FIELD")
        out[column.strip()] = target.strip()
    return out


def map_columns(headers: list[str], explicit: Mapping[str, str] | None, kind: str = "customers") -> Mapping_:
    """Explicit entries first (by header, exactly or as written differently), then recognised headers."""
    allowed = CUSTOMER_FIELDS if kind == "customers" else ORDER_FIELDS
    explicit = dict(explicit or {})
    by_key = {_key(h): i for i, h in enumerate(headers)}
    chosen: dict[int, str] = {}
    for column, target in explicit.items():
        index = headers.index(column) if column in headers else by_key.get(_key(column))
        if index is None:
            raise ImportFileError(f"映射中的列“{column}”不在文件里（列：{'、'.join(headers)}）",
                                  f"column {column!r} of the mapping is not in the file (columns: {', '.join(headers)})")
        if target != IGNORE and target not in allowed and not (kind == "customers" and _ATTRIBUTE.match(target)):
            raise ImportFileError(f"“{target}”不是可导入的字段（可用：{'、'.join(allowed)}）",
                                  f"{target!r} is not a field you can import (fields: {', '.join(allowed)})")
        chosen[index] = target
    for index, header in enumerate(headers):
        if index not in chosen and (target := _BY_ALIAS.get(_key(header))) in allowed:
            chosen[index] = target
    columns = [(i, headers[i], t) for i, t in sorted(chosen.items()) if t != IGNORE]
    unmapped = [h for i, h in enumerate(headers) if i not in chosen and h]
    fields = {t for _i, _h, t in columns}
    if kind == "customers" and not fields & {"phone", "email"}:
        raise ImportFileError("没有找到手机或邮箱列；请用 --map 指定，例如 --map '联系方式=phone'",
                              "no phone or e-mail column found; name one with --map, e.g. --map 'contact=phone'")
    if kind == "orders":
        missing = [f for f in ("order_id", "ordered_at", "amount") if f not in fields]
        if missing or not fields & {"phone", "email"}:
            need = missing or ["phone/email"]
            raise ImportFileError(f"订单文件缺少列：{'、'.join(need)}；请用 --map 指定",
                                  f"the orders file lacks the column(s): {', '.join(need)}; name them with --map")
    return Mapping_(columns, unmapped)

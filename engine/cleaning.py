"""Cleaning imported values: trimming, full-width to half-width, phones, e-mails, birthdays
(solar and 农历), region names, amounts and purchase dates.

Pure functions: each ``clean_*`` returns the standard value or raises ``CleaningProblem`` with a
message in Chinese and English, which the import report shows next to the row and column.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

from engine.calendar import lunar_to_solar
from engine.contact import e164, normalize_email

#: Placeholder year of a birthday given without one (``8月15日``): 1904 is a leap year, so 2月29日
#: is possible; the customer gets the attribute ``birthday_year_known: false``.
NO_YEAR = 1904
CHINA = ZoneInfo("Asia/Shanghai")


_SPACES = re.compile(r"\s+")


class CleaningProblem(ValueError):
    """A value that cannot be standardised; ``code`` names the kind, ``zh``/``en`` explain it."""

    def __init__(self, code: str, zh: str, en: str):
        super().__init__(en)
        self.code, self.zh, self.en = code, zh, en


def text(value: object) -> str:
    """Trimmed, full-width forms folded to half-width (NFKC), inner runs of spaces collapsed."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a phone number Excel stored as a number
    out = unicodedata.normalize("NFKC", str(value))
    return _SPACES.sub(" ", out).strip()


# ----- phone and e-mail ---------------------------------------------------------------------------

_PHONE_JUNK = re.compile(r"[\s\-()（）.]")


_CN_MOBILE = re.compile(r"^(?:\+86)?(1\d{10})$")
#: Whether Chinese mobile numbers starting with these 7 digits are valid. phonenumbers decides a
#: CN mobile on its first 5 digits at most, so one answer per prefix holds for every number under
#: it; a large import then parses each prefix once instead of every number.
_MOBILE_PREFIXES: dict[str, bool] = {}


def clean_phone(value: str) -> str:
    """E.164; ``0086``/``86`` prefixes, spaces and dashes accepted; China is the default region."""
    raw = _PHONE_JUNK.sub("", value)
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    elif raw.startswith("86") and len(raw) == 13:
        raw = "+" + raw
    if (mobile := _CN_MOBILE.match(raw)) is not None:
        national = mobile.group(1)
        valid = _MOBILE_PREFIXES.get(national[:7])
        if valid is None:
            valid = _MOBILE_PREFIXES[national[:7]] = e164("+86" + national) is not None
        if valid:
            return "+86" + national
    phone = e164(raw)
    if phone is None:
        raise CleaningProblem("bad_phone", f"“{value}”不是有效的电话号码", f"{value!r} is not a valid phone number")
    return phone


def clean_email(value: str) -> str:
    """Checked and lower-cased (plain ASCII addresses without email_validator: see contact.py)."""
    email = normalize_email(value)
    if email is None:
        raise CleaningProblem("bad_email", f"“{value}”不是有效的电子邮箱", f"{value!r} is not a valid e-mail address")
    return email


# ----- birthdays ------------------------------------------------------------------------------------

_LUNAR_PREFIX = re.compile(r"^(农历|阴历|旧历|lunar)\s*", re.IGNORECASE)
_CN_DIGITS = {"〇": 0, "零": 0, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_MONTHS = {"正": 1, "冬": 11, "腊": 12, "一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9, "十": 10, "十一": 11, "十二": 12}
_NUMERIC = [
    re.compile(r"^(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})$"),
    re.compile(r"^(?P<y>\d{4})年(?P<m>\d{1,2})月(?P<d>\d{1,2})[日号]?$"),
    re.compile(r"^(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})$"),
    re.compile(r"^(?P<m>\d{1,2})月(?P<d>\d{1,2})[日号]?$"),
    re.compile(r"^(?P<m>\d{1,2})[-/](?P<d>\d{1,2})$"),
]
_CN_LUNAR = re.compile(
    r"^(?:(?P<y>[\d〇零一二三四五六七八九]{4})年)?(?P<leap>闰)?(?P<m>正|冬|腊|十一|十二|[一二三四五六七八九十]|\d{1,2})月"
    r"(?P<d>初[一二三四五六七八九十]|十[一二三四五六七八九]|二十|廿[一二三四五六七八九]|三十|卅|[一二三四五六七八九十]|\d{1,2})[日号]?$"
)


@dataclass(frozen=True, slots=True)
class Birthday:
    day: date  # for a lunar birthday the fields are the lunar year/month/day, as the store keeps them
    calendar: str  # "solar" or "lunar"
    year_known: bool = True
    leap_month: bool = False


def _cn_day(word: str) -> int:
    if word.isdigit():
        return int(word)
    if word.startswith("初"):
        return 10 if word[1] == "十" else _CN_DIGITS[word[1]]
    if word in ("三十", "卅"):
        return 30
    if word == "二十":
        return 20
    if word.startswith("廿"):
        return 20 + _CN_DIGITS[word[1]]
    if word.startswith("十"):
        return 10 + _CN_DIGITS[word[1]]
    return 10 if word == "十" else _CN_DIGITS[word]


def _bad_date(value: str) -> CleaningProblem:
    return CleaningProblem("bad_date", f"“{value}”不是存在的日期", f"{value!r} is not a real date")


def clean_birthday(value: object, calendar: str | None = None) -> Birthday:
    """A birthday from the common Chinese and ISO spellings, or an Excel date cell.

    ``农历``/``阴历`` in front (or ``calendar="lunar"`` from a 历法 column) makes it a lunar
    birthday; lunar months and days may be written in Chinese (八月十五, 腊月初八).
    """
    if isinstance(value, datetime):
        return Birthday(value.date(), calendar or "solar")
    if isinstance(value, date):
        return Birthday(value, calendar or "solar")
    raw = text(value)
    body = _LUNAR_PREFIX.sub("", raw)
    lunar = body != raw or calendar == "lunar"
    body = body.replace(" ", "")
    match = next((m for p in _NUMERIC if (m := p.match(body))), None)
    leap = False
    if match is not None:
        y, m, d = match.groupdict().get("y"), int(match["m"]), int(match["d"])
        year = int(y) if y else None
    elif lunar and (match := _CN_LUNAR.match(body)) is not None:
        y = match["y"]
        year = int("".join(str(_CN_DIGITS.get(c, c)) for c in y)) if y else None
        m = int(match["m"]) if match["m"].isdigit() else _CN_MONTHS[match["m"]]
        d = _cn_day(match["d"])
        leap = bool(match["leap"])
    else:
        raise CleaningProblem("bad_date", f"无法识别的日期“{raw}”（例如 1990-08-15、1990年8月15日、农历八月十五）",
                              f"unrecognised date {raw!r} (e.g. 1990-08-15, 1990/8/15, 农历1990年八月十五)")
    if lunar:
        if not (1 <= m <= 12 and 1 <= d <= 30):
            raise _bad_date(raw)
        if year is not None:
            try:
                lunar_to_solar(year, m, d, leap)
            except ValueError:
                raise CleaningProblem("bad_date", f"农历“{raw}”不存在", f"lunar date {raw!r} does not exist") from None
    try:
        day = date(year or NO_YEAR, m, d)
    except ValueError:
        if lunar:  # the store keeps lunar y/m/d in a date column, which has no 二月三十
            raise CleaningProblem("unsupported_lunar_day", f"农历“{raw}”无法保存（系统不支持农历二月廿九日之后的日子）",
                                  f"lunar {raw!r} cannot be stored (the store has no lunar 2nd-month day after the 29th)") from None
        raise _bad_date(raw) from None
    if year is not None and not 1900 <= year <= date.today().year:
        raise CleaningProblem("bad_date", f"“{raw}”的年份不合理", f"the year of {raw!r} is not plausible")
    return Birthday(day, "lunar" if lunar else "solar", year is not None, leap)


# ----- regions ---------------------------------------------------------------------------------------

#: Provinces, municipalities and the larger cities: canonical short name -> pinyin spellings.
_REGIONS: dict[str, tuple[str, ...]] = {
    "北京": ("beijing", "peking"), "上海": ("shanghai",), "天津": ("tianjin",), "重庆": ("chongqing",),
    "河北": ("hebei",), "山西": ("shanxi",), "辽宁": ("liaoning",), "吉林": ("jilin",), "黑龙江": ("heilongjiang",),
    "江苏": ("jiangsu",), "浙江": ("zhejiang",), "安徽": ("anhui",), "福建": ("fujian",), "江西": ("jiangxi",),
    "山东": ("shandong",), "河南": ("henan",), "湖北": ("hubei",), "湖南": ("hunan",), "广东": ("guangdong",),
    "海南": ("hainan",), "四川": ("sichuan",), "贵州": ("guizhou",), "云南": ("yunnan",), "陕西": ("shaanxi",),
    "甘肃": ("gansu",), "青海": ("qinghai",), "台湾": ("taiwan",), "内蒙古": ("inner mongolia", "neimenggu"),
    "广西": ("guangxi",), "西藏": ("tibet", "xizang"), "宁夏": ("ningxia",), "新疆": ("xinjiang",),
    "香港": ("hong kong", "hongkong"), "澳门": ("macau", "macao"),
    "广州": ("guangzhou", "canton"), "深圳": ("shenzhen",), "杭州": ("hangzhou",), "南京": ("nanjing",),
    "苏州": ("suzhou",), "武汉": ("wuhan",), "成都": ("chengdu",), "西安": ("xi'an", "xian"), "长沙": ("changsha",),
    "郑州": ("zhengzhou",), "青岛": ("qingdao",), "厦门": ("xiamen",), "宁波": ("ningbo",), "大连": ("dalian",),
    "沈阳": ("shenyang",), "济南": ("jinan",), "合肥": ("hefei",), "福州": ("fuzhou",), "昆明": ("kunming",),
    "无锡": ("wuxi",), "东莞": ("dongguan",), "佛山": ("foshan",), "哈尔滨": ("harbin", "haerbin"),
}
_BY_NAME = {alias: name for name, aliases in _REGIONS.items() for alias in (name, *aliases)}
_SUFFIXES = ("维吾尔自治区", "壮族自治区", "回族自治区", "特别行政区", "自治区", "省", "市")


def clean_region(value: str) -> str:
    """One form per place: 上海 / 上海市 / Shanghai / SHANGHAI → 上海; unknown names are kept trimmed."""
    key = value.strip().lower()
    key = re.sub(r"\s+(city|province|shi|sheng)$", "", key)
    if key in _BY_NAME:
        return _BY_NAME[key]
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in _BY_NAME:
            return _BY_NAME[key[: -len(suffix)]]
    return value.strip()


# ----- orders ---------------------------------------------------------------------------------------


def clean_amount(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = float(value)
    else:
        raw = text(value).replace(",", "").replace("¥", "").replace("￥", "").removesuffix("元").strip()
        try:
            amount = float(raw)
        except ValueError:
            raise CleaningProblem("bad_amount", f"“{value}”不是金额", f"{value!r} is not an amount") from None
    if not (0 <= amount < 1e12) or amount != amount:
        raise CleaningProblem("bad_amount", f"金额“{value}”超出范围", f"amount {value!r} is out of range")
    return round(amount, 2)


def clean_instant(value: object) -> datetime:
    """A purchase time: a date (midnight, China time) or a date and time; returned in UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    else:
        raw = text(value)
        try:
            moment = datetime.fromisoformat(raw.replace("/", "-"))
        except ValueError:
            try:
                moment = datetime.combine(clean_birthday(raw).day, time())
            except CleaningProblem as exc:
                if exc.zh.startswith("无法识别"):
                    raise CleaningProblem("bad_date", f"无法识别的日期时间“{raw}”",
                                          f"unrecognised date or time {raw!r}") from None
                raise
            if not re.match(r"^\d{4}", raw):
                raise CleaningProblem("bad_date", f"日期“{raw}”缺少年份", f"date {raw!r} has no year") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=CHINA)
    return moment.astimezone(timezone.utc)

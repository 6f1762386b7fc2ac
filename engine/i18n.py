"""Languages of the web pages: Flask-Babel set up for zh-CN (the default) and English.

The locale of a request is, in order: ``?lang=zh|en``, the choice stored in the session by the
language switch (``POST /lang``), the signed-in user's own language (``app_user.language``, set
on the profile page or by the switch), the browser's Accept-Language, and Chinese when none of
them says. Signing in starts a fresh session, so after sign-in the user's language wins over the
browser's. Dates are shown in Asia/Shanghai.

Catalogs live in several folders, merged in order (later ones win on the same msgid): the
engine's ``engine/translations`` and the admin pages' ``admin/translations``. Set
``BABEL_TRANSLATION_DIRECTORIES`` (absolute paths separated by ``;``) to change that list. Source
strings are English; ``zh_Hans_CN`` catalogs translate them, ``en`` catalogs may stay empty.
Both ``.po`` and compiled ``.mo`` files are committed; ``make translations`` re-extracts and
compiles them and ``tests/unit/test_translations.py`` checks that the ``.mo`` are current.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from flask import Flask, has_request_context, request, session
from flask_babel import Babel, format_date, format_datetime, get_locale
from flask_login import current_user

ROOT = Path(__file__).resolve().parent.parent
TRANSLATION_DIRECTORIES = (ROOT / "engine" / "translations", ROOT / "admin" / "translations")
#: short code (URLs, session, forms' messages) -> Babel locale
LOCALES = {"zh": "zh_Hans_CN", "en": "en"}
DEFAULT = "zh"
TIMEZONE = "Asia/Shanghai"
#: each language named in itself, for the switch
LANGUAGE_NAMES = {"zh": "中文", "en": "English"}


def requested_lang() -> str:
    """zh or en for the current request (see the module docstring for the order)."""
    if not has_request_context():
        return DEFAULT
    for asked in (request.args.get("lang"), session.get("lang"), _user_language()):
        if asked in LOCALES:
            return str(asked)
    for value, _quality in request.accept_languages:
        primary = value.split("-")[0].split("_")[0].lower()
        if primary in LOCALES:
            return primary
    return DEFAULT


def _user_language() -> str | None:
    """The signed-in user's chosen language, None when not signed in or not chosen."""
    try:
        return getattr(current_user, "language", None)
    except AttributeError:  # no login manager on this app (a bare Flask app in tests)
        return None


def lang() -> str:
    """zh or en: the language the page is being rendered in."""
    return "en" if has_request_context() and str(get_locale() or "").startswith("en") else "zh"


def _select_locale() -> str:
    return LOCALES[requested_lang()]


def when(value: Any, style: str = "medium") -> str:
    """A date or date-time (object or ISO text, as stored) in the page's language, in Shanghai time."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value) if "T" in value or " " in value else date.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return format_datetime(value, style)
    return format_date(value, style)


def localized(value: Any) -> Any:
    """Pick the page language's text out of a ``{"zh": ..., "en": ...}`` mapping (others pass through)."""
    if isinstance(value, dict) and ("zh" in value or "en" in value):
        return value.get(lang()) or value.get("zh") or value.get("en") or ""
    return value


def init_app(app: Flask) -> Babel:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", LOCALES[DEFAULT])
    app.config.setdefault("BABEL_DEFAULT_TIMEZONE", TIMEZONE)
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", ";".join(str(d) for d in TRANSLATION_DIRECTORIES))
    babel = Babel(app, locale_selector=_select_locale, timezone_selector=lambda: TIMEZONE)
    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["loc"] = localized

    @app.context_processor
    def language() -> dict[str, Any]:
        code = lang()
        return {"page_lang": code, "html_lang": "zh-CN" if code == "zh" else "en", "language_names": LANGUAGE_NAMES}

    return babel

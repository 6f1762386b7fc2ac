"""The web pages' catalogs: every string extracted, every string translated, the .mo files current."""

from __future__ import annotations

import gettext
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOG_DIRS = [d for d in (ROOT / "engine" / "translations", ROOT / "admin" / "translations") if d.is_dir()]
POS = sorted(po for d in CATALOG_DIRS for po in d.glob("*/LC_MESSAGES/messages.po"))
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}


def _catalog(po: Path):  # type: ignore[no-untyped-def]
    with po.open("rb") as handle:
        return read_po(handle)


def test_both_languages_have_catalogs() -> None:
    names = {(po.parents[2].name, po.parents[1].name) for po in POS}
    assert ("translations", "zh_Hans_CN") in names and ("translations", "en") in names


@pytest.mark.parametrize("po", POS, ids=lambda p: str(p.relative_to(ROOT)))
def test_mo_is_compiled_from_the_current_po(po: Path) -> None:
    mo = po.with_suffix(".mo")
    assert mo.exists(), f"{mo.relative_to(ROOT)} is missing: run make translations"
    with mo.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)._catalog  # type: ignore[attr-defined]
    # a message with a context (pgettext) is stored in the .mo as "context\x04id"
    expected = {(f"{m.context}\x04{m.id}" if m.context else m.id): m.string
                for m in _catalog(po) if m.id and m.string and not m.fuzzy}
    actual = {k: v for k, v in compiled.items() if k}
    assert actual == expected, f"{mo.relative_to(ROOT)} is out of date with its .po: run make translations"


@pytest.mark.parametrize("po", [p for p in POS if p.parents[1].name.startswith("zh")], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_string_has_a_chinese_translation(po: Path) -> None:
    missing = [m.id for m in _catalog(po) if m.id and (not m.string or m.fuzzy)]
    assert not missing, f"{po.relative_to(ROOT)} leaves these untranslated: {missing}"


def test_every_string_in_the_engine_pages_is_in_the_catalogs() -> None:
    method_map = [("engine/**.py", "python"), ("engine/templates/**.html", "jinja2")]
    extracted = {msg[2] if isinstance(msg[2], str) else msg[2][0]
                 for msg in extract_from_dir(str(ROOT), method_map, keywords=KEYWORDS)
                 if msg[0].startswith("engine")}
    catalog = {m.id if isinstance(m.id, str) else m.id[0]
               for m in _catalog(ROOT / "engine/translations/zh_Hans_CN/LC_MESSAGES/messages.po") if m.id}
    assert not extracted - catalog, f"strings missing from engine/translations (run make translations): {sorted(extracted - catalog)}"

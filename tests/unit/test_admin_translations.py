"""The admin pages' catalog (admin/translations): every string of admin/ extracted into it."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}


def test_every_string_in_the_admin_pages_is_in_the_admin_catalog() -> None:
    method_map = [("admin/**.py", "python"), ("admin/templates/**.html", "jinja2")]
    extracted = {msg[2] if isinstance(msg[2], str) else msg[2][0]
                 for msg in extract_from_dir(str(ROOT), method_map, keywords=KEYWORDS) if msg[0].startswith("admin")}
    with (ROOT / "admin/translations/zh_Hans_CN/LC_MESSAGES/messages.po").open("rb") as handle:
        catalog = {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(handle) if m.id}
    assert extracted, "nothing extracted: the method map no longer matches admin/"
    assert not extracted - catalog, f"strings missing from admin/translations (run make translations): {sorted(extracted - catalog)}"

"""Finds untranslated text on a rendered page.

Text the page shows (text nodes, and the placeholder/title/aria-label/alt attributes) is checked,
except inside ``<script>``, ``<style>`` and elements marked ``translate="no"`` (customer data,
names, codes: the HTML attribute that says "do not translate this").

* On an English page, any Chinese character is untranslated.
* On a Chinese page, any run of two or more English words is untranslated, and so is any text
  equal to one of the catalog's English source strings.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOGS = [ROOT / "engine" / "translations", ROOT / "admin" / "translations"]
CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff01-\uff5e]")
ENGLISH_WORDS = re.compile(r"\b[A-Za-z][a-z]+(?:[ '-]+[A-Za-z][a-z]+)+\b")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
SHOWN_ATTRIBUTES = ("placeholder", "title", "aria-label", "alt")
#: words that are the same in both languages
NEUTRAL = {"Careflow", "English"}


def source_strings() -> set[str]:
    """Every English msgid that the zh catalogs translate into something else."""
    found: set[str] = set()
    for folder in CATALOGS:
        po = folder / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
        if po.exists():
            with po.open("rb") as handle:
                found |= {m.id for m in read_po(handle) if m.id and isinstance(m.id, str) and m.string and m.string != m.id}
    return found


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []
        self.chunks: list[str] = []

    def _skipping(self) -> bool:
        return any(skip for _tag, skip in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        skip = tag in ("script", "style", "template") or values.get("translate") == "no"
        if not skip and not self._skipping():
            self.chunks += [str(values[a]) for a in SHOWN_ATTRIBUTES if values.get(a)]
            if tag == "input" and values.get("type") in ("submit", "button") and values.get("value"):
                self.chunks.append(str(values["value"]))
        if tag not in VOID:
            self.stack.append((tag, skip))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index][0] == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if data.strip() and not self._skipping():
            self.chunks.append(" ".join(data.split()))


def shown_text(html: str) -> list[str]:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return parser.chunks


def untranslated(html: str, lang: str, sources: set[str] | None = None) -> list[str]:
    """The pieces of text on the page that are not in its language (empty when all is well)."""
    problems = []
    sources = source_strings() if sources is None else sources
    for chunk in shown_text(html):
        if lang == "en":
            if CJK.search(chunk):
                problems.append(chunk)
        else:
            words = [w for w in ENGLISH_WORDS.findall(chunk) if w not in NEUTRAL]
            if words or chunk in sources:
                problems.append(chunk)
    return problems

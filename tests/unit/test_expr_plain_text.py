"""Templates without markup skip Jinja: what they render to must be exactly what Jinja gives."""

from __future__ import annotations

import pytest

from engine import expr
from engine.expr import _ENV, _HTML_ENV, _build, _parse_template

TEXTS = [
    "", "a", "a\n", "a\n\n", "\n", "a\nb", "x < y & z", "<b>\"'</b>", "tab\t", " spaces  ", "中文\n",
    "a\n\nb\n", "%}", "}}", "#}", "a\rb", "a\r\n", "{", "{{ 1 }}", "{# note #}x", "{% if true %}y{% endif %}\n",
]


@pytest.mark.parametrize("autoescape", [False, True])
@pytest.mark.parametrize("text", TEXTS)
def test_plain_text_renders_as_jinja_renders_it(text: str, autoescape: bool) -> None:
    env = _HTML_ENV if autoescape else _ENV
    template, _paths = _build(env, _parse_template(env, text), text)
    by_jinja = str("".join(template.root_render_func(template.new_context({}))))
    assert expr.compile_template(text, autoescape=autoescape).render({}) == by_jinja


def test_only_text_without_markup_takes_the_shortcut() -> None:
    assert expr.compile_template("您好，欢迎\n")._plain == "您好，欢迎"  # type: ignore[attr-defined]
    for text in ("{{ x }}", "a {# c #}", "a\r\n"):
        assert expr.compile_template(text)._plain is None  # type: ignore[attr-defined]

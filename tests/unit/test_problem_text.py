"""Problem messages of flow and form files: every one in English and Chinese, with the same parameters."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from engine.errors import DefinitionInvalid, FlowInvalid, Problem
from engine.flow.loader import load_flow_text
from engine.flow.validate import Catalog
from engine.forms import load_form_text
from engine.problem_text import LANGS, MESSAGES, Text, placeholders, t

ROOT = Path(__file__).resolve().parents[2]
_USED_KEY = re.compile(r"""\b(?:t|Text)\(\s*["']([a-z_]+\.[a-zA-Z_]+)["']""")


@pytest.mark.parametrize("key", sorted(MESSAGES))
def test_every_message_has_both_languages_with_the_same_placeholders(key: str) -> None:
    templates = MESSAGES[key]
    assert set(templates) == set(LANGS)
    assert placeholders(templates["zh"]) == placeholders(templates["en"]), key
    if key != "hint.none":
        assert templates["zh"].strip() and templates["en"].strip()
        assert templates["zh"] != templates["en"] or not re.search(r"[a-z]{3}", templates["en"].format_map(_Blank())), key


class _Blank(dict):  # type: ignore[type-arg]
    def __missing__(self, key: str) -> str:
        return ""


def test_every_key_the_code_uses_is_in_the_catalog() -> None:
    used = set()
    for path in [*ROOT.joinpath("engine").rglob("*.py"), *ROOT.joinpath("admin").rglob("*.py")]:
        used |= set(_USED_KEY.findall(path.read_text("utf-8")))
    used |= {f"flow.unknown_{kind}" for kind in ("form", "role", "flow", "segment")}  # built from the kind
    assert used - set(MESSAGES) == set()
    assert len(used) > 100


def test_a_text_is_its_english_and_renders_chinese_with_the_same_values() -> None:
    hint = t("hint.did_you_mean", name="done")
    message = t("flow.unknown_step", id="dnoe", hint=hint)
    assert message == "unknown step 'dnoe'; did you mean 'done'?" and isinstance(message, str)
    assert message.render("zh") == "未知的步骤 'dnoe'；是不是想写 'done'？"
    assert message.render("fr") == message
    problem = Problem("f.yaml", 3, 7, message, "$.steps[0].next")
    assert str(problem) == "f.yaml:3:7: unknown step 'dnoe'; did you mean 'done'? ($.steps[0].next)"
    assert problem.in_lang("zh") == "f.yaml:3:7: 未知的步骤 'dnoe'；是不是想写 'done'？ ($.steps[0].next)"
    assert problem.as_dict("zh")["message"] == message.render("zh") and problem.as_dict()["message"] == message
    copied = pickle.loads(pickle.dumps(problem))
    assert copied == problem and copied.text("zh") == problem.text("zh")
    assert Problem("f", 1, 1, "plain words").text("zh") == "plain words"
    with pytest.raises(KeyError):
        t("no.such_key")


def _problems(text: str, catalog: Catalog | None = None) -> list[Problem]:
    with pytest.raises(FlowInvalid) as caught:
        load_flow_text(text, "f.yaml", catalog)
    return caught.value.problems


def test_schema_errors_keep_jsonschemas_english_and_get_chinese_by_keyword() -> None:
    flow = "id: f\nname: 1\nsteps:\n  - id: a\n    type: end\n    outcome: 5\n  - id: b\n    type: nope\n"
    problems = _problems(flow)
    by_path = {p.path: p for p in problems}
    assert by_path["$.steps[0].outcome"].message == "5 is not of type 'string'"
    assert by_path["$.steps[0].outcome"].text("zh") == "5 的类型不对，应为 字符串"
    nope = next(p for p in problems if "'nope'" in p.message)
    assert nope.text("zh").startswith("'nope' 不是可选值 ") and "'nope' is not one of" in nope.message


def test_connector_params_problems_in_chinese() -> None:
    flow = ("id: f\nname: x\nsteps:\n  - id: a\n    type: action\n    connector: sms\n    params: {to: 5, txet: hi}\n"
            "    next: b\n  - id: b\n    type: end\n")
    schema = {"type": "object", "properties": {"to": {"type": "string"}, "text": {"type": "string"}},
              "required": ["to", "text"], "additionalProperties": False}
    problems = _problems(flow, Catalog(connectors=frozenset({"sms"}), message_schemas={"sms": schema}))
    pairs = sorted((p.message, p.text("zh")) for p in problems)
    assert ("connector 'sms' needs the parameter 'text'", "连接器 'sms' 需要参数 'text'") in pairs
    assert ("parameter 'to' must be a string, not a whole number", "参数 'to' 应为字符串，而不是整数") in pairs
    assert ("unknown parameter 'txet' for connector 'sms'; did you mean 'text'?",
            "连接器 'sms' 的未知的参数 'txet'；是不是想写 'text'？") in pairs


def test_form_file_problems_in_chinese() -> None:
    form = '{"type": "object", "additionalProperties": false, "x-title": {"zh": "表", "en": "F"},' \
           ' "properties": {"a": {"type": "string", "x-widgte": "text", "x-label": {"zh": "甲", "en": "A"}}},' \
           ' "required": ["b"]}'
    with pytest.raises(DefinitionInvalid) as caught:
        load_form_text(form, "f.schema.json", "f")
    pairs = {(p.message, p.text("zh")) for p in caught.value.problems}
    assert ("unknown UI keyword 'x-widgte'; did you mean 'x-widget'?", "未知的界面关键字 'x-widgte'；是不是想写 'x-widget'？") in pairs
    assert ("'b' is required but is not a field; use one of: a", "'b' 被设为必填，但它不是字段；可用：a") in pairs


def test_json_syntax_of_a_form_in_chinese() -> None:
    with pytest.raises(DefinitionInvalid) as caught:
        load_form_text('{"type": "object",}', "f.schema.json", "f")
    problem = caught.value.problems[0]
    assert problem.message == "a trailing comma before '}' is not allowed in JSON"
    assert problem.text("zh") == "JSON 中 '}' 前不允许有多余的逗号"


# Broken flows as operations staff type them, with what libyaml says in English and what the Chinese
# must say instead (libyaml's own words must not be left in the Chinese).
_YAML_MISTAKES = [
    ("id: f\nname:\n  a: 1\n b: 2\n", "did not find expected key", "没有找到应有的键，多为缩进不齐"),
    ("id: f\nname: a: b\nsteps: []\n", "mapping values are not allowed in this context", "此处不能出现 ':' 键值"),
    ("id: f\nname: 'x\nsteps: []\n", "found unexpected end of stream", "文件意外结束"),
    ("id: f\nname: {a: 1\nsteps: []\n", "did not find expected ',' or '}'", "没有找到应有的 ',' 或 '}'"),
    ("id: f\nname: `x`\n", "found character that cannot start any token", "遇到不能作为开头的字符"),
    ("id: f\nsteps:\n  - id: a\n   type: end\n", "did not find expected '-' indicator", "没有找到应有的 '-' 标记"),
    ("id: f\nname:\n  a: 1\n b: 2\n", "starts at line 1", "（解析映射时，该处从第 1 行开始）"),
    ('id: f\nname: "a\\qb"\n', "found unknown escape character", "双引号中有未知的转义字符"),
]


@pytest.mark.parametrize(("text", "english", "chinese"), _YAML_MISTAKES)
def test_yaml_syntax_errors_in_chinese(text: str, english: str, chinese: str) -> None:
    with pytest.raises(FlowInvalid) as caught:
        load_flow_text(text, "f.yaml")
    problem = caught.value.problems[0]
    assert english in problem.message
    zh = problem.text("zh")
    assert chinese in zh and zh.startswith("YAML 语法错误：")
    left = re.sub(r"'[^']*'", "", zh)  # the quoted characters stay as written
    assert not re.search(r"[A-Za-z]{3}", left.removeprefix("YAML")), zh


def test_an_unknown_yaml_phrase_stays_in_english() -> None:
    from engine.problem_text import yaml_phrase

    assert yaml_phrase("a phrase libyaml may add one day") == "a phrase libyaml may add one day"
    assert yaml_phrase("found undefined alias").render("zh") == "别名未定义"  # type: ignore[attr-defined]

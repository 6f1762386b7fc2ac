"""Problem messages of flow and form files in English and Chinese.

A :class:`Text` is the English message (it *is* a ``str``, so everything that reads, compares or
prints ``Problem.message`` keeps working) that also remembers its catalog key and parameters, so
:meth:`Text.render` can say it in Chinese with the same names, values and line numbers. A
parameter that is itself a ``Text`` (a "did you mean" hint, a nested reason) is rendered in the
same language.

English comes from the ``en`` template unless a call gives it verbatim (``english=``): the
jsonschema-driven problems keep jsonschema's own English wording and only borrow the Chinese
template of their keyword. ``tests/unit/test_problem_text.py`` checks that every key has both
languages with the same placeholders.

This module imports only the standard library: the pure core depends on it.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterable, Mapping
from typing import Any

LANGS = ("zh", "en")


class Text(str):
    """English text of a problem, renderable in another language from its key and parameters."""

    key: str
    params: dict[str, Any]

    def __new__(cls, key: str, english: str | None = None, /, **params: Any) -> Text:
        if key not in MESSAGES:
            raise KeyError(f"no problem message {key!r}")
        obj = super().__new__(cls, english if english is not None else _render(key, "en", params))
        obj.key = key
        obj.params = params
        return obj

    def render(self, lang: str) -> str:
        """The message in ``lang`` (zh or en); English for any other code."""
        if lang != "zh":
            return str.__str__(self)
        return _render(self.key, "zh", self.params)

    def __reduce__(self) -> Any:
        return (_restore, (str.__str__(self), self.key, self.params))


def _restore(english: str, key: str, params: dict[str, Any]) -> Text:
    return Text(key, english, **params)


def t(key: str, /, **params: Any) -> Text:
    """The problem message ``key`` with its parameters."""
    return Text(key, **params)


def render(message: str, lang: str) -> str:
    """``message`` in ``lang``: a :class:`Text` is rendered, any other string is returned as it is."""
    return message.render(lang) if isinstance(message, Text) else str(message)


def did_you_mean(word: str, options: Iterable[Any]) -> Text:
    """``; did you mean 'x'?`` for the closest option, an empty text when none is close."""
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return t("hint.did_you_mean", name=close[0]) if close else t("hint.none")


def schema_text(error: Any, english: str | None = None) -> Text:
    """A jsonschema error: jsonschema's own English (or ``english``), Chinese from its keyword's template."""
    kind = str(error.validator)
    key = f"schema.{kind}" if f"schema.{kind}" in MESSAGES and kind not in ("required", "enum") else "schema.other"
    expected: Any = error.validator_value
    if kind == "type":
        wanted = [expected] if isinstance(expected, str) else list(expected)
        expected = Both(" or ".join(TYPE_WORDS.get(w, (w, w))[0] for w in wanted),
                        " 或 ".join(TYPE_WORDS.get(w, (w, w))[1] for w in wanted))
    else:
        expected = _short(expected)
    return Text(key, english if english is not None else str(error.message), value=_short(error.instance),
                expected=expected)


class Both(Text):
    """A parameter given as ready English and Chinese words."""

    def __new__(cls, en: str, zh: str) -> Both:  # type: ignore[override]
        obj = str.__new__(cls, en)
        obj.key = ""
        obj.params = {"zh": zh}
        return obj

    def render(self, lang: str) -> str:
        return str(self.params["zh"]) if lang == "zh" else str.__str__(self)

    def __reduce__(self) -> Any:
        return (Both, (str.__str__(self), self.params["zh"]))


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# libyaml's syntax errors (problem, then context), as ``careflow validate`` shows them: a pattern
# over the English phrase and its Chinese, where {0} is the quoted part kept as written. Ordered:
# the first that matches wins. Phrases not listed stay in English.
_YAML_PHRASES: tuple[tuple[str, str], ...] = (
    (r"did not find expected key", "没有找到应有的键，多为缩进不齐"),
    (r"did not find expected ('.+') indicator", "没有找到应有的 {0} 标记，多为缩进不齐"),
    (r"did not find expected comment or line break", "应为注释或换行"),
    (r"did not find expected node content", "缺少值"),
    (r"did not find expected alphabetic or numeric character", "应为字母或数字"),
    (r"did not find expected <document start>", "应为文档开头 '---'"),
    (r"did not find expected whitespace or line break", "应为空格或换行"),
    (r"did not find expected hexdecimal number", "应为十六进制数字"),
    (r"did not find expected ('.+') or ('.+')", "没有找到应有的 {0} 或 {1}"),
    (r"did not find expected (.+)", "没有找到应有的 {0}"),
    (r"could not find expected directive name", "缺少指令名"),
    (r"could not find expected (.+)", "没有找到应有的 {0}"),
    (r"mapping values are not allowed in this context", "此处不能出现 ':' 键值，请检查冒号后的空格和缩进，或给值加引号"),
    (r"mapping keys are not allowed in this context", "此处不能出现键"),
    (r"block sequence entries are not allowed in this context", "此处不能出现列表项 '-'，请检查缩进"),
    (r"found character that cannot start any token", "遇到不能作为开头的字符（如 ` 或 @），可给值加引号"),
    (r"found unexpected end of stream", "文件意外结束，引号未闭合？"),
    (r"found unknown escape character", "双引号中有未知的转义字符 \\"),
    (r"found a tab character that violates indentation", "制表符破坏了缩进；请用空格"),
    (r"found a tab character where an indentation space is expected", "此处应为缩进空格，却是制表符"),
    (r"found an indentation indicator equal to 0", "缩进指示符不能为 0"),
    (r"found undefined alias", "别名未定义"),
    (r"found unhashable key", "键不能是列表或映射"),
    (r"found unexpected non-alphabetical character", "遇到意外的非字母字符"),
    (r"found unexpected (.+)", "意外出现 {0}"),
    (r"could not determine a constructor for the tag (.+)", "不支持标签 {0}"),
    (r"while parsing a block mapping", "解析映射时"),
    (r"while parsing a block collection", "解析列表时"),
    (r"while parsing a block node", "解析值时"),
    (r"while parsing a flow mapping", "解析 {{…}} 映射时"),
    (r"while parsing a flow sequence", "解析 […] 列表时"),
    (r"while parsing a flow node", "解析 {{…}} 或 […] 中的值时"),
    (r"while (?:parsing|scanning) a quoted scalar", "读取加引号的文本时"),
    (r"while scanning a simple key", "读取键时"),
    (r"while scanning for the next token", "读取下一个记号时"),
    (r"while scanning a block scalar", "读取 | 或 > 多行文本时"),
    (r"while scanning a plain scalar", "读取文本时"),
    (r"while scanning an anchor", "读取锚点 & 时"),
    (r"while scanning an alias", "读取别名 * 时"),
    (r"while scanning a directive", "读取 % 指令时"),
    (r"while scanning a tag", "读取标签 ! 时"),
    (r"while constructing a mapping", "构造映射时"),
)
_YAML_PATTERNS = tuple((re.compile(pattern + r"\Z"), zh) for pattern, zh in _YAML_PHRASES)


def yaml_phrase(english: str) -> str:
    """libyaml's English phrase, renderable in Chinese when it is one we know (else as it is)."""
    for pattern, zh in _YAML_PATTERNS:
        found = pattern.match(english)
        if found:
            return Both(english, zh.format(*found.groups()))
    return english


def sane_number(value: Any, limit: float) -> bool:
    """A finite number (no bool) from -limit to limit: what coordinates and orders may be."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return -limit <= float(value) <= limit
    except OverflowError:  # an int too large for a float
        return False


def _render(key: str, lang: str, params: Mapping[str, Any]) -> str:
    values = {k: (v.render(lang) if isinstance(v, Text) else v) for k, v in params.items()}
    return MESSAGES[key][lang].format(**values)


def placeholders(template: str) -> set[str]:
    """The parameter names a template uses."""
    return {name for _lit, name, _spec, _conv in string.Formatter().parse(template) if name}


#: key -> {"en": ..., "zh": ...}; str.format templates with the same placeholders in both.
MESSAGES: dict[str, dict[str, str]] = {
    # -- pieces used inside other messages
    "hint.none": {"en": "", "zh": ""},
    "hint.did_you_mean": {"en": "; did you mean {name!r}?", "zh": "；是不是想写 {name!r}？"},
    "hint.takes": {"en": " (it takes {names})", "zh": "（可用的参数：{names}）"},
    "hint.configuration_of": {"en": "; {name!r} is a {owner} configuration: write '{owner}/{name}'",
                              "zh": "；{name!r} 是 {owner} 的配置：请写成 '{owner}/{name}'"},
    "hint.configuration_syntax": {"en": "; a named configuration is written type/name, e.g. 'feishu/care-team'",
                                  "zh": "；命名配置的写法是 类型/名称，例如 'feishu/care-team'"},
    "hint.one_of": {"en": "; use one of: {options}", "zh": "；可用：{options}"},
    # -- reading the file (YAML / JSON)
    "file.too_large": {"en": "the file is too large: the limit is {limit:,} bytes",
                       "zh": "文件太大：上限为 {limit:,} 字节"},
    "file.not_utf8": {"en": "the file is not valid UTF-8: byte 0x{byte:02x} at byte offset {offset}; save it as UTF-8",
                      "zh": "文件不是有效的 UTF-8：字节偏移 {offset} 处的字节 0x{byte:02x}；请以 UTF-8 保存"},
    "file.nul": {"en": "NUL characters are not allowed; is this a text file?",
                 "zh": "不允许 NUL 字符；这是文本文件吗？"},
    "file.control_char": {"en": "the control character U+{code:04X} is not allowed",
                          "zh": "不允许控制字符 U+{code:04X}"},
    "file.too_many_problems": {"en": "more than {limit} problems; fix these first to see the rest",
                               "zh": "问题超过 {limit} 个；请先修正这些，再查看其余问题"},
    "yaml.invalid": {"en": "invalid YAML: {detail}", "zh": "YAML 无效：{detail}"},
    "yaml.syntax": {"en": "{detail}", "zh": "YAML 语法错误：{detail}"},
    "yaml.syntax_in": {"en": "{detail} ({context} that starts at line {line})",
                       "zh": "YAML 语法错误：{detail}（{context}，该处从第 {line} 行开始）"},
    "yaml.syntax_context": {"en": "{detail} ({context})", "zh": "YAML 语法错误：{detail}（{context}）"},
    "yaml.merge_source": {"en": "a merge key '<<' needs a mapping or a list of mappings",
                          "zh": "合并键 '<<' 需要一个映射或映射的列表"},
    "yaml.empty_key": {"en": "a key is empty; write a name before the ':'", "zh": "键是空的；请在 ':' 前写上名称"},
    "json.expected_comma": {"en": "expected ',' or '{closer}'", "zh": "此处应为 ',' 或 '{closer}'"},
    "json.trailing_comma": {"en": "a trailing comma before '{closer}' is not allowed in JSON",
                            "zh": "JSON 中 '{closer}' 前不允许有多余的逗号"},
    "json.expected_name": {"en": "expected a property name in double quotes", "zh": "此处应为双引号括起的属性名"},
    "json.expected_colon": {"en": "expected ':' after the property name", "zh": "属性名后应为 ':'"},
    "json.nan": {"en": "NaN and Infinity are not valid JSON numbers", "zh": "NaN 和 Infinity 不是有效的 JSON 数字"},
    "json.expected_value": {"en": "expected a value", "zh": "此处应为一个值"},
    "json.trailing_text": {"en": "unexpected text after the end of the JSON document",
                           "zh": "JSON 文档结束后还有多余的文本"},
    "yaml.too_deep_unknown": {"en": "the document is nested too deeply", "zh": "文档嵌套太深"},
    "json.syntax": {"en": "{detail}", "zh": "JSON 语法错误：{detail}"},
    "yaml.tab_indent": {"en": "tab characters are not allowed for indentation; use spaces",
                        "zh": "缩进不能使用制表符（Tab）；请使用空格"},
    "yaml.tab": {"en": "tab characters are not allowed here; use spaces",
                 "zh": "此处不能使用制表符（Tab）；请使用空格"},
    "yaml.second_document": {"en": "only one YAML document per file is allowed; a second one starts here",
                             "zh": "每个文件只能有一个 YAML 文档；第二个文档从这里开始"},
    "yaml.too_many_values": {"en": "the document has more than {limit:,} values",
                             "zh": "文档中的值超过 {limit:,} 个"},
    "yaml.anchor_twice": {"en": "the anchor &{name} is defined twice (first at line {first})",
                          "zh": "锚点 &{name} 定义了两次（第一次在第 {first} 行）"},
    "yaml.too_deep": {"en": "the document is nested more than {limit} levels deep",
                      "zh": "文档嵌套超过 {limit} 层"},
    "yaml.alias_inside": {"en": "the alias *{name} is used inside the value it refers to (&{name})",
                          "zh": "别名 *{name} 用在了它所引用的值（&{name}）内部"},
    "yaml.alias_undefined": {"en": "the alias *{name} refers to an anchor &{name} that is not defined before it",
                             "zh": "别名 *{name} 引用的锚点 &{name} 在它之前没有定义"},
    "yaml.alias_values": {"en": "aliases expand to more than {limit:,} values; use fewer aliases",
                          "zh": "别名展开后超过 {limit:,} 个值；请少用别名"},
    "yaml.alias_chars": {"en": "aliases expand to more than {limit:,} characters; use fewer aliases",
                         "zh": "别名展开后超过 {limit:,} 个字符；请少用别名"},
    "yaml.duplicate_key": {"en": "duplicate key {key!r} (first defined at line {first})",
                           "zh": "重复的键 {key!r}（第一次定义在第 {first} 行）"},
    "yaml.key_kind": {"en": "{kind} cannot be used as a key", "zh": "{kind}不能用作键"},
    "yaml.bad_tagged_value": {"en": "the value {value!r} is not a valid {tag}", "zh": "值 {value!r} 不是有效的 {tag}"},
    "yaml.read_as_number": {"en": 'the value {text} would be read as the number {number}; write it in quotes: "{text}"',
                            "zh": '值 {text} 会被读成数字 {number}；请加上引号："{text}"'},
    "yaml.too_many_digits": {"en": "the number {digits}... has too many digits", "zh": "数字 {digits}... 位数太多"},
    "yaml.tag_on_kind": {"en": "the tag {tag} cannot be used on {kind}", "zh": "标签 {tag} 不能用于{kind}"},
    "yaml.tag_not_allowed": {"en": "the tag {tag} is not allowed; remove it", "zh": "不允许使用标签 {tag}；请删除"},
    "yaml.key_not_text": {"en": 'the key {text} would be read as {kind}, not as text; write it in quotes: "{text}"',
                          "zh": '键 {text} 会被读成{kind}而不是文本；请加上引号："{text}"'},
    # -- the DSL's JSON Schema (flows)
    "schema.unknown_key": {"en": "unknown key {key!r}{hint}", "zh": "未知的键 {key!r}{hint}"},
    "schema.required": {"en": "missing required key {key!r}", "zh": "缺少必需的键 {key!r}"},
    "schema.enum": {"en": "{value!r} is not one of {options}{hint}", "zh": "{value!r} 不是可选值 {options} 之一{hint}"},
    "schema.type": {"en": "{value} is not of type {expected}", "zh": "{value} 的类型不对，应为 {expected}"},
    "schema.const": {"en": "{expected} was expected", "zh": "此处应为 {expected}"},
    "schema.pattern": {"en": "{value} does not match {expected}", "zh": "{value} 不符合格式 {expected}"},
    "schema.minLength": {"en": "{value} is too short", "zh": "{value} 太短"},
    "schema.maxLength": {"en": "{value} is too long", "zh": "{value} 太长"},
    "schema.minItems": {"en": "{value} is too short", "zh": "{value} 的项太少"},
    "schema.maxItems": {"en": "{value} is too long", "zh": "{value} 的项太多"},
    "schema.minimum": {"en": "{value} is less than the minimum of {expected}",
                       "zh": "{value} 小于最小值 {expected}"},
    "schema.maximum": {"en": "{value} is greater than the maximum of {expected}",
                       "zh": "{value} 大于最大值 {expected}"},
    "schema.minProperties": {"en": "{value} does not have enough properties", "zh": "{value} 的键太少"},
    "schema.not": {"en": "{value} is not allowed here", "zh": "此处不允许 {value}"},
    "schema.oneOf": {"en": "{value} is not valid here", "zh": "{value} 在此处无效"},
    "schema.other": {"en": "{value} is not valid here", "zh": "{value} 在此处无效"},
    "flow.not_mapping": {"en": "a flow must be a mapping of keys, not {kind}", "zh": "流程必须是键的映射，而不是 {kind}"},
    "flow.id_file_name": {"en": "flow id {id!r} must equal the file name {expected!r}",
                          "zh": "流程 id {id!r} 必须与文件名 {expected!r} 相同"},
    "file.kind": {"en": "not a flow (.yaml) or form (.schema.json) file", "zh": "不是流程（.yaml）或表单（.schema.json）文件"},
    # -- the designer's reading of a flow for drawing (engine/designer/graph.py)
    "designer.steps_list": {"en": "'steps' must be a list of steps", "zh": "'steps' 必须是步骤的列表"},
    "designer.step_id": {"en": "every step needs an 'id' to be drawn", "zh": "每个步骤都需要 'id' 才能画出来"},
    "designer.duplicate_step": {"en": "duplicate step id {id!r}: rename one to draw the flow",
                                "zh": "重复的步骤 id {id!r}：请重命名其中一个，才能画出流程"},
    "designer.layout_point": {"en": "the position of step {id!r} must be [x, y] with numbers from -{limit} to {limit}, "
                                     "not {value}",
                               "zh": "步骤 {id!r} 的位置必须是 [x, y]，数值在 -{limit} 到 {limit} 之间，而不是 {value}"},
    "designer.triggers_list": {"en": "'triggers' must be a list of triggers, not {value}",
                               "zh": "'triggers' 必须是触发器的列表，而不是 {value}"},
    "designer.version": {"en": "'version' must be a whole number from 1 to {limit}, not {value}",
                         "zh": "'version' 必须是 1 到 {limit} 之间的整数，而不是 {value}"},
    "designer.body_json": {"en": "the request is not JSON the designer can read: {detail}",
                           "zh": "请求内容不是可读取的 JSON：{detail}"},
    # -- graph JSON the page sends to be written as YAML (engine/designer/writer.py)
    "designer.graph_object": {"en": "the graph must be an object with flow, nodes and edges",
                              "zh": "流程图必须是包含 flow、nodes 和 edges 的对象"},
    "designer.graph_parts": {"en": "flow must be an object, nodes and edges lists",
                             "zh": "flow 必须是对象，nodes 和 edges 必须是列表"},
    "designer.node_id": {"en": "nodes[{i}] needs an id", "zh": "nodes[{i}] 需要 id"},
    "designer.node_twice": {"en": "nodes[{i}]: the id {id!r} is used twice", "zh": "nodes[{i}]：id {id!r} 用了两次"},
    "designer.node_step": {"en": "nodes[{i}].properties.step must be an object",
                           "zh": "nodes[{i}].properties.step 必须是对象"},
    "designer.node_number": {"en": "nodes[{i}].{key} must be a number from -{limit} to {limit}, not {value}",
                             "zh": "nodes[{i}].{key} 必须是 -{limit} 到 {limit} 之间的数字，而不是 {value}"},
    "designer.edge_ends": {"en": "edges[{i}] needs sourceNodeId and targetNodeId",
                           "zh": "edges[{i}] 需要 sourceNodeId 和 targetNodeId"},
    "designer.edge_properties": {"en": "edges[{i}].properties must be an object",
                                 "zh": "edges[{i}].properties 必须是对象"},
    "designer.edge_order": {"en": "edges[{i}].properties.order must be a number from -{limit} to {limit}, not {value}",
                            "zh": "edges[{i}].properties.order 必须是 -{limit} 到 {limit} 之间的数字，而不是 {value}"},
    # -- form files (engine/forms.py)
    "form.id": {"en": "the form id {id!r} (from the file name) must be letters, digits, '_' or '-'",
                "zh": "表单 id {id!r}（取自文件名）只能包含字母、数字、'_' 或 '-'"},
    "form.not_object": {"en": 'a form must be a JSON object: a JSON Schema with "type": "object"',
                        "zh": '表单必须是 JSON 对象：带有 "type": "object" 的 JSON Schema'},
    "form.too_deep": {"en": "the schema is nested more than {limit} levels deep", "zh": "模式嵌套超过 {limit} 层"},
    "form.too_deep_to_check": {"en": "the schema is nested too deeply to be checked", "zh": "模式嵌套太深，无法检查"},
    "form.draft": {"en": 'forms use JSON Schema draft 2020-12: "https://json-schema.org/draft/2020-12/schema"',
                   "zh": '表单使用 JSON Schema draft 2020-12："https://json-schema.org/draft/2020-12/schema"'},
    "form.root_type": {"en": 'the root of a form must be an object schema: "type": "object"',
                       "zh": '表单的根必须是对象模式："type": "object"'},
    "form.properties": {"en": 'a form needs "properties": an object with one schema per field',
                        "zh": '表单需要 "properties"：每个字段一个模式的对象'},
    "form.additional_properties": {
        "en": 'set "additionalProperties": false so a submission cannot add fields the form does not have',
        "zh": '请设置 "additionalProperties": false，以免提交的数据带有表单中没有的字段'},
    "form.id_keyword": {"en": '"$id" is only allowed at the root; it would change what "#/..." means here',
                        "zh": '"$id" 只能用在根上；在这里会改变 "#/..." 的含义'},
    "form.format": {"en": "the format {format!r} is not checked{hint}", "zh": "格式 {format!r} 不会被检查{hint}"},
    "form.ref_outside": {"en": '"{keyword}": {ref!r} points outside this form; '
                               'only local references such as "#/$defs/name" are allowed',
                         "zh": '"{keyword}"：{ref!r} 指向本表单之外；只允许 "#/$defs/name" 这样的本地引用'},
    "form.ref_nothing": {"en": '"{keyword}": {ref!r} points to nothing in this form',
                         "zh": '"{keyword}"：{ref!r} 在本表单中指向的内容不存在'},
    "form.ref_loop": {"en": '"{keyword}": {ref!r} leads back to itself through {following!r}: validation would never end',
                      "zh": '"{keyword}"：{ref!r} 经由 {following!r} 又回到自身：校验将永远不会结束'},
    "form.field_name": {"en": "the field name {name!r} must start with a letter and contain only letters, digits and '_' "
                              "(and not be {reserved!r})",
                        "zh": "字段名 {name!r} 必须以字母开头，只能包含字母、数字和 '_'（且不能是 {reserved!r}）"},
    "form.field_schema": {"en": 'the field {name!r} must be an object schema with an "x-label"',
                          "zh": '字段 {name!r} 必须是带有 "x-label" 的对象模式'},
    "form.no_label": {"en": 'the field {name!r} has no "x-label"; add {{"zh": "...", "en": "..."}}',
                      "zh": '字段 {name!r} 没有 "x-label"；请添加 {{"zh": "...", "en": "..."}}'},
    "form.prefill": {"en": '"x-prefill" must be a dotted path starting with customer, vars or instance, '
                           'e.g. "customer.phone"',
                     "zh": '"x-prefill" 必须是以 customer、vars 或 instance 开头、用点分隔的路径，例如 "customer.phone"'},
    "form.text": {"en": '"{keyword}" must be an object with non-empty "zh" and "en" texts',
                  "zh": '"{keyword}" 必须是带有非空 "zh" 和 "en" 文本的对象'},
    "form.unknown_hint": {"en": "unknown UI keyword {key!r}{hint}", "zh": "未知的界面关键字 {key!r}{hint}"},
    "form.unknown_widget": {"en": "unknown widget {widget!r}{hint}", "zh": "未知的控件 {widget!r}{hint}"},
    "form.widget_options": {"en": "the {widget} widget needs an enum (or a boolean) to offer options",
                            "zh": "{widget} 控件需要 enum（或布尔类型）来提供选项"},
    "form.checkboxes": {"en": 'the checkboxes widget needs "type": "array" with "items": {{"enum": [...]}}',
                        "zh": 'checkboxes 控件需要 "type": "array" 以及 "items": {{"enum": [...]}}'},
    "form.rating": {"en": 'the rating widget needs "type": "integer" with "minimum" and "maximum"',
                    "zh": 'rating 控件需要 "type": "integer" 以及 "minimum" 和 "maximum"'},
    "form.enum_labels_object": {"en": '"x-enum-labels" must be an object: {{"<value>": {{"zh": "...", "en": "..."}}}}',
                                "zh": '"x-enum-labels" 必须是对象：{{"<value>": {{"zh": "...", "en": "..."}}}}'},
    "form.enum_labels_enum": {"en": '"x-enum-labels" needs an "enum" (or "items": {{"enum": [...]}}) on the field',
                              "zh": '"x-enum-labels" 需要字段上有 "enum"（或 "items": {{"enum": [...]}}）'},
    "form.enum_label_value": {"en": "{value!r} is not one of the field's values{hint}",
                              "zh": "{value!r} 不是该字段的可选值之一{hint}"},
    "form.show_if_shape": {"en": '"x-show-if" must be {{"field": "<another field>", "equals": <value>}}',
                           "zh": '"x-show-if" 必须是 {{"field": "<另一个字段>", "equals": <值>}}'},
    "form.show_if_field": {"en": '"x-show-if" names the unknown field {field!r}{hint}',
                           "zh": '"x-show-if" 引用了未知的字段 {field!r}{hint}'},
    "form.show_if_never": {"en": "the field {field!r} can never be {value!r}, so this field would never show{hint}",
                           "zh": "字段 {field!r} 永远不会是 {value!r}，所以这个字段永远不会显示{hint}"},
    "form.required_unknown": {"en": "{name!r} is required but is not a field{hint}",
                              "zh": "{name!r} 被设为必填，但它不是字段{hint}"},
    "form.condition_unknown": {"en": "{name!r} is not a field, so this condition would never see a value{hint}",
                               "zh": "{name!r} 不是字段，所以这个条件永远拿不到值{hint}"},
    "form.not_a_field": {"en": "{name!r} is not a field{hint}", "zh": "{name!r} 不是字段{hint}"},
    "form.show_if_cycle": {"en": '"x-show-if" goes round in a circle ({chain}); the field would never show',
                           "zh": '"x-show-if" 形成了循环（{chain}）；该字段永远不会显示'},
    "form.no_title": {"en": 'a form needs "x-title": {{"zh": "...", "en": "..."}}',
                      "zh": '表单需要 "x-title"：{{"zh": "...", "en": "..."}}'},
    "form.order_list": {"en": '"x-order" must be a list of field names', "zh": '"x-order" 必须是字段名的列表'},
    "form.order_unknown": {"en": '"x-order" names the unknown field {name!r}{hint}',
                           "zh": '"x-order" 引用了未知的字段 {name!r}{hint}'},
    "form.order_twice": {"en": '"x-order" names {name!r} twice', "zh": '"x-order" 两次列出了 {name!r}'},
    "form.bad_regex": {"en": "{value!r} is not a valid regular expression: {detail}",
                       "zh": "{value!r} 不是有效的正则表达式：{detail}"},
    "form.unknown_type": {"en": "unknown type {type}{hint}", "zh": "未知的类型 {type}{hint}"},
    "form.pattern_long": {"en": "the pattern is {length:,} characters long; the limit is {limit}",
                          "zh": "正则表达式长 {length:,} 个字符；上限为 {limit}"},
    "form.pattern_redos": {"en": "the pattern {pattern!r} repeats a group that itself repeats without bound, like (a+)+; "
                                 "on some inputs it takes exponential time (ReDoS). "
                                 "Rewrite it without the nested repetition",
                           "zh": "正则表达式 {pattern!r} 重复了一个本身无限重复的分组，例如 (a+)+；"
                                 "某些输入会耗费指数级时间（ReDoS）。请改写，去掉嵌套的重复"},
    # -- checks of meaning (engine/flow/validate.py)
    "flow.unknown_time_zone": {"en": "unknown time zone {name!r}", "zh": "未知的时区 {name!r}"},
    "flow.duplicate_step": {"en": "duplicate step id {id!r} (first defined at line {first})",
                            "zh": "重复的步骤 id {id!r}（第一次定义在第 {first} 行）"},
    "flow.unknown_step": {"en": "unknown step {id!r}{hint}", "zh": "未知的步骤 {id!r}{hint}"},
    "flow.self_loop": {"en": "step {id!r} cannot lead to itself", "zh": "步骤 {id!r} 不能指向自己"},
    "flow.unreachable": {"en": "step {id!r} can never be reached from {start!r}",
                         "zh": "从 {start!r} 永远到不了步骤 {id!r}"},
    "flow.no_end": {"en": "the flow has no 'end' step", "zh": "流程没有 'end'（结束）步骤"},
    "flow.no_exit": {"en": "step {id!r} is in a loop without an exit: no 'end' step can be reached from it",
                     "zh": "步骤 {id!r} 处在没有出口的循环中：从它到不了任何 'end' 步骤"},
    "flow.busy_loop": {"en": "the loop through {names} has no task or wait step, so it would run forever",
                       "zh": "经过 {names} 的循环中没有任务或等待步骤，会无限运行"},
    "flow.join_without_split": {"en": "join {id!r} has no parallel split before it",
                                "zh": "汇合 {id!r} 之前没有并行分支"},
    "flow.expression": {"en": "expression does not parse: {detail}", "zh": "表达式无法解析：{detail}"},
    "flow.unknown_form": {"en": "unknown form {name!r}{hint}", "zh": "未知的表单 {name!r}{hint}"},
    "flow.unknown_role": {"en": "unknown role {name!r}{hint}", "zh": "未知的角色 {name!r}{hint}"},
    "flow.unknown_flow": {"en": "unknown flow {name!r}{hint}", "zh": "未知的流程 {name!r}{hint}"},
    "flow.unknown_segment": {"en": "unknown segment {name!r}{hint}", "zh": "未知的客户分群 {name!r}{hint}"},
    "flow.assignee_empty": {"en": "assignee needs a role, a user, users or an expr",
                            "zh": "assignee（处理人）需要 role、user、users 或 expr 之一"},
    "flow.reminder_without_due": {"en": "a reminder 'before' the due time needs a 'due' on the task",
                                  "zh": "在截止时间之前（'before'）的提醒需要任务设置 'due'"},
    "flow.escalation_without_due": {"en": "escalation counts from the due time: add 'due' to the task",
                                    "zh": "升级从截止时间起算：请给任务加上 'due'"},
    "flow.send_back_not_before": {"en": "{target!r} does not come before {id!r}", "zh": "{target!r} 不在 {id!r} 之前"},
    "flow.wait_kind": {"en": "a wait needs exactly one of 'duration', 'until' or 'event'",
                       "zh": "等待步骤需要且只能有 'duration'、'until'、'event' 其中之一"},
    "flow.timeout_pair": {"en": "'timeout' and 'on_timeout' go together", "zh": "'timeout' 和 'on_timeout' 必须同时设置"},
    "flow.timeout_event_only": {"en": "'timeout' applies only to a wait for an 'event'",
                                "zh": "'timeout' 只适用于等待 'event'（事件）的步骤"},
    "flow.update_customer_empty": {"en": "update_customer needs 'fields', 'add_tags' or 'remove_tags'",
                                   "zh": "update_customer 需要 'fields'、'add_tags' 或 'remove_tags'"},
    "flow.subflow_self": {"en": "a flow cannot start itself as a subflow", "zh": "流程不能把自己作为子流程启动"},
    "flow.unknown_connector": {"en": "unknown connector {name!r}{hint}", "zh": "未知的连接器 {name!r}{hint}"},
    "flow.unknown_connector_type": {"en": "unknown connector type {name!r} in {reference!r}{hint}",
                                    "zh": "{reference!r} 中的连接器类型 {name!r} 未知{hint}"},
    "flow.not_configurable": {"en": "connector {name!r} has no named configurations: write 'connector: {name}'",
                              "zh": "连接器 {name!r} 没有命名配置：请写成 'connector: {name}'"},
    "flow.configuration_name": {"en": "{name!r} is not a configuration name: lower-case letters, digits, '_' and '-', "
                                      "starting with a letter, at most 64",
                                "zh": "{name!r} 不是有效的配置名称：只能用小写字母、数字、'_' 和 '-'，"
                                      "以字母开头，最多 64 个字符"},
    "flow.configuration_type": {"en": "configuration {name!r} is a {actual} connector, not {type}; "
                                      "did you mean '{actual}/{name}'?",
                                "zh": "配置 {name!r} 属于 {actual} 连接器，而不是 {type}；是不是想写 '{actual}/{name}'？"},
    "flow.bad_cron": {"en": "bad cron expression {cron!r}: {detail}", "zh": "cron 表达式 {cron!r} 有误：{detail}"},
    "cron.fields": {"en": "expected 5 fields (minute hour day month weekday), got {count}",
                    "zh": "应有 5 个字段（分 时 日 月 星期），实际有 {count} 个"},
    "cron.weekday": {"en": "weekday {number} is out of range (0–7, where 0 and 7 are Sunday)",
                     "zh": "星期 {number} 超出范围（0–7，0 和 7 都是星期日）"},
    "cron.above_maximum": {"en": "Error validating expression {expr}: the last value ({value}) is higher than "
                                 "the maximum value ({limit})",
                           "zh": "{expr} 中的值 {value} 大于最大值 {limit}"},
    "cron.below_minimum": {"en": "Error validating expression {expr}: the first value ({value}) is lower than "
                                 "the minimum value ({limit})",
                           "zh": "{expr} 中的值 {value} 小于最小值 {limit}"},
    "cron.unrecognized": {"en": 'Unrecognized expression "{expr}" for field "{field}"',
                          "zh": '字段 "{field}" 中的表达式 "{expr}" 无法识别'},
    "cron.other": {"en": "{detail}", "zh": "无效（{detail}）"},
    "flow.field_changed_field": {"en": "a 'field_changed' trigger needs 'field'",
                                 "zh": "'field_changed' 触发器需要 'field'"},
    # -- an action step's params against its connector's message schema (engine/flow/messages.py)
    "params.unknown": {"en": "unknown parameter {key!r} {where}{hint}", "zh": "{where}未知的参数 {key!r}{hint}"},
    "params.where_connector": {"en": "for connector {connector!r}", "zh": "连接器 {connector!r} 的"},
    "params.where_name": {"en": "in {name!r}", "zh": "{name!r} 中"},
    "params.required": {"en": "{where} needs the parameter {key!r}", "zh": "{where}需要参数 {key!r}"},
    "params.who_connector": {"en": "connector {connector!r}", "zh": "连接器 {connector!r} "},
    "params.who_name": {"en": "{name}", "zh": "{name} "},
    "params.required_any": {"en": "connector {connector!r} needs the parameter {options}",
                            "zh": "连接器 {connector!r} 需要参数 {options}"},
    "params.type": {"en": "parameter {name!r} must be {wanted}, not {actual}",
                    "zh": "参数 {name!r} 应为{wanted}，而不是{actual}"},
    "params.enum": {"en": "parameter {name!r} must be one of {options}, not {value!r}{hint}",
                    "zh": "参数 {name!r} 必须是 {options} 之一，而不是 {value!r}{hint}"},
    "params.pattern": {"en": "parameter {name!r} {rule}, not {value!r}", "zh": "参数 {name!r} 不符合要求（{rule}），而是 {value!r}"},
    "params.format": {"en": "parameter {name!r}: {value!r} is not a valid {format}",
                      "zh": "参数 {name!r}：{value!r} 不是有效的 {format}"},
    "params.empty": {"en": "parameter {name!r} must not be empty", "zh": "参数 {name!r} 不能为空"},
    "params.other": {"en": "parameter {name!r}: {detail}", "zh": "参数 {name!r}：{detail}"},
}

#: JSON types as words, for the params' type problems.
TYPE_WORDS = {
    "string": ("a string", "字符串"), "integer": ("a whole number", "整数"), "number": ("a number", "数字"),
    "boolean": ("true or false", "true 或 false"), "object": ("a mapping", "映射"), "array": ("a list", "列表"),
    "null": ("null", "null"),
}

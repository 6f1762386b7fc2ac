"""Tests for the safe, bounded, position-keeping YAML/JSON loader (reliability test T16)."""

from __future__ import annotations

import collections
import json
import math
import os
import re
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.errors import FlowInvalid, FormInvalid, Problem
from engine.flow import yaml_loader
from engine.flow.yaml_loader import Located, json_path, load_json, load_yaml

HOSTILE_DIR = Path(__file__).resolve().parents[1] / "data" / "yaml" / "hostile"
HOSTILE_FILES = sorted(HOSTILE_DIR.glob("*.yaml"))

BACKENDS = [pytest.param(yaml.SafeLoader, id="pure-python")]
if getattr(yaml, "CSafeLoader", None) is not None:
    BACKENDS.append(pytest.param(yaml.CSafeLoader, id="libyaml"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> type[Any]:
    """Run a test once with each PyYAML parser the loader can use."""
    monkeypatch.setattr(yaml_loader, "_LOADER_CLASS", request.param)
    return request.param


def yaml_problems(text: str | bytes, **limits: int) -> list[Problem]:
    """The problems load_yaml reports for text (it must reject it)."""
    with pytest.raises(FlowInvalid) as info:
        load_yaml(text, "flow.yaml", **limits)
    problems = info.value.problems
    assert problems, "an error must carry at least one problem"
    return problems


def yaml_problem(text: str | bytes, **limits: int) -> Problem:
    """The single problem load_yaml reports for text."""
    problems = yaml_problems(text, **limits)
    assert len(problems) == 1, problems
    return problems[0]


def json_problems(text: str | bytes, **limits: int) -> list[Problem]:
    """The problems load_json reports for text (it must reject it)."""
    with pytest.raises(FormInvalid) as info:
        load_json(text, "form.json", **limits)
    assert info.value.problems, "an error must carry at least one problem"
    return info.value.problems


def json_problem(text: str | bytes, **limits: int) -> Problem:
    """The single problem load_json reports for text."""
    problems = json_problems(text, **limits)
    assert len(problems) == 1, problems
    return problems[0]


def where(problem: Problem) -> tuple[int, int]:
    """A problem's (line, column)."""
    return problem.line, problem.column


def char_at(text: str, position: tuple[int, int]) -> str:
    """The character at a 1-based (line, column) of text split on \\n."""
    line, column = position
    return text.split("\n")[line - 1][column - 1]


# --- positions -------------------------------------------------------------------------------

FLOW = """\
id: onboarding
steps:
  - id: call
    next: wait
    cases:
      - when: "x > 1"
        next: done
  - id: wait
    title: 等待客户回电
"""


@pytest.mark.usefixtures("backend")
class TestPositions:
    def test_values_and_keys_in_nested_maps_and_lists(self) -> None:
        located = load_yaml(FLOW, "flow.yaml")
        assert located.data == {
            "id": "onboarding",
            "steps": [
                {"id": "call", "next": "wait", "cases": [{"when": "x > 1", "next": "done"}]},
                {"id": "wait", "title": "等待客户回电"},
            ],
        }
        assert located.positions[()] == (1, 1)
        assert located.positions[("id",)] == (1, 5)
        assert located.key_positions[("id",)] == (1, 1)
        assert located.key_positions[("steps",)] == (2, 1)
        assert located.positions[("steps",)] == (3, 3)
        assert located.positions[("steps", 0)] == (3, 5)
        assert located.positions[("steps", 0, "next")] == (4, 11)
        assert located.key_positions[("steps", 0, "next")] == (4, 5)
        assert located.positions[("steps", 0, "cases", 0, "when")] == (6, 15)
        assert located.key_positions[("steps", 0, "cases", 0, "next")] == (7, 9)
        assert located.positions[("steps", 1, "id")] == (8, 9)
        assert located.positions[("steps", 1, "title")] == (9, 12)

    def test_every_value_has_a_position_and_every_entry_a_key_position(self) -> None:
        located = load_yaml(FLOW, "flow.yaml")
        assert set(located.positions) == set(_paths(located.data))
        assert set(located.key_positions) == {p for p in _paths(located.data) if p and isinstance(p[-1], str)}

    def test_flow_style_positions(self) -> None:
        located = load_yaml("{a: [1, {b: 2}], c: 'x'}", "flow.yaml")
        assert located.positions[("a",)] == (1, 5)
        assert located.positions[("a", 1)] == (1, 9)
        assert located.positions[("a", 1, "b")] == (1, 13)
        assert located.key_positions[("a", 1, "b")] == (1, 10)
        assert located.positions[("c",)] == (1, 21)

    def test_columns_count_characters_not_bytes(self) -> None:
        located = load_yaml("名字: 客户维护\n说明: x\n", "flow.yaml")
        assert located.positions[("名字",)] == (1, 5)
        assert located.key_positions[("说明",)] == (2, 1)

    def test_alias_use_is_located_at_the_alias_and_its_content_at_the_anchor(self) -> None:
        located = load_yaml("defaults: &d\n  retries: 3\nstep:\n  retry: *d\n", "flow.yaml")
        assert located.data == {"defaults": {"retries": 3}, "step": {"retry": {"retries": 3}}}
        assert located.positions[("step", "retry")] == (4, 10)
        assert located.positions[("step", "retry", "retries")] == (2, 12)

    def test_position_falls_back_to_the_nearest_ancestor(self) -> None:
        located = load_yaml(FLOW, "flow.yaml")
        assert located.position(("steps", 0, "missing", "deeper")) == (3, 5)
        assert located.position(["steps", 1]) == (8, 5)
        assert located.position(collections.deque(["steps", 0, "next"])) == (4, 11)
        assert located.position(("nothing",)) == (1, 1)
        assert Located(None, {}, {}).position(("a",)) == (1, 1)

    def test_problems_carry_a_json_path(self) -> None:
        problem = yaml_problem("steps:\n  - id: a\n    next: b\n    next: c\n")
        assert problem.path == "$.steps[0].next"


def _paths(data: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Every path in plain data, the root included."""
    yield prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ((), "$"),
        (("steps", 3, "next"), "$.steps[3].next"),
        (("my key",), '$["my key"]'),
        (("on-call", 0), '$["on-call"][0]'),
        (("3",), '$["3"]'),
        (("名字",), '$["名字"]'),
        (('say "hi"',), '$["say \\"hi\\""]'),
        (["_private", "x1"], "$._private.x1"),
    ],
)
def test_json_path(path: tuple[str | int, ...], expected: str) -> None:
    assert json_path(path) == expected


# --- hostile input ---------------------------------------------------------------------------


@pytest.fixture
def no_process_spawning(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and block) any attempt to run a command while loading."""
    calls: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append(repr(args))
        raise AssertionError(f"the loader tried to run a command: {args!r}")

    monkeypatch.setattr(os, "system", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "check_output", refuse)
    return calls


@pytest.mark.usefixtures("backend")
class TestHostile:
    def test_corpus_is_present(self) -> None:
        assert len(HOSTILE_FILES) >= 20

    @pytest.mark.parametrize("path", HOSTILE_FILES, ids=lambda p: p.stem)
    def test_every_hostile_file_is_rejected_with_located_problems(
        self, path: Path, tmp_path: Path, no_process_spawning: list[str]
    ) -> None:
        canary = tmp_path / "canary"
        text = path.read_text(encoding="utf-8").replace("{canary}", str(canary))
        started = time.process_time()
        with pytest.raises(FlowInvalid) as info:
            load_yaml(text.encode("utf-8"), path.name)
        assert time.process_time() - started < 3.0  # CPU seconds: a bound on work (an exploding input takes minutes), not a timing
        assert info.value.problems
        line_count = text.count("\n") + 1
        for problem in info.value.problems:
            assert problem.source == path.name
            assert 1 <= problem.line <= line_count
            assert problem.column >= 1
            assert problem.message and "Traceback" not in problem.message
            assert problem.path.startswith("$")
        assert not canary.exists()
        assert no_process_spawning == []

    @pytest.mark.parametrize(
        ("text", "position", "tag"),
        [
            ('a: !!python/object/apply:os.system ["touch x"]\n', (1, 4), "!!python/object/apply:os.system"),
            ("a:\n  b: !!python/name:eval\n", (2, 6), "!!python/name:eval"),
            ("- !!python/object/new:subprocess.Popen [[ls]]\n", (1, 3), "!!python/object/new:subprocess.Popen"),
            ("a: !!python/module:os\n", (1, 4), "!!python/module:os"),
            ("a: !include other.yaml\n", (1, 4), "!include"),
            ("a: !!binary aGk=\n", (1, 4), "!!binary"),
            ("a: !!timestamp 2024-01-01\n", (1, 4), "!!timestamp"),
            ("a: !!set {x}\n", (1, 4), "!!set"),
            ('%TAG !p! tag:yaml.org,2002:python/\n---\na: !p!object/apply:os.system ["ls"]\n', (3, 4),
             "!!python/object/apply:os.system"),
        ],
    )
    def test_foreign_tags_are_located_errors(self, text: str, position: tuple[int, int], tag: str) -> None:
        problem = yaml_problem(text)
        assert where(problem) == position
        assert problem.message == f"the tag {tag} is not allowed; remove it"

    def test_every_bad_tag_is_reported(self) -> None:
        problems = yaml_problems("a: !x 1\nb: !y 2\nc: [!z 3]\n")
        assert [(p.line, p.message) for p in problems] == [
            (1, "the tag !x is not allowed; remove it"),
            (2, "the tag !y is not allowed; remove it"),
            (3, "the tag !z is not allowed; remove it"),
        ]

    def test_billion_laughs_9x9_is_rejected_fast_and_small(self) -> None:
        text = (HOSTILE_DIR / "billion_laughs_9x9.yaml").read_text(encoding="utf-8")
        tracemalloc.start()
        started = time.process_time()
        try:
            problem = yaml_problem(text)
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert time.process_time() - started < 3.0  # CPU seconds: a bound on work (an exploding input takes minutes), not a timing
        assert peak < 10_000_000
        assert problem.message == "aliases expand to more than 10,000 values; use fewer aliases"
        assert problem.line <= 5  # stopped early, not after walking the whole graph

    @pytest.mark.parametrize(("levels", "fan_out"), [(10, 2), (30, 2), (9, 9), (3, 100)])
    def test_alias_chains_are_rejected(self, levels: int, fan_out: int) -> None:
        lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
        for level in range(1, levels + 1):
            refs = ",".join([f"*l{level - 1}"] * fan_out)
            lines.append(f"l{level}: &l{level} [{refs}]")
        started = time.process_time()
        problem = yaml_problem("\n".join(lines) + "\n")
        assert time.process_time() - started < 3.0  # CPU seconds: a bound on work (an exploding input takes minutes), not a timing
        assert problem.message.startswith("aliases expand to more than")

    def test_alias_budget_counts_exactly_what_aliases_add(self) -> None:
        text = "a: &a [1, 2]\nb: [*a, *a]\n"  # each *a adds the 3 nodes of [1, 2]
        assert load_yaml(text, "flow.yaml", max_alias_expansion=6).data == {"a": [1, 2], "b": [[1, 2], [1, 2]]}
        problem = yaml_problem(text, max_alias_expansion=5)
        assert where(problem) == (2, 9)
        assert problem.message == "aliases expand to more than 5 values; use fewer aliases"

    def test_aliases_of_a_huge_string_are_rejected(self) -> None:
        text = f"a: &a \"{'x' * 100_000}\"\nb: [{', '.join(['*a'] * 30)}]\n"
        problem = yaml_problem(text)
        assert problem.message == "aliases expand to more than 2,000,000 characters; use fewer aliases"

    def test_large_anchor_free_document_is_not_mistaken_for_a_bomb(self) -> None:
        items = "".join(f"  - id: step_{i}\n    next: step_{i + 1}\n" for i in range(20_000))
        located = load_yaml("steps:\n" + items, "flow.yaml")
        assert len(located.data["steps"]) == 20_000
        assert located.data["steps"][-1] == {"id": "step_19999", "next": "step_20000"}
        assert located.positions[("steps", 19_999, "next")] == (40_001, 11)

    def test_moderate_alias_use_loads_as_independent_copies(self) -> None:
        anchor = "defaults: &d {retries: 3, backoff: [1, 2, 4], notify: {channel: sms}}\n"
        uses = "".join(f"s{i}: *d\n" for i in range(100))
        data = load_yaml(anchor + uses, "flow.yaml").data
        assert data["s99"] == data["defaults"]
        data["s0"]["backoff"].append(8)  # callers may mutate: aliases must not share containers
        assert data["s1"]["backoff"] == [1, 2, 4]

    def test_node_budget(self) -> None:
        nine_items = "".join(f"- {i}\n" for i in range(9))  # 1 list + 9 values = 10 nodes
        assert len(load_yaml(nine_items, "flow.yaml", max_nodes=10).data) == 9
        problem = yaml_problem(nine_items + "- 9\n", max_nodes=10)
        assert where(problem) == (10, 3)
        assert problem.message == "the document has more than 10 values"

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("[" * 10_000 + "]" * 10_000, id="flow-sequences"),
            pytest.param("{a: " * 10_000 + "1" + "}" * 10_000, id="flow-mappings"),
            pytest.param("- " * 10_000 + "x\n", id="block-sequences"),
            pytest.param("".join(" " * i + "a:\n" for i in range(300)) + " " * 300 + "x\n", id="block-mappings"),
        ],
    )
    def test_deep_nesting_is_a_located_error(self, text: str) -> None:
        started = time.process_time()
        problem = yaml_problem(text)  # and no RecursionError escapes
        assert time.process_time() - started < 3.0  # CPU seconds: a bound on work (an exploding input takes minutes), not a timing
        assert problem.line >= 1 and problem.column >= 1
        assert "nest" in problem.message

    def test_depth_limit_boundary(self) -> None:
        assert load_yaml("[" * 100 + "]" * 100, "flow.yaml").data is not None
        problem = yaml_problem("[" * 101 + "]" * 101)
        assert where(problem) == (1, 101)
        assert problem.message == "the document is nested more than 100 levels deep"

    @pytest.mark.parametrize("size", [2_000_001, 10 * 1024 * 1024])
    @pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
    def test_oversized_input_is_rejected_before_parsing(
        self, size: int, as_bytes: bool, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def never(*args: Any) -> None:
            raise AssertionError("the parser must not see an oversized file")

        monkeypatch.setattr(yaml_loader, "_LOADER_CLASS", never)
        text = "a: " + "x" * (size - 3)
        started = time.process_time()
        problem = yaml_problem(text.encode() if as_bytes else text)
        assert time.process_time() - started < 3.0  # CPU seconds: a bound on work (an exploding input takes minutes), not a timing
        assert where(problem) == (1, 1)
        assert problem.message == "the file is too large: the limit is 2,000,000 bytes"

    def test_size_limit_counts_utf8_bytes(self) -> None:
        assert load_yaml("a: 名字", "flow.yaml", max_bytes=9).data == {"a": "名字"}
        assert yaml_problem("a: 名字", max_bytes=8).message == "the file is too large: the limit is 8 bytes"

    def test_recursive_alias(self) -> None:
        problem = yaml_problem((HOSTILE_DIR / "recursive_alias.yaml").read_text(encoding="utf-8"))
        assert where(problem) == (3, 15)
        assert problem.message == "the alias *s is used inside the value it refers to (&s)"

    def test_undefined_alias(self) -> None:
        problem = yaml_problem("steps: *nowhere\n")
        assert where(problem) == (1, 8)
        assert problem.message == "the alias *nowhere refers to an anchor &nowhere that is not defined before it"

    def test_anchor_defined_twice(self) -> None:
        problem = yaml_problem("a: &x 1\nb: &x 2\n")
        assert where(problem) == (2, 4)
        assert problem.message == "the anchor &x is defined twice (first at line 1)"

    def test_problem_count_is_capped(self) -> None:
        problems = yaml_problems("".join(f"k{i}: !bad {i}\n" for i in range(500)))
        assert len(problems) == yaml_loader._MAX_PROBLEMS + 1
        assert any(p.message.startswith("more than 100 problems") for p in problems)


def test_the_default_parser_is_a_safe_one() -> None:
    assert yaml_loader._LOADER_CLASS in (yaml.SafeLoader, getattr(yaml, "CSafeLoader", None))


def test_module_never_uses_an_unsafe_yaml_api() -> None:
    source = Path(yaml_loader.__file__).read_text(encoding="utf-8")
    assert not re.search(r"yaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)\s*\(", source)
    assert not re.search(r"\b(UnsafeLoader|FullLoader|CLoader|CFullLoader|CUnsafeLoader)\b|yaml\.Loader\b", source)
    assert "construct_python" not in source


# --- encoding ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
class TestEncoding:
    def test_invalid_utf8_names_the_byte_offset_and_line(self) -> None:
        problem = yaml_problem(b"a: 1\nb: caf\xe9\n")
        assert where(problem) == (2, 7)
        assert problem.message == "the file is not valid UTF-8: byte 0xe9 at byte offset 11; save it as UTF-8"

    def test_utf16_file_is_rejected_as_not_utf8(self) -> None:
        problem = yaml_problem("a: 1\n".encode("utf-16"))
        assert where(problem) == (1, 1)
        assert "byte 0xff at byte offset 0" in problem.message

    @pytest.mark.parametrize("text", [b"\xef\xbb\xbfa: 1\nb: x\n", "\ufeffa: 1\nb: x\n"], ids=["bytes", "str"])
    def test_bom_is_stripped(self, text: str | bytes) -> None:
        located = load_yaml(text, "flow.yaml")
        assert located.data == {"a": 1, "b": "x"}
        assert located.key_positions[("a",)] == (1, 1)
        assert located.positions[("a",)] == (1, 4)

    @pytest.mark.parametrize(
        "text", ["a: 1\nb: x\x00y\nc: \x00\n", b"a: 1\nb: x\x00y\nc: \x00\n"], ids=["str", "bytes"]
    )
    def test_every_nul_is_a_located_error(self, text: str | bytes) -> None:
        problems = yaml_problems(text)
        assert [where(p) for p in problems] == [(2, 5), (3, 4)]
        assert {p.message for p in problems} == {"NUL characters are not allowed; is this a text file?"}

    @pytest.mark.parametrize(("char", "code"), [("\x07", "U+0007"), ("\x1b", "U+001B"), ("\ud800", "U+D800")])
    def test_control_characters_are_located_errors(self, char: str, code: str) -> None:
        problem = yaml_problem(f"a: 1\nb: x{char}\n")
        assert where(problem) == (2, 5)
        assert problem.message == f"the control character {code} is not allowed"


# --- YAML 1.1 surprises ----------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
class TestScalars:
    @pytest.mark.parametrize(
        ("plain", "expected"),
        [
            *((word, word) for word in ("on", "off", "yes", "no", "y", "n", "Yes", "ON", "NO", "Off", "Y", "N")),
            ("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False),
            ("010", "010"), ("0o17", "0o17"), ("0x1F", "0x1F"), ("007", "007"), ("0123456789", "0123456789"),
            ("0b101", "0b101"), ("1_000", "1_000"), ("+86 138 0000 0000", "+86 138 0000 0000"),
            ("0", 0), ("-5", -5), ("+1", 1), ("1234567890123", 1234567890123),
            ("1.10", 1.1), ("0.5", 0.5), ("-2.50", -2.5), ("1.", 1.0), (".5", 0.5), ("1.0e+3", 1000.0),
            ("1e3", "1e3"), ("00.5", "00.5"),
            ("2024-01-01", "2024-01-01"), ("2024-01-01T09:30:00Z", "2024-01-01T09:30:00Z"),
            ("~", None), ("null", None), ("Null", None), ("NULL", None), ("", None),
            ("09:30", "09:30"), ("12:60", "12:60"), ("9:30am", "9:30am"), ("<<", "<<"), ("=", "="),
        ],
    )
    def test_plain_scalars_resolve_yaml12_style(self, plain: str, expected: Any) -> None:
        value = load_yaml(f"v: {plain}\n", "flow.yaml").data["v"]
        assert value == expected
        assert type(value) is type(expected)

    @pytest.mark.parametrize(("plain", "expected"), [(".inf", math.inf), ("-.inf", -math.inf), (".NaN", math.nan)])
    def test_special_floats(self, plain: str, expected: float) -> None:
        value = load_yaml(f"v: {plain}\n", "flow.yaml").data["v"]
        assert value == expected or (math.isnan(expected) and math.isnan(value))

    def test_yaml11_boolean_words_stay_string_keys(self) -> None:
        data = load_yaml("on: push\nyes: 1\nno: 2\nOff: 3\ny: 4\nn: 5\n", "flow.yaml").data
        assert data == {"on": "push", "yes": 1, "no": 2, "Off": 3, "y": 4, "n": 5}

    @pytest.mark.parametrize(
        ("plain", "number"),
        [("9:30", "570"), ("1:20:30", "4830"), ("-1:30", "-90"), ("+10:05", "605"), ("1:30.5", "90.5")],
    )
    def test_sexagesimal_values_must_be_quoted(self, plain: str, number: str) -> None:
        problem = yaml_problem(f"id: timer\nat: {plain}\n")
        assert where(problem) == (2, 5)
        assert problem.path == "$.at"
        expected = f'the value {plain} would be read as the number {number}; write it in quotes: "{plain}"'
        assert problem.message == expected

    def test_every_sexagesimal_value_is_reported(self) -> None:
        problems = yaml_problems("times: [9:30, '9:30', 10:45]\nat: 1:00:00\n")
        assert [where(p) for p in problems] == [(1, 9), (1, 23), (2, 5)]

    def test_quoted_times_are_text(self) -> None:
        assert load_yaml("at: '9:30'\nto: \"1:20:30\"\n", "flow.yaml").data == {"at": "9:30", "to": "1:20:30"}

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("!!str 010", "010"), ("!!str true", "true"), ('!!int "42"', 42), ("!!int -7", -7),
            ("!!float 1", 1.0), ("!!float 1e3", 1000.0), ("!!float -.5", -0.5), ("!!bool true", True),
            ("!!bool FALSE", False), ("!!null ~", None), ("!!null ''", None), ("! 123", "123"),
            ("!!seq [1]", [1]), ("!!map {a: 1}", {"a": 1}),
        ],
    )
    def test_explicit_standard_tags(self, text: str, expected: Any) -> None:
        value = load_yaml(f"v: {text}\n", "flow.yaml").data["v"]
        assert value == expected
        assert type(value) is type(expected)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("!!int abc", "the value 'abc' is not a valid !!int"),
            ("!!int 1.5", "the value '1.5' is not a valid !!int"),
            ("!!float x", "the value 'x' is not a valid !!float"),
            ("!!bool yes", "the value 'yes' is not a valid !!bool"),
            ("!!null none", "the value 'none' is not a valid !!null"),
            ("!!str [1]", "the tag !!str cannot be used on a list"),
            ("!!map [1]", "the tag !!map cannot be used on a list"),
            ("!!seq {a: 1}", "the tag !!seq cannot be used on a mapping"),
            ("!!map x", "the tag !!map cannot be used on a single value"),
        ],
    )
    def test_explicit_tags_with_wrong_values(self, text: str, message: str) -> None:
        problem = yaml_problem(f"v: {text}\n")
        assert where(problem) == (1, 4)
        assert problem.message == message

    @pytest.mark.parametrize(
        ("text", "position", "message"),
        [
            ("1: x", (2, 3), 'the key 1 would be read as a number, not as text; write it in quotes: "1"'),
            ("1.5: x", (2, 3), 'the key 1.5 would be read as a number, not as text; write it in quotes: "1.5"'),
            ("true: x", (2, 3), 'the key true would be read as a boolean, not as text; write it in quotes: "true"'),
            ("null: x", (2, 3), 'the key null would be read as null, not as text; write it in quotes: "null"'),
            ("~: x", (2, 3), 'the key ~ would be read as null, not as text; write it in quotes: "~"'),
            ("9:30: x", (2, 3), 'the value 9:30 would be read as the number 570; write it in quotes: "9:30"'),
            ("? [a]\n  : x", (2, 5), "a list cannot be used as a key"),
            ("? {a: 1}\n  : x", (2, 5), "a mapping cannot be used as a key"),
            ("!!int 7: x", (2, 3), 'the key 7 would be read as a number, not as text; write it in quotes: "7"'),
        ],
    )
    def test_keys_must_be_text(self, text: str, position: tuple[int, int], message: str) -> None:
        problem = yaml_problem(f"steps:\n  {text}\n")
        assert where(problem) == position
        assert problem.message == message
        assert problem.path == "$.steps"

    def test_every_bad_key_is_reported(self) -> None:
        problems = yaml_problems((HOSTILE_DIR / "non_string_keys.yaml").read_text(encoding="utf-8"))
        assert [where(p) for p in problems] == [(2, 1), (3, 1), (4, 1)]

    def test_quoted_and_tagged_keys_are_text(self) -> None:
        data = load_yaml("'1': a\n\"true\": b\n!!str 3: c\n", "flow.yaml").data
        assert data == {"1": "a", "true": "b", "3": "c"}

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("hello", "hello"),
            ("42", 42),
            ("- a\n- b\n", ["a", "b"]),
            ("", None),
            ("# only a comment\n", None),
            ("---\n", None),
            ("---\n...\n", None),
        ],
    )
    def test_any_root_type_is_returned(self, text: str, expected: Any) -> None:
        located = load_yaml(text, "flow.yaml")
        assert located.data == expected
        if expected is not None:
            assert located.positions[()] == (1, 1)

    def test_only_one_document_per_file(self) -> None:
        problem = yaml_problem("id: first\n---\nid: second\n")
        assert where(problem) == (2, 1)
        assert problem.message == "only one YAML document per file is allowed; a second one starts here"


# PyYAML's emitter writes NEL/LS/PS raw inside quoted scalars, and its own reader folds them into
# spaces (yaml.safe_load is not lossless for them either), so they are left out, as are lone
# surrogates, which no UTF-8 file can hold.
_plain_text = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x85\u2028\u2029"), max_size=20),
    st.sampled_from(
        ["on", "yes", "No", "010", "0o17", "0x1F", "9:30", "1:20:30", "1e3", "1.5e3", "1_000", "2024-01-01",
         "~", "null", "<<", "-.5", ".5", "1.", "+1", "true", "=", "a\tb", "- x", "#", "&a", "*a", "!x"]
    ),
)
_plain_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _plain_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_plain_text, children, max_size=4),
    max_leaves=20,
)


@pytest.mark.usefixtures("backend")
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_plain_data, allow_unicode=st.booleans(), flow=st.sampled_from([None, False, True]))
def test_files_written_by_yaml_safe_dump_load_back_unchanged(data: Any, allow_unicode: bool, flow: bool | None) -> None:
    text = yaml.safe_dump(data, allow_unicode=allow_unicode, default_flow_style=flow)
    assert load_yaml(text, "flow.yaml").data == data


_SEEDS = [FLOW, "a: &a {x: 1}\nb:\n  <<: *a\n  c: [1, 2, {d: e}]\n", "? |\n  block\n: >\n  folded\n"]
_NOISE = st.sampled_from(
    [*":-?[]{},&*!|>'\"%@` \t\n#~", "<<", "\r", "\x85", "\ufeff", "0", "9:30", "!!python/name:x ", "\x00"]
)


@pytest.mark.usefixtures("backend")
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 3), _NOISE), max_size=6),
    as_bytes=st.booleans(),
)
def test_mangled_yaml_never_escapes_as_anything_but_located_problems(
    seed: str, edits: list[tuple[int, int, str]], as_bytes: bool
) -> None:
    text = seed
    for position, length, insert in edits:
        index = position % (len(text) + 1)
        text = text[:index] + insert + text[index + length :]
    try:
        load_yaml(text.encode() if as_bytes else text, "flow.yaml")
    except FlowInvalid as exc:
        assert all(p.line >= 1 and p.column >= 1 and p.message for p in exc.problems)


# --- duplicates and merge keys -----------------------------------------------------------------


@pytest.mark.usefixtures("backend")
class TestDuplicateKeys:
    def test_every_duplicate_is_reported_with_both_positions(self) -> None:
        text = "id: dup\nsteps:\n  - id: a\n    next: b\n    next: c\n    next: d\nid: again\n"
        problems = yaml_problems(text)
        assert [(where(p), p.message, p.path) for p in problems] == [
            ((5, 5), "duplicate key 'next' (first defined at line 4)", "$.steps[0].next"),
            ((6, 5), "duplicate key 'next' (first defined at line 4)", "$.steps[0].next"),
            ((7, 1), "duplicate key 'id' (first defined at line 1)", "$.id"),
        ]

    @pytest.mark.parametrize("text", ["a: 1\n'a': 2\n", "{a: 1, \"a\": 2}", "? a\n: 1\na: 2\n"])
    def test_differently_written_duplicates(self, text: str) -> None:
        assert yaml_problem(text).message == "duplicate key 'a' (first defined at line 1)"

    def test_same_key_in_different_mappings_is_fine(self) -> None:
        assert load_yaml("- a: 1\n- a: 2\n", "flow.yaml").data == [{"a": 1}, {"a": 2}]

    def test_merge_keys_merge_and_explicit_keys_win(self) -> None:
        text = "base: &b {x: 1, y: 2}\nmore: &m {y: 9, z: 3}\nd:\n  <<: [*b, *m]\n  y: 5\n"
        located = load_yaml(text, "flow.yaml")
        assert located.data["d"] == {"x": 1, "y": 5, "z": 3}
        assert located.key_positions[("d", "y")] == (5, 3)
        assert located.key_positions[("d", "x")] == (1, 11)
        assert located.positions[("d", "z")] == (2, 20)

    def test_merge_key_needs_mappings(self) -> None:
        problem = yaml_problem("a:\n  <<: 3\n")
        assert where(problem) == (2, 7)
        assert problem.message == "a merge key '<<' needs a mapping or a list of mappings"

    def test_quoted_merge_key_is_an_ordinary_key(self) -> None:
        assert load_yaml("'<<': {a: 1}\n", "flow.yaml").data == {"<<": {"a": 1}}


# --- syntax errors -----------------------------------------------------------------------------


@pytest.mark.usefixtures("backend")
class TestSyntaxErrors:
    @pytest.mark.parametrize(
        ("text", "position", "path"),
        [
            ("a:\n\tb: 1\n", (2, 1), "$.a"),
            ("a:\n  b: 1\n\tc: 2\n", (3, 1), "$.a"),
            ("steps:\n\t- id: x\n", (2, 1), "$.steps"),
            ("a:\n  - 1\n \t- 2\n", (3, 2), "$.a"),
        ],
    )
    def test_tab_indentation(self, text: str, position: tuple[int, int], path: str) -> None:
        problem = yaml_problem(text)
        assert where(problem) == position
        assert problem.message == "tab characters are not allowed for indentation; use spaces"

    @pytest.mark.parametrize(
        ("text", "position", "fragment"),
        [
            ('id: "unclosed\nsteps: []\n', (3, 1), "quoted scalar that starts at line 1"),
            ("a: 1\nb: 'x\n", (3, 1), "quoted scalar that starts at line 2"),
            ("a:\n  b: 1\n c: 2\n", (3, 2), "block mapping that starts at line 1"),
            ("id: bad\nsteps:\n  - id: a\n     next: b\n", (4, 10), "mapping values are not allowed"),
            ("steps: [a, b\nnext: c\n", (2, 5), "flow sequence that starts at line 1"),
            ("key: [1, 2}\n", (1, 11), "flow sequence"),
            ("a: b: c\n", (1, 5), "mapping values are not allowed"),
            ("a: 1\n- b\n", (2, 1), "block mapping that starts at line 1"),
        ],
    )
    def test_syntax_errors_are_located(self, text: str, position: tuple[int, int], fragment: str) -> None:
        problem = yaml_problem(text)
        assert where(problem) == position
        assert fragment in problem.message

    def test_syntax_error_carries_the_enclosing_path(self) -> None:
        assert yaml_problem("steps: [a, b\nnext: c\n").path == "$.steps[2]"


# --- JSON --------------------------------------------------------------------------------------

FORM = (
    '{\n\t"type": "object",\n\t"properties": {\n'
    '\t\t"name": {"type": "string", "title": "\\u540d\\/\\ud83d\\ude00"},\n'
    '\t\t"age": {"type": "integer", "minimum": -1.5e2}\n'
    '\t},\n\t"required": ["name", "age"]\n}\n'
)


class TestJson:
    def test_happy_path_with_positions(self) -> None:
        located = load_json(FORM, "form.json")
        assert located.data == json.loads(FORM)
        assert located.data["properties"]["name"]["title"] == "名/😀"
        assert located.positions[()] == (1, 1)
        assert located.positions[("type",)] == (2, 10)
        assert located.key_positions[("type",)] == (2, 2)
        assert located.positions[("properties", "name")] == (4, 11)
        assert located.positions[("properties", "name", "title")] == (4, 39)
        assert located.key_positions[("properties", "age", "minimum")] == (5, 30)
        assert located.positions[("properties", "age", "minimum")] == (5, 41)
        assert located.positions[("required", 1)] == (7, 23)

    @pytest.mark.parametrize("text", [b'\xef\xbb\xbf{"a": [1]}', '\ufeff{"a": [1]}'], ids=["bytes", "str"])
    def test_bom_is_stripped(self, text: str | bytes) -> None:
        located = load_json(text, "form.json")
        assert located.data == {"a": [1]}
        assert located.key_positions[("a",)] == (1, 2)

    @pytest.mark.parametrize(
        ("text", "position", "message"),
        [
            ('{\n  "a": 1,\n}', (3, 1), "a trailing comma before '}' is not allowed in JSON"),
            ("[1,]", (1, 4), "a trailing comma before ']' is not allowed in JSON"),
            ('{"a": [1, 2}', (1, 12), "expected ',' or ']'"),
            ('{"a" 1}', (1, 6), "expected ':' after the property name"),
            ("{'a': 1}", (1, 2), "expected a property name in double quotes"),
            ("", (1, 1), "expected a value"),
            ("// comment\n{}", (1, 1), "expected a value"),
            ("a: 1\n", (1, 1), "expected a value"),
            ('{"a": 1} x', (1, 10), "unexpected text after the end of the JSON document"),
            ('{"a": "x\ny"}', (1, 9), "invalid control character"),
            ('{"a": "\\q"}', (1, 8), "invalid \\escape"),
            ('{"a": "abc', (1, 7), "unterminated string"),
            ('{"a": 01}', (1, 8), "expected ',' or '}'"),
        ],
    )
    def test_syntax_errors_are_located_where_json_loads_locates_them(
        self, text: str, position: tuple[int, int], message: str
    ) -> None:
        problem = json_problem(text)
        assert (where(problem), problem.message) == (position, message)
        with pytest.raises(json.JSONDecodeError) as info:
            json.loads(text)
        assert (info.value.lineno, info.value.colno) == position

    @pytest.mark.parametrize("text", ['{"a": NaN}', '[Infinity]', '[-Infinity]'])
    def test_nan_and_infinity_are_rejected(self, text: str) -> None:
        assert json_problem(text).message == "NaN and Infinity are not valid JSON numbers"

    def test_every_duplicate_key_is_reported(self) -> None:
        with pytest.raises(FormInvalid) as info:
            load_json('{"a": 1,\n "a": 2,\n "b": {"c": 1, "c": {"d": 3}}}', "form.json")
        assert [(where(p), p.message, p.path) for p in info.value.problems] == [
            ((2, 2), "duplicate key 'a' (first defined at line 1)", "$.a"),
            ((3, 16), "duplicate key 'c' (first defined at line 3)", "$.b.c"),
        ]

    def test_nul_is_located(self) -> None:
        assert where(json_problem('{"a":\n "\x00"}')) == (2, 3)

    def test_error_class_is_configurable(self) -> None:
        with pytest.raises(FlowInvalid):
            load_json("[", "form.json", error_cls=FlowInvalid)

    def test_deep_nesting_and_node_budget(self) -> None:
        problem = json_problem("[" * 10_000 + "]" * 10_000)
        assert (where(problem), problem.message) == ((1, 101), "the document is nested more than 100 levels deep")
        assert json_problem("[1, 2, 3]", max_nodes=3).message == "the document has more than 3 values"
        assert load_json("[1, 2]", "form.json", max_nodes=3).data == [1, 2]

    def test_oversized_input(self) -> None:
        assert json_problem("[" + "1," * 10 + "1]", max_bytes=20).message.startswith("the file is too large")


_json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25,
)
_json_layout = st.fixed_dictionaries(
    {"indent": st.sampled_from([None, 0, 2, "\t"]), "ensure_ascii": st.booleans(), "sort_keys": st.booleans()}
)
_OPENERS = {dict: "{", list: "["}


@settings(max_examples=200, deadline=None, database=None)
@given(data=_json_data, layout=_json_layout)
def test_load_json_matches_json_loads_and_positions_point_at_values(data: Any, layout: dict[str, Any]) -> None:
    text = json.dumps(data, **layout)
    located = load_json(text, "form.json")
    assert located.data == json.loads(text)
    assert set(located.positions) == set(_paths(located.data))
    for path, position in located.positions.items():
        value = _value_at(located.data, path)
        char = char_at(text, position)
        expected = _OPENERS.get(type(value)) or ('"' if isinstance(value, str) else None)
        if expected is not None:
            assert char == expected, (path, position)
        else:
            assert char in "-0123456789tfn", (path, position)
    for path, position in located.key_positions.items():
        assert char_at(text, position) == '"'


@settings(max_examples=300, deadline=None, database=None)
@given(
    data=_json_data,
    layout=_json_layout,
    cut=st.integers(min_value=0),
    insert=st.sampled_from(list(',:{}[]" -0\n\tx')),
)
@example(data=["NaN"], layout={"indent": None, "ensure_ascii": True, "sort_keys": False}, cut=1, insert="x")
def test_load_json_accepts_and_rejects_exactly_what_json_loads_does(
    data: Any, layout: dict[str, Any], cut: int, insert: str
) -> None:
    text = json.dumps(data, **layout)
    index = cut % (len(text) + 1)
    for mutated in (text[:index] + text[index + 1 :], text[:index] + insert + text[index:]):
        try:
            expected = json.loads(mutated, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant)
        except _Constant:
            # json.loads takes NaN and Infinity (e.g. '["NaN"]' cut to '[NaN"]'); JSON does not.
            assert any("NaN and Infinity" in p.message for p in json_problems(mutated)), mutated
        except json.JSONDecodeError as exc:
            # Duplicate keys before the syntax error are reported too; parsing stops at the latter.
            assert (where(json_problems(mutated)[-1]), mutated) == ((exc.lineno, exc.colno), mutated)
        except _Duplicate:
            with pytest.raises(FormInvalid):
                load_json(mutated, "form.json")
        else:
            assert load_json(mutated, "form.json").data == expected


class _Duplicate(Exception):
    """json.loads saw a duplicate key (which it would otherwise silently overwrite)."""


class _Constant(Exception):
    """json.loads met NaN or Infinity, which it accepts and JSON does not."""


def _refuse_constant(name: str) -> Any:
    raise _Constant(name)


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate
    return dict(pairs)


def _value_at(data: Any, path: tuple[str | int, ...]) -> Any:
    for key in path:
        data = data[key]
    return data

"""Safe, bounded YAML and JSON loading that keeps the line and column of every value.

Flow files are written by operations staff, so every mistake must come back as a located
:class:`~engine.errors.Problem`, and hostile input (code-execution tags, alias bombs, deep
nesting, huge or binary files) must be rejected cheaply.

How YAML is read:

* PyYAML's safe loader (libyaml's when available) only *parses*: we consume its event stream
  and compose the node graph ourselves, iteratively, so nesting depth, node count and alias
  expansion are checked before any Python object exists and deep nesting cannot recurse.
* Python objects are then built by our own walk, which knows only str/int/float/bool/null,
  lists and mappings: any other tag is reported, never constructed.
* Plain scalars follow YAML 1.2 rules: only ``true``/``false`` are booleans (``on``/``yes``
  stay text), integers are decimal without leading zeros (``010``, ``0o17`` stay text), dates
  stay text; sexagesimal values such as ``9:30`` are errors because YAML 1.1 tools read them
  as numbers. Floats need a decimal point, as in PyYAML, so every resolved value is also one
  that ``yaml.safe_dump`` quotes when it is meant as text: dumped files load back unchanged.

JSON (form schemas) is read by a small iterative parser with ``json.loads`` grammar and
string decoding, so it reports the same kind of located problems and positions.
"""

from __future__ import annotations

import bisect
import codecs
import itertools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import yaml

from engine.errors import DefinitionInvalid, FlowInvalid, FormInvalid, Problem
from engine.problem_text import Both, Text, t, yaml_phrase

__all__ = ["Located", "load_yaml", "load_json", "json_path"]

PathKey = tuple[str | int, ...]
Position = tuple[int, int]

# libyaml parses ~20x faster; the pure-Python SafeLoader is the fallback. Only their event
# stream is used, so both give the same data and positions. Tests swap this to cover both.
_LOADER_CLASS: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A hostile file could otherwise produce hundreds of thousands of problems.
_MAX_PROBLEMS = 100

_YAML_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_YAML_TAG + name for name in ("str", "int", "float", "bool", "null"))
_SEQ_TAG, _MAP_TAG, _MERGE_TAG = _YAML_TAG + "seq", _YAML_TAG + "map", _YAML_TAG + "merge"

# Each pattern is a subset of PyYAML's own (YAML 1.1) resolver, so anything yaml.safe_dump leaves
# unquoted as text is text here too. Integers are decimal only: codes like 010 or 0x1F stay text.
_NULL_RE = re.compile(r"~|null|Null|NULL|")
_BOOL_RE = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT_RE = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(
    r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]*(?:[eE][-+][0-9]+)?|\.[0-9]+(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
# An explicit !!float may be written more loosely: 1, 1e3, -.5.
_EXPLICIT_FLOAT_RE = re.compile(
    r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
# Exactly what YAML 1.1 (PyYAML's default resolver) would read as a base-60 number.
_SEXAGESIMAL_RE = re.compile(
    r"[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*"
)
# Plain scalars starting with anything else are always text; skips the regexes for most values.
_MAYBE_NOT_TEXT = frozenset("-+.0123456789~nNtTfF")

# Characters the YAML spec (and PyYAML's reader) refuse; checked up front to locate them ourselves.
_YAML_FORBIDDEN_RE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_YAML_BREAK_RE = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
# JSON's own grammar rejects raw control characters; NUL is checked first only for a clearer message.
_JSON_FORBIDDEN_RE = re.compile("\x00")
_JSON_BREAK_RE = re.compile("\n")  # json.JSONDecodeError counts only \n as a line break
_JSON_WS_RE = re.compile(r"[ \t\n\r]*")
_JSON_NUMBER_RE = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Located:
    """Loaded plain data plus the 1-based (line, column) of each value and each mapping key."""

    data: Any
    positions: Mapping[PathKey, Position]
    key_positions: Mapping[PathKey, Position]

    def position(self, path: Sequence[str | int]) -> Position:
        """Position of the node at path, or of its nearest ancestor that has one ((1, 1) as last resort)."""
        key = tuple(path)
        for end in range(len(key), -1, -1):
            found = self.positions.get(key[:end])
            if found is not None:
                return found
        return (1, 1)


def json_path(path: Sequence[str | int]) -> str:
    """Render a path tuple as a JSON path: ('steps', 3, 'next') -> "$.steps[3].next"."""
    parts = ["$"]
    for item in path:
        if isinstance(item, int) and not isinstance(item, bool):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and _IDENTIFIER_RE.fullmatch(item):
            parts.append(f".{item}")
        else:
            parts.append(f"[{json.dumps(str(item), ensure_ascii=False)}]")
    return "".join(parts)


def load_yaml(
    text: str | bytes,
    source: str,
    *,
    error_cls: type[DefinitionInvalid] = FlowInvalid,
    max_bytes: int = 2_000_000,
    max_nodes: int = 200_000,
    max_depth: int = 100,
    max_alias_expansion: int = 10_000,
) -> Located:
    """Load one YAML document safely; raise error_cls with every located problem found."""
    limits = _Limits(max_bytes, max_nodes, max_depth, max_alias_expansion)
    report = _Report(source)
    located: Located | None = None
    try:
        decoded = _decode(text, limits, report, _YAML_FORBIDDEN_RE, _YAML_BREAK_RE)
        loader = _LOADER_CLASS(decoded)
        try:
            root = _Composer(loader, limits, report, decoded).compose()
        finally:
            loader.dispose()
        located = _Builder(report).build(root)
    except _Fatal:
        pass
    except RecursionError:
        # Our walks are iterative; this only guards against pathological merge-key chains.
        report.add((1, 1), t("yaml.too_deep_unknown"), ())
    if report.problems or located is None:
        raise error_cls(report.finish())
    return located


def load_json(
    text: str | bytes,
    source: str,
    *,
    error_cls: type[DefinitionInvalid] = FormInvalid,
    max_bytes: int = 2_000_000,
    max_nodes: int = 200_000,
    max_depth: int = 100,
    max_alias_expansion: int = 10_000,
) -> Located:
    """Load strict JSON (json.loads grammar, no NaN/Infinity, no duplicate keys) with positions."""
    limits = _Limits(max_bytes, max_nodes, max_depth, max_alias_expansion)
    report = _Report(source)
    located: Located | None = None
    try:
        decoded = _decode(text, limits, report, _JSON_FORBIDDEN_RE, _JSON_BREAK_RE)
        located = _JsonReader(decoded, limits, report).read()
    except _Fatal:
        pass
    if report.problems or located is None:
        raise error_cls(report.finish())
    return located


# --- shared plumbing -------------------------------------------------------------------------


class _Limits(NamedTuple):
    """Resource budgets for one load."""

    max_bytes: int
    max_nodes: int
    max_depth: int
    max_alias_expansion: int


class _Fatal(Exception):
    """Raised internally to stop loading after a problem that makes going on pointless."""


class _Report:
    """Collects problems, dropping repeats (aliased nodes are walked more than once) and capping the count."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self._seen: set[tuple[int, int, str]] = set()
        self._omitted_at: Position | None = None

    def add(self, where: Position, message: Text, path: Sequence[str | int]) -> None:
        """Record one problem at a 1-based position."""
        line, column = where
        if (line, column, message) in self._seen:
            return
        if len(self.problems) >= _MAX_PROBLEMS:
            self._omitted_at = self._omitted_at or where
            return
        self._seen.add((line, column, message))
        self.problems.append(Problem(self.source, line, column, message, json_path(path)))

    def fatal(self, where: Position, message: Text, path: Sequence[str | int]) -> _Fatal:
        """Record a problem and return the exception that stops loading."""
        self.add(where, message, path)
        return _Fatal(message)

    def finish(self) -> list[Problem]:
        """The problems, plus a note when some were left out."""
        if self._omitted_at is None:
            return list(self.problems)
        line, column = self._omitted_at
        note = t("file.too_many_problems", limit=_MAX_PROBLEMS)
        return [*self.problems, Problem(self.source, line, column, note, "$")]


class _LineIndex:
    """Maps character offsets to 1-based (line, column) with binary search."""

    def __init__(self, text: str, breaks: re.Pattern[str]):
        self._starts = [0, *(match.end() for match in breaks.finditer(text))]

    def locate(self, offset: int) -> Position:
        """1-based line and column of a 0-based character offset."""
        line = bisect.bisect_right(self._starts, offset) - 1
        return line + 1, offset - self._starts[line] + 1


def _decode(
    text: str | bytes, limits: _Limits, report: _Report, forbidden: re.Pattern[str], breaks: re.Pattern[str]
) -> str:
    """Check the size, decode UTF-8, drop a BOM and refuse forbidden characters; return the text."""
    # Encoding only a prefix keeps the check cheap even for a huge str.
    head = text if isinstance(text, bytes) else text[: limits.max_bytes + 1].encode("utf-8", "surrogatepass")
    if len(head) > limits.max_bytes:
        raise report.fatal((1, 1), t("file.too_large", limit=limits.max_bytes), ())
    if isinstance(text, bytes):
        text = _decode_utf8(text.removeprefix(codecs.BOM_UTF8), report)
    text = text.removeprefix("\ufeff")
    bad = list(itertools.islice(_iter_forbidden(text, forbidden), _MAX_PROBLEMS + 1))
    if bad:
        index = _LineIndex(text, breaks)
        for offset, message in bad:
            report.add(index.locate(offset), message, ())
        raise _Fatal("control characters")
    return text


def _decode_utf8(raw: bytes, report: _Report) -> str:
    """Decode UTF-8 strictly, locating the first invalid byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        line = raw.count(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        message = t("file.not_utf8", byte=raw[exc.start], offset=exc.start)
        raise report.fatal((line, column), message, ()) from None


def _iter_forbidden(text: str, forbidden: re.Pattern[str]) -> Iterator[tuple[int, Text]]:
    """Offsets and messages for characters the file must not contain."""
    for match in forbidden.finditer(text):
        char = match.group()
        if char == "\x00":
            message = t("file.nul")
        else:
            message = t("file.control_char", code=ord(char))
        yield match.start(), message


def _mark_position(mark: Any) -> Position:
    """1-based position of a PyYAML mark (which is 0-based)."""
    return mark.line + 1, mark.column + 1


# --- YAML: composing the node graph ----------------------------------------------------------

_SCALAR, _SEQ, _MAP = range(3)
_KIND_NAMES = {_SCALAR: Both("a single value", "单个值"), _SEQ: Both("a list", "列表"), _MAP: Both("a mapping", "映射")}


class _Node:
    """A composed YAML node; `size`/`chars` count nodes/characters once every alias inside is expanded."""

    __slots__ = ("kind", "tag", "value", "plain", "line", "column", "size", "chars")

    def __init__(self, kind: int, tag: str | None, value: Any, plain: bool, where: Position):
        self.kind = kind
        self.tag = tag
        self.value = value  # str for scalars; list of items; list of (key, value) item pairs
        self.plain = plain
        self.line, self.column = where
        self.size = 1
        self.chars = len(value) if kind == _SCALAR else 0


class _Alias:
    """A use of an anchor (`*name`); keeps its own position so the use site can be reported."""

    __slots__ = ("target", "name", "line", "column", "size", "chars")

    def __init__(self, target: _Node, name: str, where: Position):
        self.target = target
        self.name = name
        self.line, self.column = where
        self.size = target.size
        self.chars = target.chars


_Item = _Node | _Alias


class _Frame:
    """An open sequence or mapping while its children are being composed."""

    __slots__ = ("node", "anchor", "key")

    def __init__(self, node: _Node, anchor: str | None):
        self.node = node
        self.anchor = anchor
        self.key: _Item | None = None  # a mapping key waiting for its value


class _Composer:
    """Turns parser events into a node graph, enforcing the node, depth and alias budgets as it goes."""

    def __init__(self, loader: Any, limits: _Limits, report: _Report, text: str):
        self._loader = loader
        self._limits = limits
        self._report = report
        self._text = text
        self._stack: list[_Frame] = []
        self._anchors: dict[str, _Node] = {}
        self._anchor_lines: dict[str, int] = {}
        self._nodes = 0
        self._expansion = 0
        self._expanded_chars = 0

    def compose(self) -> _Item | None:
        """Compose the single document of the stream, or None when it is empty."""
        try:
            return self._compose_stream()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = _mark_position(mark) if mark is not None else (1, 1)
            raise self._report.fatal(where, _syntax_message(exc, self._text), self._path()) from None
        except yaml.YAMLError as exc:
            # Reader errors are pre-empted by _decode; this keeps any other parser error located.
            offset = getattr(exc, "position", 0) or 0
            where = _LineIndex(self._text, _YAML_BREAK_RE).locate(min(offset, len(self._text)))
            raise self._report.fatal(where, t("yaml.invalid", detail=str(exc)), ()) from None

    def _compose_stream(self) -> _Item | None:
        """Compose the one document of the stream; a second document is an error."""
        loader = self._loader
        loader.get_event()  # StreamStartEvent
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStartEvent
        root = self._compose_node()
        loader.get_event()  # DocumentEndEvent
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            message = t("yaml.second_document")
            raise self._report.fatal(_mark_position(event.start_mark), message, ())
        return root

    def _compose_node(self) -> _Item:
        """Compose one complete node (with all children) without recursion."""
        stack = self._stack
        while True:
            event = self._loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                item: _Item = self._alias(event)
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                frame = stack.pop()
                item = frame.node
                if frame.anchor is not None:
                    self._anchors[frame.anchor] = frame.node
            elif isinstance(event, yaml.ScalarEvent):
                item = self._new_node(event, _SCALAR, event.value, bool(event.implicit[0]))
            else:
                kind = _SEQ if isinstance(event, yaml.SequenceStartEvent) else _MAP
                self._check_depth(event)
                stack.append(_Frame(self._new_node(event, kind, [], False), event.anchor))
                continue
            if not stack:
                return item
            self._attach(stack[-1], item)

    def _new_node(self, event: Any, kind: int, value: Any, plain: bool) -> _Node:
        """Create a node for an event, counting it and registering its anchor."""
        self._nodes += 1
        where = _mark_position(event.start_mark)
        if self._nodes > self._limits.max_nodes:
            message = t("yaml.too_many_values", limit=self._limits.max_nodes)
            raise self._report.fatal(where, message, self._path())
        node = _Node(kind, event.tag, value, plain, where)
        anchor = event.anchor
        if anchor is not None:
            if anchor in self._anchor_lines:
                message = t("yaml.anchor_twice", name=anchor, first=self._anchor_lines[anchor])
                raise self._report.fatal(where, message, self._path())
            self._anchor_lines[anchor] = where[0]
            if kind == _SCALAR:
                self._anchors[anchor] = node
        return node

    def _check_depth(self, event: Any) -> None:
        """Refuse to open a collection deeper than the depth budget."""
        if len(self._stack) >= self._limits.max_depth:
            message = t("yaml.too_deep", limit=self._limits.max_depth)
            raise self._report.fatal(_mark_position(event.start_mark), message, self._path())

    def _alias(self, event: Any) -> _Alias:
        """Resolve an alias, charging what it expands to against the alias budgets."""
        where = _mark_position(event.start_mark)
        name = event.anchor
        target = self._anchors.get(name)
        if target is None:
            if name in self._anchor_lines:
                message = t("yaml.alias_inside", name=name)
            else:
                message = t("yaml.alias_undefined", name=name)
            raise self._report.fatal(where, message, self._path())
        # Count only what aliases add, so large anchor-free documents are never mistaken for bombs.
        self._expansion += target.size
        # Characters too: a few aliases of one huge string would blow up once serialised.
        self._expanded_chars += target.chars
        if self._expansion > self._limits.max_alias_expansion:
            message = t("yaml.alias_values", limit=self._limits.max_alias_expansion)
        elif self._expanded_chars > self._limits.max_bytes:
            message = t("yaml.alias_chars", limit=self._limits.max_bytes)
        else:
            return _Alias(target, name, where)
        raise self._report.fatal(where, message, self._path())

    @staticmethod
    def _attach(frame: _Frame, item: _Item) -> None:
        """Add a finished child to its open parent, growing the parent's expanded size."""
        node = frame.node
        node.size += item.size
        node.chars += item.chars
        if node.kind == _SEQ:
            node.value.append(item)
        elif frame.key is None:
            frame.key = item
        else:
            node.value.append((frame.key, item))
            frame.key = None

    def _path(self) -> PathKey:
        """Path of the place being composed, for locating syntax and budget errors."""
        path: list[str | int] = []
        for frame in self._stack:
            node = frame.node
            if node.kind == _SEQ:
                path.append(len(node.value))
            elif isinstance(frame.key, _Node) and frame.key.kind == _SCALAR:
                path.append(frame.key.value)
            else:
                break
        return tuple(path)


def _syntax_message(exc: yaml.MarkedYAMLError, text: str) -> Text:
    """A short message for a PyYAML/libyaml syntax error, special-casing tabs."""
    mark = exc.problem_mark
    if mark is not None and 0 <= mark.index < len(text) and text[mark.index] == "\t":
        line_start = max(text.rfind("\n", 0, mark.index), text.rfind("\r", 0, mark.index)) + 1
        if not text[line_start : mark.index].strip(" \t"):
            return t("yaml.tab_indent")
        return t("yaml.tab")
    problem = yaml_phrase(exc.problem or "invalid YAML")
    if not exc.context:
        return t("yaml.syntax", detail=problem)
    context, context_mark = yaml_phrase(exc.context), exc.context_mark
    if context_mark is not None and mark is not None and context_mark.line != mark.line:
        return t("yaml.syntax_in", detail=problem, context=context, line=context_mark.line + 1)
    return t("yaml.syntax_context", detail=problem, context=context)


# --- YAML: building plain Python data --------------------------------------------------------

_INVALID = object()  # a value that could not be built; a problem has been recorded


class _Builder:
    """Builds plain Python data and position maps from a node graph, collecting every problem."""

    def __init__(self, report: _Report):
        self._report = report
        self._positions: dict[PathKey, Position] = {}
        self._key_positions: dict[PathKey, Position] = {}

    def build(self, root: _Item | None) -> Located:
        """Walk the graph iteratively; aliases become copies, so the result is a plain tree."""
        holder: list[Any] = [None]
        work: list[tuple[_Item, PathKey, Any, Any]] = [] if root is None else [(root, (), holder, 0)]
        while work:
            item, path, parent, slot = work.pop()
            self._positions[path] = (item.line, item.column)
            node = item.target if isinstance(item, _Alias) else item
            if node.kind == _SCALAR:
                parent[slot] = self._scalar(node, path)
            elif not self._collection_tag_ok(node, path):
                parent[slot] = None
            elif node.kind == _SEQ:
                items: list[Any] = [None] * len(node.value)
                parent[slot] = items
                # Pushed in reverse so children are visited in document order.
                work.extend((child, (*path, i), items, i) for i, child in reversed(list(enumerate(node.value))))
            else:
                entries = self._entries(node, path)
                mapping: dict[str, Any] = dict.fromkeys(key for key, _ in entries)
                parent[slot] = mapping
                work.extend((value, (*path, key), mapping, key) for key, value in reversed(entries))
        return Located(holder[0], MappingProxyType(self._positions), MappingProxyType(self._key_positions))

    def _collection_tag_ok(self, node: _Node, path: PathKey) -> bool:
        """Whether a list or mapping has no tag or its own standard one; reports otherwise."""
        expected = _SEQ_TAG if node.kind == _SEQ else _MAP_TAG
        if node.tag in (None, "!", expected):
            return True
        self._report.add((node.line, node.column), _tag_message(node.tag, node.kind), path)
        return False

    def _entries(self, node: _Node, path: PathKey) -> list[tuple[str, _Item]]:
        """The (key, value) entries of a mapping after merge keys; records key positions."""
        entries = self._own_entries(node, path)
        for key, _value, key_item in entries:
            self._key_positions[(*path, key)] = (key_item.line, key_item.column)
        return [(key, value) for key, value, _key_item in entries]

    def _own_entries(self, node: _Node, path: PathKey) -> list[tuple[str, _Item, _Item]]:
        """(key, value, key node) triples of a mapping, reporting bad and duplicate keys."""
        first: dict[str, _Item] = {}
        entries: list[tuple[str, _Item, _Item]] = []
        merges: list[_Item] = []
        for key_item, value_item in node.value:
            if _is_merge_key(key_item):
                merges.append(value_item)
                continue
            key = self._key(key_item, path)
            if key is None:
                continue
            if key in first:
                message = t("yaml.duplicate_key", key=key, first=first[key].line)
                self._report.add((key_item.line, key_item.column), message, (*path, key))
                continue
            first[key] = key_item
            entries.append((key, value_item, key_item))
        # Explicit keys win over merged ones, and earlier merge sources over later ones (YAML 1.1 merge).
        for key, value_item, key_item in self._merged(merges, path):
            if key not in first:
                first[key] = key_item
                entries.append((key, value_item, key_item))
        return entries

    def _merged(self, merges: list[_Item], path: PathKey) -> Iterator[tuple[str, _Item, _Item]]:
        """Entries contributed by `<<` merge keys, in precedence order."""
        for merge in merges:
            merge_node = merge.target if isinstance(merge, _Alias) else merge
            sources = merge_node.value if merge_node.kind == _SEQ else [merge]
            for source in sources:
                source_node = source.target if isinstance(source, _Alias) else source
                if source_node.kind != _MAP:
                    message = t("yaml.merge_source")
                    self._report.add((source.line, source.column), message, path)
                    continue
                yield from self._own_entries(source_node, path)

    def _key(self, key_item: _Item, path: PathKey) -> str | None:
        """The text of a mapping key, or None after reporting why it is not usable."""
        node = key_item.target if isinstance(key_item, _Alias) else key_item
        where = (key_item.line, key_item.column)
        if node.kind != _SCALAR:
            self._report.add(where, t("yaml.key_kind", kind=_KIND_NAMES[node.kind]), path)
            return None
        value = self._scalar(node, path, where)
        if isinstance(value, str) or value is _INVALID:
            return value if isinstance(value, str) else None
        self._report.add(where, _non_text_key_message(node.value, value), path)
        return None

    def _scalar(self, node: _Node, path: PathKey, where: Position | None = None) -> Any:
        """The Python value of a scalar node, or _INVALID after reporting a problem."""
        where = where or (node.line, node.column)
        tag, text = node.tag, node.value
        if tag is None:
            return _resolve_plain(text, where, path, self._report) if node.plain else text
        if tag in ("!", _STR):
            return text
        converter = _EXPLICIT_SCALARS.get(tag)
        if converter is None:
            self._report.add(where, _tag_message(tag, _SCALAR), path)
            return _INVALID
        value = converter(text)
        if value is _INVALID:
            self._report.add(where, t("yaml.bad_tagged_value", value=text, tag=_short_tag(tag)), path)
        return value


def _is_merge_key(key_item: _Item) -> bool:
    """Whether a mapping key is the YAML 1.1 merge key `<<` (plain, untagged or !!merge)."""
    node = key_item.target if isinstance(key_item, _Alias) else key_item
    if node.kind != _SCALAR:
        return False
    return node.tag == _MERGE_TAG or (node.tag is None and node.plain and node.value == "<<")


def _resolve_plain(text: str, where: Position, path: PathKey, report: _Report) -> Any:
    """Resolve an untagged plain scalar YAML-1.2 style; sexagesimal numbers are reported."""
    if text and text[0] not in _MAYBE_NOT_TEXT:
        return text
    if _NULL_RE.fullmatch(text):
        return None
    if _BOOL_RE.fullmatch(text):
        return text[0] in "tT"
    if _INT_RE.fullmatch(text):
        return _to_int(text, where, path, report)
    if _FLOAT_RE.fullmatch(text):
        return _to_float(text)
    if _SEXAGESIMAL_RE.fullmatch(text):
        number = _sexagesimal_value(text)
        message = t("yaml.read_as_number", text=text, number=number)
        report.add(where, message, path)
        return _INVALID
    return text


def _to_int(text: str, where: Position, path: PathKey, report: _Report) -> Any:
    """int(text), or _INVALID after reporting a number too long for Python to parse."""
    try:
        return int(text)
    except ValueError:  # Python refuses to parse integers with thousands of digits
        report.add(where, t("yaml.too_many_digits", digits=text[:20]), path)
        return _INVALID


def _to_float(text: str) -> float:
    """float(text), also for YAML's .inf/.nan spellings."""
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    return float(text)


def _sexagesimal_value(text: str) -> int | float:
    """The number YAML 1.1 would make of a base-60 value, for the error message."""
    sign = -1 if text.startswith("-") else 1
    number: int | float = 0
    for part in text.lstrip("+-").replace("_", "").split(":"):
        number = number * 60 + (float(part) if "." in part else int(part))
    return sign * number


def _explicit_int(text: str) -> Any:
    """The value of `!!int text` (decimal digits only), or _INVALID."""
    if not re.fullmatch(r"[-+]?[0-9]+", text):
        return _INVALID
    try:
        return int(text)
    except ValueError:
        return _INVALID


def _explicit_float(text: str) -> Any:
    """The value of `!!float text`, or _INVALID."""
    return _to_float(text) if _EXPLICIT_FLOAT_RE.fullmatch(text) else _INVALID


def _explicit_bool(text: str) -> Any:
    """The value of `!!bool text` (true/false only), or _INVALID."""
    return text[0] in "tT" if _BOOL_RE.fullmatch(text) else _INVALID


def _explicit_null(text: str) -> Any:
    """The value of `!!null text`, or _INVALID."""
    return None if _NULL_RE.fullmatch(text) else _INVALID


_EXPLICIT_SCALARS = {_INT: _explicit_int, _FLOAT: _explicit_float, _BOOL: _explicit_bool, _NULL: _explicit_null}


def _short_tag(tag: str) -> str:
    """A tag as the user wrote it: tag:yaml.org,2002:x -> !!x."""
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


def _tag_message(tag: str, kind: int) -> Text:
    """The message for a tag that is unknown or does not fit the node."""
    if tag in (_STR, _INT, _FLOAT, _BOOL, _NULL, _SEQ_TAG, _MAP_TAG):
        return t("yaml.tag_on_kind", tag=_short_tag(tag), kind=_KIND_NAMES[kind])
    return t("yaml.tag_not_allowed", tag=_short_tag(tag))


def _non_text_key_message(text: str, value: Any) -> Text:
    """The message for a plain key that resolves to something other than text."""
    if text == "" and value is None:
        return t("yaml.empty_key")
    kind = (Both("a boolean", "布尔值") if isinstance(value, bool) else Both("null", "null") if value is None
            else Both("a number", "数字"))
    return t("yaml.key_not_text", text=text, kind=kind)


# --- JSON ------------------------------------------------------------------------------------

_JSON_LITERALS: tuple[tuple[str, Any], ...] = (("true", True), ("false", False), ("null", None))


class _JsonReader:
    """An iterative strict-JSON parser recording positions; strings are decoded by the json module."""

    def __init__(self, text: str, limits: _Limits, report: _Report):
        self._text = text
        self._limits = limits
        self._report = report
        self._lines = _LineIndex(text, _JSON_BREAK_RE)
        self._positions: dict[PathKey, Position] = {}
        self._key_positions: dict[PathKey, Position] = {}
        self._stack: list[tuple[dict[str, Any] | list[Any], PathKey]] = []
        self._nodes = 0
        self._path: PathKey = ()

    def read(self) -> Located:
        """Parse the whole text into data and position maps."""
        holder: list[Any] = [None]
        target: tuple[Any, Any, PathKey] | None = (holder, 0, ())
        index = self._skip_ws(0)
        while target is not None:
            container, slot, self._path = target
            index, target = self._value(index, container, slot)
            if target is None:
                index, target = self._next_target(index)
        if index != len(self._text):
            raise self._fail(index, t("json.trailing_text"))
        return Located(holder[0], MappingProxyType(self._positions), MappingProxyType(self._key_positions))

    def _value(self, index: int, container: Any, slot: Any) -> tuple[int, tuple[Any, Any, PathKey] | None]:
        """Read the value at index into container[slot]; return a child target when a non-empty container opens."""
        path = self._path
        self._positions[path] = self._lines.locate(index)
        self._count(index)
        char = self._text[index : index + 1]
        if char not in ("{", "["):
            container[slot], end = self._scalar(index)
            return end, None
        if len(self._stack) >= self._limits.max_depth:
            raise self._fail(index, t("yaml.too_deep", limit=self._limits.max_depth))
        index = self._skip_ws(index + 1)
        if char == "{":
            obj: dict[str, Any] = {}
            container[slot] = obj
            if self._text.startswith("}", index):
                return index + 1, None
            self._stack.append((obj, path))
            return self._key(index, obj, path)
        items: list[Any] = []
        container[slot] = items
        if self._text.startswith("]", index):
            return index + 1, None
        self._stack.append((items, path))
        items.append(None)
        return index, (items, 0, (*path, 0))

    def _next_target(self, index: int) -> tuple[int, tuple[Any, Any, PathKey] | None]:
        """After a complete value: close finished containers and find the next sibling, if any."""
        while True:
            index = self._skip_ws(index)
            if not self._stack:
                return index, None
            parent, path = self._stack[-1]
            self._path = path
            char = self._text[index : index + 1]
            closer = "}" if isinstance(parent, dict) else "]"
            if char == closer:
                self._stack.pop()
                index += 1
                continue
            if char != ",":
                raise self._fail(index, t("json.expected_comma", closer=closer))
            index = self._skip_ws(index + 1)
            if self._text.startswith(closer, index):
                raise self._fail(index, t("json.trailing_comma", closer=closer))
            if isinstance(parent, dict):
                return self._key(index, parent, path)
            parent.append(None)
            return index, (parent, len(parent) - 1, (*path, len(parent) - 1))

    def _key(self, index: int, obj: dict[str, Any], path: PathKey) -> tuple[int, tuple[Any, Any, PathKey]]:
        """Read `"name":` and return the target for its value; duplicates are reported, not fatal."""
        if not self._text.startswith('"', index):
            raise self._fail(index, t("json.expected_name"))
        key, end = self._string(index)
        where = self._lines.locate(index)
        key_path = (*path, key)
        container: dict[str, Any] = obj
        if key in obj:
            first = self._key_positions[key_path][0]
            self._report.add(where, t("yaml.duplicate_key", key=key, first=first), key_path)
            container = {}  # parse the duplicate's value for syntax, then drop it
        else:
            self._key_positions[key_path] = where
            obj[key] = None
        end = self._skip_ws(end)
        if not self._text.startswith(":", end):
            raise self._fail(end, t("json.expected_colon"))
        return self._skip_ws(end + 1), (container, key, key_path)

    def _scalar(self, index: int) -> tuple[Any, int]:
        """Read a string, literal or number at index; return it and the index after it."""
        text = self._text
        if text.startswith('"', index):
            return self._string(index)
        for word, value in _JSON_LITERALS:
            if text.startswith(word, index):
                return value, index + len(word)
        match = _JSON_NUMBER_RE.match(text, index)
        if match:
            return self._number(match, index), match.end()
        if text.startswith(("NaN", "Infinity", "-Infinity"), index):
            raise self._fail(index, t("json.nan"))
        raise self._fail(index, t("json.expected_value"))

    def _number(self, match: re.Match[str], index: int) -> int | float:
        """Convert a matched JSON number exactly as json.loads does."""
        integer, fraction, exponent = match.groups()
        if fraction or exponent:
            return float(integer + (fraction or "") + (exponent or ""))
        try:
            return int(integer)
        except ValueError:  # more digits than Python's int() accepts
            raise self._fail(index, t("yaml.too_many_digits", digits=integer[:20])) from None

    def _string(self, index: int) -> tuple[str, int]:
        """Decode the JSON string starting at the quote at index."""
        try:
            return json.decoder.scanstring(self._text, index + 1, True)
        except json.JSONDecodeError as exc:
            message = exc.msg.removesuffix(" starting at").removesuffix(" at")
            raise self._fail(exc.pos, t("json.syntax", detail=message[:1].lower() + message[1:])) from None

    def _count(self, index: int) -> None:
        """Count one value against the node budget."""
        self._nodes += 1
        if self._nodes > self._limits.max_nodes:
            raise self._fail(index, t("yaml.too_many_values", limit=self._limits.max_nodes))

    def _skip_ws(self, index: int) -> int:
        """The index of the next non-whitespace character."""
        match = _JSON_WS_RE.match(self._text, index)
        return match.end() if match else index

    def _fail(self, index: int, message: Text) -> _Fatal:
        """Record a fatal problem at a character offset."""
        return self._report.fatal(self._lines.locate(index), message, self._path)

"""Read policy YAML into plain Python values, remembering where every key and value stands.

This is the first step of the loader: text → (value, marks) per document.
It builds values from ruamel.yaml's parser events rather than its
constructors, so nothing but plain data can come out of a file: no Python
tags, no custom tags, no anchors or aliases (so no expansion bombs), no keys
that are not plain text, no duplicate keys, bounded nesting. Scalars follow
the YAML 1.2 core schema (``yes`` stays text; ``1`` is a number).

Positions are 1-based line and column, as an editor shows them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

#: Deepest nesting a policy needs is four; anything far deeper is not a policy.
MAX_DEPTH = 16

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


@dataclass
class Document:
    """One YAML document: its value, and the positions of every key and value in it."""

    value: Any
    start: Pos
    #: path → position of the value at that path
    values: dict[Path, Pos] = field(default_factory=dict)
    #: path → position of the key naming that path (mappings only)
    keys: dict[Path, Pos] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """Something wrong with the text itself, before the policy model sees it."""

    pos: Pos
    message: str


_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})
_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_CORE = "tag:yaml.org,2002:"
_ALLOWED_TAGS = frozenset({None, "!", f"{_CORE}str", f"{_CORE}map", f"{_CORE}seq"})


def _pos(mark: Any) -> Pos:
    return Pos(mark.line + 1, mark.column + 1)


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _scalar(event: ScalarEvent) -> Any:
    """The YAML 1.2 core schema, for plain scalars; quoted scalars are always text."""
    text = event.value
    if event.tag == f"{_CORE}str" or not event.implicit[0]:
        return text
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return text


def find_tabs(text: str) -> list[Problem]:
    """Tabs in indentation: YAML forbids them, and the parser's own message is cryptic."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" \t"))
        where = line.find("\t", 0, indent)
        if where >= 0:
            problems.append(
                Problem(Pos(number, where + 1), "tab in indentation: indent with spaces")
            )
    return problems


class _Frame:
    """A mapping or list being built, and the key waiting for its value."""

    __slots__ = ("anchor", "container", "key", "key_pos", "path")

    def __init__(
        self, container: dict[str, Any] | list[Any], path: Path, anchor: str | None = None
    ) -> None:
        self.container = container
        self.path = path
        self.anchor = anchor
        self.key: str | None = None
        self.key_pos: Pos | None = None


#: With aliases allowed, at most this many values may be reached through them in one text.
MAX_ALIASED = 100_000


def _count_within(value: Any, budget: int) -> int:
    """How many values ``value`` holds (itself included), counting no further than ``budget``."""
    seen, todo = 0, [value]
    while todo and seen <= budget:
        item = todo.pop()
        seen += 1
        if isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return seen


def read_documents(
    text: str, *, aliases: bool = False, kind: str = "policies"
) -> tuple[list[Document], list[Problem]]:
    """Every document in ``text`` with its positions, and every problem found on the way.

    A syntax error ends reading at that point; documents read before it are kept.
    ``aliases`` lets anchors be defined and used again (test cases repeat an app's
    description from step to step), within ``MAX_ALIASED`` values in all, so that
    nested aliases cannot expand into a bomb; a value reached through an alias has
    the alias's position. ``kind`` names what the text holds, in messages.
    """
    problems: list[Problem] = []
    docs: list[Document] = []
    yaml = YAML(typ="safe", pure=True)
    doc: Document | None = None
    stack: list[_Frame] = []
    too_deep = False
    anchored: dict[str, Any] = {}
    aliased = 0

    def place(value: Any, pos: Pos) -> Path | None:
        """Put a finished value where it belongs; None when it was a key or was dropped."""
        assert doc is not None
        if not stack:
            doc.value = value
            doc.values[()] = pos
            return ()
        top = stack[-1]
        if isinstance(top.container, list):
            path = (*top.path, len(top.container))
            top.container.append(value)
        else:
            assert top.key is not None and top.key_pos is not None
            path = (*top.path, top.key)
            top.container[top.key] = value
            doc.keys[path] = top.key_pos
            top.key = top.key_pos = None
        doc.values[path] = pos
        return path

    def expecting_key() -> bool:
        return bool(stack) and isinstance(stack[-1].container, dict) and stack[-1].key is None

    try:
        for event in yaml.parse(text):
            pos = _pos(event.start_mark)

            # Anything beyond plain data is refused where it stands, and the value dropped.
            anchor = getattr(event, "anchor", None)
            if isinstance(event, AliasEvent):
                value = None
                if not aliases:
                    problems.append(Problem(pos, f"aliases (*{anchor}) are not allowed in {kind}"))
                elif anchor not in anchored:
                    problems.append(Problem(pos, f"alias *{anchor} names no finished anchor"))
                else:
                    value = anchored[anchor]
                    aliased += _count_within(value, MAX_ALIASED - aliased)
                    if aliased > MAX_ALIASED:
                        msg = f"aliases expand to more than {MAX_ALIASED} values"
                        problems.append(Problem(pos, msg))
                        return docs, problems
                if expecting_key():
                    if value is not None:
                        problems.append(Problem(pos, "keys must be plain text, not an alias"))
                    continue
                place(value, pos)
                continue
            if anchor is not None and not aliases:
                problems.append(Problem(pos, f"anchors (&{anchor}) are not allowed in {kind}"))
            tag = getattr(event, "tag", None)
            if tag not in _ALLOWED_TAGS:
                problems.append(
                    Problem(pos, f"tag {_show_tag(str(tag))} is not allowed: {kind} are plain data")
                )

            if isinstance(event, DocumentStartEvent):
                doc = Document(value=None, start=pos)
                stack = []
                too_deep = False
                # An anchor names a value of its own document only.
                anchored = {}
            elif isinstance(event, DocumentEndEvent):
                assert doc is not None
                docs.append(doc)
                doc = None
            elif too_deep:
                continue
            elif isinstance(event, ScalarEvent):
                value = _scalar(event)
                if tag not in _ALLOWED_TAGS:
                    value = None
                if expecting_key():
                    top = stack[-1]
                    key = value if isinstance(value, str) else event.value
                    if not isinstance(value, str):
                        problems.append(Problem(pos, f"key {event.value!r} must be text"))
                    assert isinstance(top.container, dict)
                    if key in top.container:
                        problems.append(Problem(pos, f"duplicate key '{key}'"))
                    if key == "<<" and event.style is None:
                        problems.append(Problem(pos, "merge keys (<<) are not supported"))
                    top.key, top.key_pos = key, pos
                else:
                    place(value, pos)
                    if anchor is not None and aliases:
                        anchored[anchor] = value
            elif isinstance(event, MappingStartEvent | SequenceStartEvent):
                if expecting_key():
                    problems.append(Problem(pos, "keys must be plain text, not a mapping or list"))
                    too_deep = True  # skip the rest of this document: its shape is lost
                    continue
                if len(stack) >= MAX_DEPTH:
                    problems.append(Problem(pos, f"nested deeper than {MAX_DEPTH} levels"))
                    too_deep = True
                    continue
                container: dict[str, Any] | list[Any] = (
                    {} if isinstance(event, MappingStartEvent) else []
                )
                path = place(container, pos)
                assert path is not None
                stack.append(_Frame(container, path, anchor if aliases else None))
            elif isinstance(event, MappingEndEvent | SequenceEndEvent):
                # Only a finished container may be aliased: one that holds itself is refused.
                done = stack.pop()
                if done.anchor is not None:
                    anchored[done.anchor] = done.container
    except MarkedYAMLError as exc:
        # A syntax error: say what the parser saw, where it saw it.
        mark = exc.problem_mark or exc.context_mark
        where = _pos(mark) if mark is not None else Pos(1, 1)
        what = exc.problem or exc.context or "cannot parse"
        problems.append(Problem(where, f"YAML syntax error: {what}"))
    except YAMLError as exc:
        # Reader errors (control characters and the like) carry no problem mark.
        problems.append(Problem(Pos(1, 1), f"YAML error: {exc}"))

    return docs, problems

"""Load policy files into ``Policy`` models, with every error at its file, line and column.

This sits between the SREs' YAML and evaluation. Reading is in two steps:
``yamlread`` turns text into plain values with positions (refusing anything
but plain data), then pydantic checks each document against ``Policy``; its
error locations are mapped back to the position of the offending key or
value. All errors are collected, not only the first, so one run of
``healer validate`` shows everything that needs fixing.

A policy set is all or nothing: ``PolicyDirectory.reload`` swaps in the new
set only when the whole directory loads without an error, so a broken file
saved in the middle of the night leaves the last good set running.
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from healer.files import NotRegularFile, read_bounded
from healer.policy.model import Policy
from healer.policy.yamlread import Document, Pos, find_tabs, read_documents

log = structlog.get_logger(__name__)

#: Larger files are refused unread: a policy file is a few kilobytes.
MAX_FILE_BYTES = 256 * 1024

#: The files a policy directory is made of (not its subdirectories: tests live there).
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, order=True)
class PolicyError:
    """One problem in one policy file, printed as ``file:line:col: message``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


@dataclass(frozen=True)
class LoadResult:
    """The policies that loaded and every error found.

    ``policies`` holds the documents that validated even when other documents
    did not; a caller that acts on them must check ``ok`` first.
    """

    policies: list[Policy] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    #: policy name → ``file:line:col`` of its document
    origins: dict[str, str] = field(default_factory=dict)
    #: sha256 over the files' names and bytes: unchanged digest, unchanged policies
    digest: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


# --- error messages -----------------------------------------------------------------------------


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return str(value)


def _model_at(path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model that validates the mapping at ``path``, to list the keys it accepts."""
    model: type[BaseModel] | None = Policy
    for part in path:
        if model is None or isinstance(part, int):
            return None
        found = None
        for name, info in model.model_fields.items():
            if (info.alias or name) == part:
                found = _first_model(info.annotation)
        model = found
    return model


def _first_model(tp: Any) -> type[BaseModel] | None:
    if inspect.isclass(tp) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _message(err: Any, path: tuple[str | int, ...], shown: tuple[str | int, ...]) -> str:
    """A sentence an SRE can act on, for one pydantic error at ``path``.

    ``shown`` is the part of the path the author wrote (``action``, not the
    ``action.type`` that the shorthand ``action: restart`` stands for).
    """
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    where = _dotted(shown)
    inside = f" in '{_dotted(path[:-1])}'" if len(path) > 1 else ""

    if kind == "extra_forbidden":
        model = _model_at(path[:-1])
        expected = f"; expected one of: {', '.join(_keys_of(model))}" if model else ""
        return f"unknown key '{path[-1]}'{inside}{expected}"
    if kind == "missing":
        return f"missing required key '{path[-1]}'{inside}"

    if kind in ("value_error", "policy_rule", "assertion_error"):
        text = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    elif kind == "int_type":
        text = f"expected a whole number, got {_show(value)}"
    elif kind == "bool_type":
        text = f"expected true or false, got {_show(value)}"
    elif kind == "string_type":
        text = f"expected text, got {_show(value)}"
    elif kind == "list_type":
        text = f"expected a list, got {_show(value)}"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        text = f"expected a mapping, got {_show(value)}"
    elif kind in ("float_type", "float_parsing"):
        text = f"expected a number, got {_show(value)}"
    elif kind == "greater_than_equal":
        text = f"must be at least {ctx.get('ge')}, got {_show(value)}"
    elif kind == "too_short" or kind == "string_too_short":
        text = "must not be empty"
    elif kind == "enum":
        expected = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        text = f"{_show(value)} is not one of: {expected}"
    else:
        text = str(err["msg"])

    return f"{where}: {text}" if where else text


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loaded:
    policy: Policy
    file: str
    origin: str
    name_pos: Pos


def position(doc: Document, path: tuple[str | int, ...], *, key: bool) -> Pos:
    """The position of the key (or value) at ``path``, else of the nearest enclosing value."""
    if key and path in doc.keys:
        return doc.keys[path]
    for end in range(len(path), -1, -1):
        if path[:end] in doc.values:
            return doc.values[path[:end]]
    return doc.start


def strip_tags(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # Union branch tags ("[values]", "[not]") name no YAML key.
    return tuple(p for p in loc if not (isinstance(p, str) and p.startswith("[")))


def _validate(doc: Document, filename: str) -> tuple[Policy | None, list[PolicyError]]:
    if not isinstance(doc.value, dict):
        pos = doc.values.get((), doc.start)
        got = _show(doc.value)
        msg = f"a policy must be a mapping (name: ..., when: ..., action: ...), got {got}"
        return None, [PolicyError(filename, pos.line, pos.col, msg)]

    try:
        return Policy.model_validate(doc.value), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            path = strip_tags(err["loc"])
            ctx = err.get("ctx") or {}
            if err["type"] == "policy_rule" and ctx.get("path"):
                path = (*path, *str(ctx["path"]).split("."))
            if err["type"] == "missing":
                pos = position(doc, path[:-1], key=False)
            else:
                pos = position(doc, path, key=err["type"] == "extra_forbidden")
            shown = next(path[:end] for end in range(len(path), -1, -1) if path[:end] in doc.values)
            message = _message(err, path, shown)
            errors.append(PolicyError(filename, pos.line, pos.col, message))
        return None, errors


def _load(text: str, filename: str) -> tuple[list[_Loaded], list[PolicyError]]:
    """Policies with where they were written, and errors, from one file's text."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        msg = f"file is larger than {MAX_FILE_BYTES // 1024} KiB; split it"
        return [], [PolicyError(filename, 1, 1, msg)]
    tabs = find_tabs(text)
    if tabs:
        return [], [PolicyError(filename, t.pos.line, t.pos.col, t.message) for t in tabs]

    docs, problems = read_documents(text)
    errors = [PolicyError(filename, p.pos.line, p.pos.col, p.message) for p in problems]
    if problems:
        # The values are not what the author wrote (a tag or alias was dropped): stop here.
        return [], sorted(errors)

    # An empty document (a trailing `---`) is harmless; a file of nothing is a mistake.
    docs = [d for d in docs if d.value is not None]
    if not docs:
        return [], [PolicyError(filename, 1, 1, "empty file: expected one or more policies")]

    loaded = []
    for doc in docs:
        policy, problems_here = _validate(doc, filename)
        errors.extend(problems_here)
        if policy is not None:
            origin = f"{filename}:{doc.start.line}:{doc.start.col}"
            loaded.append(_Loaded(policy, filename, origin, doc.values.get(("name",), doc.start)))
    return loaded, sorted(errors)


def _load_many(sources: Iterable[tuple[str, str | None, PolicyError | None]]) -> LoadResult:
    loaded: list[_Loaded] = []
    errors: list[PolicyError] = []
    files: list[str] = []
    digest = hashlib.sha256()
    for filename, text, error in sources:
        files.append(filename)
        if error is not None:
            errors.append(error)
            continue
        assert text is not None
        digest.update(filename.encode() + b"\0" + text.encode("utf-8", "surrogatepass") + b"\0")
        these, problems = _load(text, filename)
        errors.extend(problems)
        loaded.extend(these)

    # Names are unique across the whole set: the ledger and metrics key on them.
    origins: dict[str, str] = {}
    policies = []
    for item in loaded:
        name = item.policy.name
        if name in origins:
            msg = f"duplicate policy name '{name}' (first defined at {origins[name]})"
            errors.append(PolicyError(item.file, item.name_pos.line, item.name_pos.col, msg))
            continue
        origins[name] = item.origin
        policies.append(item.policy)
    return LoadResult(policies, errors, files, origins, digest.hexdigest())


def load_text(text: str, filename: str) -> LoadResult:
    """Every policy in one file's text, or the errors, named ``filename``."""
    return _load_many([(filename, text, None)])


def _read(path: Path) -> tuple[str, str | None, PolicyError | None]:
    name = str(path)
    too_large = f"file is larger than {MAX_FILE_BYTES // 1024} KiB; split it"
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except NotRegularFile:
        return name, None, PolicyError(name, 1, 1, "not a regular file")
    except OSError as exc:
        # An unreadable file is an error in the set, not a reason to crash the daemon.
        return name, None, PolicyError(name, 1, 1, f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return name, None, PolicyError(name, 1, 1, too_large)
    try:
        return name, data.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return name, None, PolicyError(name, line, 1, "not UTF-8 text")


def _policy_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.suffix in SUFFIXES and not p.name.startswith(".")
    )


def load_paths(paths: Iterable[str | Path]) -> LoadResult:
    """Files as given, and the ``*.yaml``/``*.yml`` files of directories (not recursively)."""
    sources: list[tuple[str, str | None, PolicyError | None]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = _policy_files(path)
            if not found:
                error = PolicyError(str(path), 1, 1, "no policy files (*.yaml, *.yml) here")
                sources.append((str(path), None, error))
            sources.extend(_read(p) for p in found)
        elif path.exists():
            sources.append(_read(path))
        else:
            sources.append((str(path), None, PolicyError(str(path), 1, 1, "no such file")))
    return _load_many(sources)


def load_directory(path: str | Path) -> LoadResult:
    """Every policy file in one directory, as one set with unique names."""
    return load_paths([path])


class PolicyDirectory:
    """The policies of one directory, reloaded on demand, keeping the last good set.

    ``reload()`` returns the new load result; ``policies`` changes only when
    that result is ``ok``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.policies: list[Policy] = []
        self.digest = ""
        self.last: LoadResult | None = None

    def reload(self) -> LoadResult:
        result = load_directory(self.path)
        self.last = result
        if not result.ok:
            # Said by the caller, which knows whether this is news (the daemon logs
            # `policy_reload_failed` once per new set of errors).
            return result
        if result.digest != self.digest:
            log.info("policies_loaded", path=str(self.path), policies=len(result.policies))
        self.policies = result.policies
        self.digest = result.digest
        return result

"""Reading the YAML files people write (config, policies, tool manifests) with exact error places.

PyYAML forgets where a value came from once it is a Python object, and silently keeps the last of
two equal keys. This module builds the objects from the node tree itself, so every value keeps
its line and column, a duplicate key is an error, and a number with a fraction is read as an exact
``Decimal`` (policies compare money). Pydantic errors are then reported as
``file:line:column: where.in.file: what is wrong; what to write instead``.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from broker.errors import ConfigError

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True)
class Located:
    """A parsed YAML document and where each of its values (and each mapping key) stands."""

    data: Any
    value_marks: dict[Loc, tuple[int, int]]
    key_marks: dict[Loc, tuple[int, int]]

    def where(self, loc: Loc, *, key: bool = False) -> tuple[int, int] | None:
        """The (line, column) of the value at ``loc``, or of its nearest known parent."""
        marks = self.key_marks if key else self.value_marks
        for end in range(len(loc), -1, -1):
            found = marks.get(loc[:end]) or self.value_marks.get(loc[:end])
            if found:
                return found
        return None


def parse_yaml(text: str, path: str) -> Located:
    """Parse one YAML document; a syntax error or duplicate key is a ConfigError with its line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise ConfigError(path, f"not valid YAML: {exc.problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML: {exc}") from None
    value_marks: dict[Loc, tuple[int, int]] = {}
    key_marks: dict[Loc, tuple[int, int]] = {}
    data = None if node is None else _build(node, (), path, value_marks, key_marks)
    return Located(data, value_marks, key_marks)


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _build(
    node: yaml.Node,
    loc: Loc,
    path: str,
    value_marks: dict[Loc, tuple[int, int]],
    key_marks: dict[Loc, tuple[int, int]],
) -> Any:
    value_marks[loc] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(path, "merge keys (<<) are not supported", *_mark(key_node))
            key = _scalar(key_node, path)
            if not isinstance(key, str | int) or isinstance(key, bool):
                raise ConfigError(path, "a key must be a plain word", *_mark(key_node))
            key = str(key)
            if key in result:
                line, column = _mark(key_node)
                raise ConfigError(path, f"duplicate key '{key}'; keep one of them", line, column)
            key_marks[(*loc, key)] = _mark(key_node)
            result[key] = _build(value_node, (*loc, key), path, value_marks, key_marks)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(item, (*loc, index), path, value_marks, key_marks)
            for index, item in enumerate(node.value)
        ]
    return _scalar(node, path)


_SCALARS = yaml.SafeLoader("")


def _scalar(node: yaml.Node, path: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(path, "expected a plain value here", *_mark(node))
    if node.tag == "tag:yaml.org,2002:float":
        try:
            number = Decimal(node.value.replace("_", ""))
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite():
            raise ConfigError(path, f"'{node.value}' is not a finite number", *_mark(node))
        return number
    if node.tag.startswith("tag:yaml.org,2002:"):
        return _SCALARS.construct_object(node)
    raise ConfigError(path, f"tag {node.tag} is not supported", *_mark(node))


def read_located(path: Path) -> Located:
    """Read and parse ``path``; an unreadable file or bad YAML is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc}") from None
    return parse_yaml(text, str(path))


def load_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None) -> M:
    """Read ``path`` and validate it as ``model``; any problem is one ConfigError with its place."""
    return validate_located(read_located(path), str(path), model, context=context)


def validate_located(
    doc: Located, path: str, model: type[M], *, context: dict[str, Any] | None = None
) -> M:
    """Validate a parsed document; the first pydantic error becomes a ConfigError."""
    if not isinstance(doc.data, dict):
        raise ConfigError(path, "the file must be a mapping of keys to values", 1, 1)
    try:
        return model.model_validate(doc.data, context=context)
    except pydantic.ValidationError as exc:
        found = exc.errors(include_url=False)
        # A misspelt key also makes the right key "missing": the typo is the news.
        error = next((e for e in found if e["type"] == "extra_forbidden"), found[0])
        loc: Loc = tuple(error["loc"])
        unknown = error["type"] == "extra_forbidden"
        line, column = doc.where(loc, key=unknown) or (None, None)
        message = _explain(model, loc, error)
        raise ConfigError(path, message, line, column) from None


def _explain(model: type[pydantic.BaseModel], loc: Loc, error: Any) -> str:
    where = dotted(loc)
    if error["type"] == "extra_forbidden":
        allowed = sorted(_fields_at(model, loc[:-1]))
        hint = ""
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            hint = f"; did you mean '{close[0]}'?"
        elif allowed:
            hint = f"; allowed here: {', '.join(allowed)}"
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required, but missing; add it"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def dotted(loc: Loc) -> str:
    """``('grants', 0, 'tool')`` -> ``grants[0].tool``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _fields_at(model: type[pydantic.BaseModel], loc: Loc) -> set[str]:
    """The keys allowed at ``loc`` inside ``model``, as far as the annotations tell."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return set()
    models = [t for t in _unwrap(current) if _is_model(t)]
    return {alias for m in models for alias in _aliases(m)}


def _step(annotation: Any, part: str | int) -> Any:
    for candidate in _unwrap(annotation):
        if _is_model(candidate) and isinstance(part, str):
            for name, field in candidate.model_fields.items():
                if part in (name, field.alias):
                    return field.annotation
        origin = typing.get_origin(candidate)
        args = typing.get_args(candidate)
        if origin in (list, tuple) and isinstance(part, int) and args:
            return args[0]
        if origin is dict and args:
            return args[1]
    return None


def _unwrap(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _unwrap(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _unwrap(arg)
    else:
        yield annotation


def _is_model(candidate: Any) -> bool:
    return isinstance(candidate, type) and issubclass(candidate, pydantic.BaseModel)


def _aliases(model: type[pydantic.BaseModel]) -> Iterator[str]:
    for name, field in model.model_fields.items():
        yield field.alias or name

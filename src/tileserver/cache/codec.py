"""An explicit JSON codec for the frozen dataclasses of `models.py` (never pickle: a shared cache is not
trusted code, and what comes back from it is data to check, not objects to run).

`encode(value)` turns a dataclass (nested ones, enums, tuples, optional values) into JSON-ready values;
`decode(cls, data)` rebuilds it from its type hints and refuses anything that does not fit them (a wrong
type, a missing or extra field, an enum member that does not exist) with `ValueError`. `stable(value)` is
the canonical JSON text of a value, the same in every process (sorted keys, floats as `repr`), which is
what shared cache keys hash: `hash()` differs between processes.

    >>> stable(TileRequest(ident="a.tif", tile=Tile(1, 0, 0)))   # '{"encoder_quality":null,"fmt":"JPEG",...'
    >>> decode(ImageMeta, json.loads(json.dumps(encode(meta)))) == meta   # True
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
MAX_DEPTH = 16  # nesting of a document this codec accepts (ImageMeta needs 4)


def encode(value: Any) -> Any:
    """JSON-ready form: a dataclass as an object of its fields, an enum by member name, a tuple as a list."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    names = _names(type(value))
    if names is not None:
        return {name: encode(getattr(value, name)) for name in names}
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    raise TypeError(f"cannot encode {type(value).__name__}")


def stable(value: Any) -> str:
    """The canonical JSON text of `value` (for keys): sorted keys, no spaces."""
    return json.dumps(encode(value), sort_keys=True, separators=(",", ":"))


def dumps(value: Any) -> bytes:
    return json.dumps(encode(value), separators=(",", ":")).encode()


def loads(cls: type[T], data: bytes) -> T:
    """`cls` from JSON bytes; ValueError for anything that is not exactly a `cls`."""
    try:
        parsed = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    return decode(cls, parsed)


def decode(cls: type[T], data: Any) -> T:
    value: T = _decode(cls, data, 0)
    return value


_NAMES: dict[type, tuple[str, ...] | None] = {}  # a few model classes and builtins: bounded by the code


def _names(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass type; None for any other type."""
    try:
        return _NAMES[cls]
    except KeyError:
        names = tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None
        _NAMES[cls] = names
        return names


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, data: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union(typing.get_args(tp), data, depth)
    if origin is tuple:
        return _tuple(typing.get_args(tp), data, depth)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, data, depth)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if not isinstance(data, str) or data not in tp.__members__:
            raise ValueError(f"not a {tp.__name__}: {data!r:.40}")
        return tp[data]
    return _scalar(tp, data)


def _scalar(tp: Any, data: Any) -> Any:
    if tp is type(None):
        if data is not None:
            raise ValueError("expected null")
        return None
    if tp is bool:
        if not isinstance(data, bool):
            raise ValueError("expected a boolean")
        return data
    if tp is int:
        if not isinstance(data, int) or isinstance(data, bool):
            raise ValueError("expected an integer")
        return data
    if tp is float:
        if not isinstance(data, int | float) or isinstance(data, bool):
            raise ValueError("expected a number")
        return float(data)
    if tp is str:
        if not isinstance(data, str):
            raise ValueError("expected a string")
        return data
    raise ValueError(f"type {tp!r} is not decodable")


def _union(options: tuple[Any, ...], data: Any, depth: int) -> Any:
    if data is None and type(None) in options:
        return None
    for option in options:
        if option is type(None):
            continue
        try:
            return _decode(option, data, depth + 1)
        except ValueError:
            continue
    raise ValueError(f"{data!r:.40} fits none of {options}")


def _tuple(args: tuple[Any, ...], data: Any, depth: int) -> tuple[Any, ...]:
    if not isinstance(data, list):
        raise ValueError("expected a list")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_decode(args[0], v, depth + 1) for v in data)
    if len(args) != len(data):
        raise ValueError(f"expected {len(args)} items, got {len(data)}")
    return tuple(_decode(a, v, depth + 1) for a, v in zip(args, data, strict=True))


def _dataclass(cls: type, data: Any, depth: int) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"expected an object for {cls.__name__}")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    if set(data) != fields:
        raise ValueError(f"{cls.__name__}: fields {sorted(set(data) ^ fields)} do not match")
    hints = _hints(cls)
    return cls(**{name: _decode(hints[name], data[name], depth + 1) for name in fields})

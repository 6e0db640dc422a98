"""Typed loading of nested data (a parsed TOML config, a parsed manifest) into dataclasses.

One mechanism for every file the runtime reads: each dataclass declares its fields once, with
their types and, in ``field(metadata=check(...))``, their allowed values. :func:`build` checks
types (``int``, ``float``, ``str``, ``bool``, ``Any``, ``X | None``, ``list[X]``, ``dict[str, X]``
and nested dataclasses), refuses unknown keys, runs each field's check and bounds every typed
number (finite, magnitude at most ``MAX_NUMBER``; ``Any`` data is left as it is); the first
problem is a :class:`SchemaError` holding the key path and a message, which the caller turns
into its own one-line error.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

MAX_NUMBER = 1e12  # no field needs a larger magnitude; floats must also be finite


class SchemaError(ValueError):
    def __init__(self, keys: tuple, msg: str):
        self.keys, self.msg = keys, msg
        super().__init__(f"{self.dotted()}: {msg}" if keys else msg)

    def dotted(self) -> str:
        return ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in self.keys).replace(".[", "[")


def check(pred, msg: str) -> dict[str, Any]:
    """Field metadata: ``pred(value)`` must hold, else ``msg`` (e.g. "must be between 0 and 1")."""
    return {"check": (pred, msg)}


def choice(*options: str) -> dict[str, Any]:
    return check(lambda v: v in options, f"must be one of {', '.join(options)}")


INDEX = {"index": True}  # a str field that also takes a whole number (camera = 0, device = 2)


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin in (list, dict):
        return {list: "a list", dict: "a table"}[origin]
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _bounded(v: Any, keys: tuple) -> None:
    """Every number of a typed value (lists and tables included) is finite and of a sane magnitude."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if not (math.isfinite(v) and abs(v) <= MAX_NUMBER):
            raise SchemaError(keys, f"must be a finite number of magnitude at most {MAX_NUMBER:g}, got {v!r}")
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _bounded(x, (*keys, i))
    elif isinstance(v, dict):
        for k, x in v.items():
            _bounded(x, (*keys, k))


def _untyped(tp: Any) -> bool:
    """``Any`` somewhere in ``tp`` (free-form data such as a manifest's metrics): not bounded."""
    return tp is Any or any(_untyped(a) for a in typing.get_args(tp))


def convert(tp: Any, value: Any, keys: tuple = ()) -> Any:
    """``value`` as type ``tp``; SchemaError naming ``keys`` if it is not one."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        for a in args:
            try:
                return convert(a, value, keys)
            except SchemaError:
                if len(args) == 1:
                    raise
        raise SchemaError(keys, f"must be {type_name(tp)}, got {value!r:.80}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SchemaError(keys, f"must be a table, got {value!r:.80}")
        return build(typing.cast(type, tp), value, keys)
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(keys, f"must be a list, got {value!r:.80}")
        (item,) = typing.get_args(tp)
        return [convert(item, v, (*keys, i)) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(keys, f"must be a table, got {value!r:.80}")
        _, vt = typing.get_args(tp)
        return {str(k): convert(vt, v, (*keys, str(k))) for k, v in value.items()}
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise SchemaError(keys, f"must be {type_name(tp)}, got {value!r:.80}")


def build(cls: type, data: dict[str, Any], keys: tuple = ()) -> Any:
    """An instance of dataclass ``cls`` from ``data``; SchemaError on the first problem.

        Fields with ``metadata={"internal": True}`` are not keys of the data. A class with an
        ``extra_tables()`` classmethod ({key: dataclass}) also takes those keys, built into its ``more``
        dict (tables of plug-ins that declare their own config). A ValueError raised by the class
        itself (``__post_init__``) is a SchemaError at ``keys``; a SchemaError it raises names its key
    below ``keys``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    extra: dict[str, type] = cls.extra_tables() if hasattr(cls, "extra_tables") else {}
    for k in data:
        if k not in fields and k not in extra:
            raise SchemaError((*keys, k), f"unknown key (known here: {', '.join([*fields, *extra])})")
    for name, f in fields.items():
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in data:
            raise SchemaError((*keys, name), "is required here")
    kwargs: dict[str, Any] = {}
    more = {k: convert(extra[k], v, (*keys, k)) for k, v in data.items() if k not in fields}
    for name, value in ((k, v) for k, v in data.items() if k in fields):
        meta = fields[name].metadata
        if meta.get("index") and type(value) is int:
            value = str(value)
        v = convert(hints[name], value, (*keys, name))
        pred = meta.get("check")
        if pred and v is not None and not pred[0](v):
            raise SchemaError((*keys, name), f"{pred[1]}, got {value!r:.80}")
        if not _untyped(hints[name]):
            _bounded(v, (*keys, name))
        kwargs[name] = v
    if more:
        kwargs["more"] = more
    try:
        return cls(**kwargs)
    except SchemaError as e:  # the class names the key itself (``__post_init__``)
        raise SchemaError((*keys, *e.keys), e.msg) from None
    except (ValueError, TypeError) as e:
        raise SchemaError(keys, str(e)) from None

"""Check and convert one override value against a dataclass field's type (used by ``overrides.py``).

Values come from YAML parsing of ``key=value`` text, so they are already bool/int/float/str/None/list/dict;
this module only converts what has one obvious meaning and rejects the rest::

    coerce("bf16", torch.dtype)          -> torch.bfloat16
    coerce(3, float)                      -> 3.0
    coerce("torch.nn.functional.silu", Callable) -> the function
    coerce("abc", int)                    -> TypeError
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import sys
import types
import typing
from typing import Any

import torch

from sft_bridge_port.config import serialization

DTYPE_ALIASES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
    "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}
NO_HINT = object()


def field_hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass' fields; a hint that cannot be resolved maps to ``NO_HINT``."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - forward refs under TYPE_CHECKING in third-party classes
        pass
    hints: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = f.type
        if isinstance(hint, str):
            owner = next((k for k in cls.__mro__ if f.name in getattr(k, "__annotations__", {})), cls)
            try:
                hint = eval(hint, vars(sys.modules[owner.__module__]))  # noqa: S307 - annotation text
            except Exception:  # noqa: BLE001
                hint = NO_HINT
        hints[f.name] = hint
    return hints


def parse_dtype(value: Any) -> torch.dtype:
    """``"bf16"``, ``"bfloat16"`` or ``"torch.bfloat16"`` -> ``torch.bfloat16``."""
    if isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        key = value.removeprefix("torch.")
        if key in DTYPE_ALIASES:
            return DTYPE_ALIASES[key]
        if isinstance(getattr(torch, key, None), torch.dtype):
            return getattr(torch, key)
    raise TypeError(f"expected a torch dtype such as bf16 / torch.bfloat16, got {value!r}")


def coerce(value: Any, hint: Any, current: Any = None) -> Any:
    """Return ``value`` converted to ``hint`` (falls back to the current value's type when there is no hint).

    Raises:
        TypeError: the value does not fit; the message says what was expected.
    """
    if hint is NO_HINT or hint is Any or hint is typing.Any:
        return _coerce_like(value, current)
    if value is None:
        if _allows_none(hint):
            return None
        raise TypeError(f"expected {_name(hint)}, got None")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, hint)
    if origin is typing.Literal:
        for choice in typing.get_args(hint):
            if value == choice or str(value) == str(choice):
                return choice
        raise TypeError(f"expected one of {list(typing.get_args(hint))}, got {value!r}")
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence, tuple):
        return _coerce_sequence(value, hint, origin)
    if origin in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise TypeError(f"expected a mapping {{key: value}}, got {value!r}")
        return value
    if origin is collections.abc.Callable or hint is collections.abc.Callable or hint is typing.Callable:
        return _coerce_callable(value)
    if isinstance(hint, type):
        return _coerce_type(value, hint)
    return value  # TypeVar, NewType, ...: nothing sensible to check


def _coerce_type(value: Any, hint: type) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif hint is torch.dtype:
        return parse_dtype(value)
    elif issubclass(hint, enum.Enum):
        return _coerce_enum(value, hint)
    elif isinstance(value, hint):
        return value
    elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return serialization.from_dict({serialization.TARGET: serialization.import_path(hint), **value})
    elif isinstance(value, str):
        obj = _try_resolve(value)
        if isinstance(obj, hint) or (isinstance(obj, type) and issubclass(obj, hint)):
            return obj
    raise TypeError(f"expected {_name(hint)}, got {type(value).__name__} {value!r}")


def _coerce_enum(value: Any, hint: type[enum.Enum]) -> enum.Enum:
    if isinstance(value, hint):
        return value
    if isinstance(value, str) and value.split(".")[-1] in hint.__members__:
        return hint[value.split(".")[-1]]
    try:
        return hint(value)
    except ValueError:
        raise TypeError(f"expected one of {list(hint.__members__)}, got {value!r}") from None


def _coerce_union(value: Any, hint: Any) -> Any:
    arms = [a for a in typing.get_args(hint) if a is not type(None)]
    # Exact-type arms first so 1 stays an int in `int | float` and "x" stays a str in `str | Callable`.
    arms.sort(key=lambda a: 0 if isinstance(a, type) and type(value) is a else 1)
    errors = []
    for arm in arms:
        try:
            return coerce(value, arm)
        except TypeError as err:
            errors.append(str(err))
    raise TypeError(" or ".join(dict.fromkeys(errors)))


def _coerce_sequence(value: Any, hint: Any, origin: Any) -> Any:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list like [a, b], got {value!r}")
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    item_hint = args[0] if len(args) == 1 or origin is not tuple else NO_HINT
    items = [coerce(v, item_hint) if item_hint is not NO_HINT else v for v in value]
    return tuple(items) if origin is tuple else items


def _coerce_callable(value: Any) -> Any:
    if callable(value):
        return value
    if isinstance(value, str):
        obj = _try_resolve(value)
        if callable(obj):
            return obj
    raise TypeError(f"expected a callable or its import path (e.g. torch.nn.functional.silu), got {value!r}")


def _coerce_like(value: Any, current: Any) -> Any:
    """No usable annotation: keep the current value's kind (dtype, number, bool)."""
    if value is None or current is None:
        return value
    if isinstance(current, torch.dtype):
        return parse_dtype(value)
    if isinstance(current, (bool, int, float, str, enum.Enum)):
        return _coerce_type(value, type(current) if not isinstance(current, enum.Enum) else type(current))
    return value


def _allows_none(hint: Any) -> bool:
    return hint is type(None) or (
        typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    )


def _try_resolve(path: str) -> Any:
    try:
        return serialization.resolve(path)
    except ImportError:
        return None


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)

"""Dataclass configs <-> plain dicts / YAML with Hydra-style ``_target_`` keys (Bridge's ``run_config.yaml``).

Works on any dataclass (ConfigContainer, a megatron-core ``TransformerConfig`` subclass, dataset and PEFT
configs). What each Python value becomes::

    TrainingConfig(train_iters=10)     -> {_target_: sft_bridge_port.config.training_configs.TrainingConfig,
                                           train_iters: 10, ...}        # every init field
    torch.bfloat16                     -> {_target_: torch.bfloat16, _call_: false}
    torch.nn.functional.silu           -> {_target_: torch.nn.functional.silu, _call_: false}
    partial(torch.nn.init.normal_, mean=0.0, std=0.02)
                                       -> {_target_: torch.nn.init.normal_, _partial_: true, mean: 0.0, std: 0.02}
    AttnBackend.auto                   -> {_target_: megatron.core.transformer.enums.AttnBackend, _args_: [5]}
    (1, 2)                             -> {_target_: builtins.tuple, _args_: [[1, 2]]}
    Path("/x")                         -> {_target_: pathlib.Path, _args_: [/x]}

``from_dict`` inverts this exactly. A value with no import path (a lambda, a local class instance) cannot be
written: ``to_dict(strict=True)`` raises, the default writes None and logs a warning, so saving a checkpoint
never fails on an exotic callable. Files written by Megatron-Bridge (``_target_: megatron.bridge...``) load
when the class has a same-named counterpart in sft_bridge_port.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import importlib
import logging
import pathlib
from typing import Any

import torch
import yaml

logger = logging.getLogger(__name__)

TARGET, CALL, PARTIAL, ARGS = "_target_", "_call_", "_partial_", "_args_"
_FALLBACK_MODULES = ("torch.nn.functional", "torch", "math", "operator")
# Where a Megatron-Bridge class name is looked up when a YAML file names ``megatron.bridge.*``.
_BRIDGE_COUNTERPARTS = ("sft_bridge_port.config", "sft_bridge_port.models", "sft_bridge_port.data", "sft_bridge_port.peft")


def resolve(path: str) -> Any:
    """Import ``"pkg.module.Attr.sub"``: the longest importable module prefix, then attributes.

    Raises:
        ImportError: nothing importable under that path (the message names the path).
    """
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            return obj
        except AttributeError:
            break
    if path.startswith("megatron.bridge."):
        return _bridge_counterpart(path)
    raise ImportError(f"cannot import {path!r} named in a _target_ key")


def _bridge_counterpart(path: str) -> Any:
    name = path.rsplit(".", 1)[-1]
    for module_name in _BRIDGE_COUNTERPARTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise ImportError(f"_target_ {path!r} is a Megatron-Bridge name with no counterpart in sft_bridge_port")


def import_path(obj: Any) -> str | None:
    """The dotted path under which ``obj`` can be imported again, or None.

    Example: ``import_path(torch.nn.functional.gelu) == "torch.nn.functional.gelu"`` (a C builtin whose
    ``__module__`` is not importable is found through the public modules in ``_FALLBACK_MODULES``).
    """
    if isinstance(obj, torch.dtype):
        return str(obj)  # "torch.bfloat16"
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    candidates = [f"{module}.{qualname}"] if module and qualname and "<" not in qualname else []
    name = getattr(obj, "__name__", None)
    if name and "<" not in name:
        public = [f"{m}.{name}" for m in _FALLBACK_MODULES]
        # Prefer a public spelling over a private module (F.gelu's __module__ is "torch._C._nn").
        candidates = public + candidates if module and "._" in module else candidates + public
    for path in candidates:
        try:
            if resolve(path) is obj:
                return path
        except ImportError:
            continue
    return None


def to_dict(obj: Any, *, strict: bool = False) -> Any:
    """Convert a (nested) config object into YAML-safe Python values with ``_target_`` keys."""
    if obj is None or isinstance(obj, (bool, int, float, str)) and not isinstance(obj, enum.Enum):
        return obj
    if isinstance(obj, torch.dtype):
        return {TARGET: import_path(obj), CALL: False}
    if isinstance(obj, enum.Enum):
        return {TARGET: _path_or_fail(type(obj), strict), ARGS: [to_dict(obj.value, strict=strict)]}
    if isinstance(obj, list):
        return [to_dict(v, strict=strict) for v in obj]
    if isinstance(obj, tuple):
        return {TARGET: "builtins.tuple", ARGS: [[to_dict(v, strict=strict) for v in obj]]}
    if isinstance(obj, dict):
        return {_check_key(k): to_dict(v, strict=strict) for k, v in obj.items()}
    if isinstance(obj, pathlib.PurePath):
        return {TARGET: "pathlib.Path", ARGS: [str(obj)]}
    if isinstance(obj, functools.partial):
        out = {TARGET: _path_or_fail(obj.func, strict), PARTIAL: True}
        if obj.args:
            out[ARGS] = [to_dict(a, strict=strict) for a in obj.args]
        out.update({k: to_dict(v, strict=strict) for k, v in obj.keywords.items()})
        return out if out[TARGET] else _unserialisable(obj, strict)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        path = _path_or_fail(type(obj), strict)
        if path is None:
            return None
        out = {TARGET: path}
        for f in dataclasses.fields(obj):
            if f.init:
                out[f.name] = to_dict(getattr(obj, f.name), strict=strict)
        return out
    path = import_path(obj)
    return {TARGET: path, CALL: False} if path else _unserialisable(obj, strict)


def _check_key(key: Any) -> str:
    if not isinstance(key, str):
        raise TypeError(f"to_dict: dict key {key!r} is not a string; YAML configs need string keys")
    return key


def _path_or_fail(obj: Any, strict: bool) -> str | None:
    path = import_path(obj)
    if path is None:
        _unserialisable(obj, strict)
    return path


def _unserialisable(obj: Any, strict: bool) -> None:
    message = f"{obj!r} has no import path, so it cannot be written to YAML; define it at module level"
    if strict:
        raise TypeError(message)
    logger.warning("to_dict: writing None for %s", message)
    return None


def from_dict(data: Any) -> Any:
    """Rebuild objects from :func:`to_dict` output (inverse: ``from_dict(to_dict(x))`` equals ``x``).

    Raises:
        ImportError: a ``_target_`` cannot be imported.
        TypeError: a dataclass entry has a key that is not one of its init fields.
    """
    if isinstance(data, list):
        return [from_dict(v) for v in data]
    if not isinstance(data, dict):
        return data
    if TARGET not in data:
        return {k: from_dict(v) for k, v in data.items()}
    target = resolve(data[TARGET])
    if data.get(CALL) is False:
        return target
    args = [from_dict(a) for a in data.get(ARGS, [])]
    kwargs = {k: from_dict(v) for k, v in data.items() if k not in (TARGET, CALL, PARTIAL, ARGS)}
    if data.get(PARTIAL):
        return functools.partial(target, *args, **kwargs)
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        _check_fields(target, kwargs, data[TARGET])
        return _restore_fields(target(*args, **kwargs), kwargs)
    return target(*args, **kwargs)


def _restore_fields(obj: Any, values: dict[str, Any]) -> Any:
    """Undo what ``__post_init__`` derived over written values, so reading gives back exactly what was written.

    Example: megatron-core's ``TransformerConfig.__post_init__`` sets ``autocast_dtype`` from ``params_dtype``
    when it was None; the written None must stay None.
    """
    if getattr(type(obj), "__dataclass_params__").frozen:
        return obj
    for name, value in values.items():
        if getattr(obj, name) is not value:
            setattr(obj, name, value)
    return obj


def _check_fields(cls: type, kwargs: dict[str, Any], target: str) -> None:
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in kwargs:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{target} has no field {key!r}{hint}")


def to_yaml(obj: Any) -> str:
    """YAML text of :func:`to_dict` (keys in field order)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False, width=120)


def yaml_to_dict(text: str) -> Any:
    """Parse YAML text into plain values (``_target_`` keys kept; use :func:`from_dict` to build objects)."""
    return yaml.safe_load(text)


def from_yaml(path_or_text: str | pathlib.Path) -> Any:
    """Build the objects described by a YAML file path (or YAML text when it is not an existing file)."""
    candidate = pathlib.Path(path_or_text)
    is_file = "\n" not in str(path_or_text) and candidate.is_file()
    return from_dict(yaml_to_dict(candidate.read_text() if is_file else str(path_or_text)))

"""YAML files and Hydra-style ``a.b.c=value`` overrides applied onto a config (priority CLI > YAML > recipe).

Example::

    cfg = llama32_1b_peft_config()
    process_config_with_overrides(cfg, "my.yaml", ["train.train_iters=100", "optimizer.lr=1e-5",
                                                   "model.params_dtype=bf16", "peft=null"])

Values are parsed as YAML (``null``, ``true``, ``[1, 2]``, ``{a: 1}``; ``1e-5`` is a float), then checked
against the field's type. An unknown key or a value of the wrong type raises naming the full key and, for
unknown keys, the closest valid one; nothing is silently ignored.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, Sequence

import yaml

from sft_bridge_port.config import serialization, typecheck


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``"train.train_iters=100"`` into ``("train.train_iters", 100)``.

    Raises:
        ValueError: no ``=``, or an empty key.
    """
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("+")
    if not sep or not key:
        raise ValueError(f"override {text!r} must look like key.subkey=value (e.g. train.train_iters=100)")
    return key, parse_value(raw.strip())


def parse_value(raw: str) -> Any:
    """YAML scalar/list/dict parsing, plus ``1e-5``-style floats and ``None`` that YAML 1.1 reads as strings."""
    if raw == "":
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        if value in ("None", "none"):
            return None
        try:
            return float(value) if any(c in value for c in ".eE") and value[0] in "+-.0123456789" else value
        except ValueError:
            return value
    return value


def apply_override(cfg: Any, key: str, value: Any) -> None:
    """Set ``cfg.<key>`` (dotted) to ``value`` after checking the key exists and the type fits."""
    parts = key.split(".")
    obj = cfg
    for depth, part in enumerate(parts[:-1]):
        obj = _child(obj, part, ".".join(parts[: depth + 1]))
    _assign(obj, parts[-1], value, key)


def apply_mapping(cfg: Any, mapping: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested dict (a YAML file) into ``cfg``: dicts recurse into existing sub-configs, leaves are set.

    A dict with a ``_target_`` naming the current object's class is merged; another ``_target_`` replaces
    the object (built with :func:`serialization.from_dict`).
    """
    for key, value in mapping.items():
        if key == serialization.TARGET and not prefix:
            continue
        dotted = f"{prefix}{key}"
        current = _child(cfg, key, dotted) if _is_dataclass(cfg) or isinstance(cfg, dict) else None
        if isinstance(value, dict) and (_is_dataclass(current) or isinstance(current, dict)):
            target = value.get(serialization.TARGET)
            if target is None or target == serialization.import_path(type(current)):
                apply_mapping(current, {k: v for k, v in value.items() if k != serialization.TARGET}, dotted + ".")
                continue
        _assign(cfg, key, serialization.from_dict(value), dotted)


def process_config_with_overrides(
    cfg: Any, config_filepath: str | os.PathLike | None = None, cli_overrides: Sequence[str] | None = None
) -> Any:
    """Apply a YAML file, then command-line overrides, onto ``cfg`` in place and return it (Bridge's API)."""
    if config_filepath is not None:
        path = Path(config_filepath)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(path)!r} must hold a mapping of sections (train:, model:, ...)")
        apply_mapping(cfg, data)
    for text in cli_overrides or ():
        key, value = parse_override(text)
        apply_override(cfg, key, value)
    return cfg


def _is_dataclass(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _valid_keys(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return list(obj)
    return [f.name for f in dataclasses.fields(obj) if f.init]


def _unknown(obj: Any, key: str, dotted: str) -> ValueError:
    keys = _valid_keys(obj)
    close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
    parent = dotted.rpartition(".")[0]
    hint = f" Did you mean '{(parent + '.' if parent else '') + close[0]}'?" if close else ""
    listing = f" Valid keys here: {', '.join(keys)}" if len(keys) <= 40 else ""
    return ValueError(f"unknown config key '{dotted}'.{hint}{listing}")


def _child(obj: Any, key: str, dotted: str) -> Any:
    if obj is None:
        parent = dotted.rpartition(".")[0]
        raise ValueError(f"cannot set '{dotted}': its parent is None (set '{parent}' to an object first)")
    if isinstance(obj, dict):
        if key not in obj:
            raise _unknown(obj, key, dotted)
        return obj[key]
    if not _is_dataclass(obj):
        raise ValueError(f"cannot descend into '{dotted}': {type(obj).__name__} is not a config section")
    if key not in _valid_keys(obj):
        raise _unknown(obj, key, dotted)
    return getattr(obj, key)


def _assign(obj: Any, key: str, value: Any, dotted: str) -> None:
    if isinstance(obj, dict):
        obj[key] = value
        return
    if obj is None:
        parent = dotted.rpartition(".")[0]
        raise ValueError(f"cannot set '{dotted}': its parent is None (set '{parent}' to an object first)")
    if not _is_dataclass(obj):
        raise ValueError(f"cannot set '{dotted}': its parent is not a config section")
    if key not in _valid_keys(obj):
        raise _unknown(obj, key, dotted)
    value = _special_value(dotted, value)
    current = getattr(obj, key)
    field = next(f for f in dataclasses.fields(obj) if f.name == key)
    hint = typecheck.field_hints(type(obj)).get(key, typecheck.NO_HINT)
    if value is None and (current is None or field.default is None):
        setattr(obj, key, None)
        return
    try:
        value = typecheck.coerce(value, hint, current)
    except TypeError as err:
        raise TypeError(f"bad value for '{dotted}': {err}") from None
    setattr(obj, key, value)


def _special_value(dotted: str, value: Any) -> Any:
    """``peft=lora`` / ``peft=dora`` build the scheme's default PEFT object, as recipes do."""
    if dotted == "peft" and isinstance(value, str):
        from sft_bridge_port.peft import default_peft_config  # lazy: peft sits beside config

        return default_peft_config(value)
    return value


"""Small configs shared by the config tests (a 2-layer model; no I/O)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from sft_bridge_port.config import ConfigContainer, OptimizerConfig, TrainingConfig


def tiny_model(**overrides: Any) -> Any:
    """A GPTModelProvider when the models package provides one, else megatron-core's TransformerConfig."""
    try:
        from sft_bridge_port.models import GPTModelProvider

        return GPTModelProvider(num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=128,
                                seq_length=64, **overrides)
    except ImportError:  # pragma: no cover - only before the models package exists
        from megatron.core.transformer import TransformerConfig

        return TransformerConfig(num_layers=2, hidden_size=64, num_attention_heads=4, **overrides)


def tiny_container(**overrides: Any) -> ConfigContainer:
    """A valid container: 10 iterations, GBS 8, MBS 1, lr 1e-4."""
    kwargs = dict(
        train=TrainingConfig(train_iters=10, global_batch_size=8, micro_batch_size=1),
        model=tiny_model(),
        optimizer=OptimizerConfig(lr=1e-4, min_lr=0.0),
    )
    kwargs.update(overrides)
    return ConfigContainer(**kwargs)


def assert_same(a: Any, b: Any, path: str = "cfg") -> None:
    """Field-by-field equality that also compares functools.partial by function, args and keywords."""
    if isinstance(a, functools.partial):
        assert isinstance(b, functools.partial), path
        assert (a.func, a.args, a.keywords) == (b.func, b.args, b.keywords), path
    elif dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
        for f in dataclasses.fields(a):
            if f.init:
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    else:
        assert a == b and type(a) is type(b), f"{path}: {a!r} != {b!r}"

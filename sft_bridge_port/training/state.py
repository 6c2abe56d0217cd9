"""Run state passed explicitly through the engine (Bridge's ``GlobalState`` / ``TrainState``).

``GlobalState`` is a plain container: reading an attribute never creates a logger, a directory or a process
group. ``setup()`` fills it once; forward steps read ``state.cfg`` and add their FLOP statistics to
``state.flops``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass
class TrainState:
    """Counters saved in ``train_state.pt`` (names and meaning as in Bridge)."""

    step: int = 0
    consumed_train_samples: int = 0
    skipped_train_samples: int = 0
    consumed_valid_samples: int = 0
    floating_point_operations_so_far: float = 0.0
    do_train: bool = False
    do_valid: bool = False
    do_test: bool = False

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so ``torch.load(..., weights_only=True)`` reads it back (Bridge stores tensors too)."""
        out: dict[str, torch.Tensor] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool):
                out[field.name] = torch.tensor(value, dtype=torch.bool)
            elif isinstance(value, int):
                out[field.name] = torch.tensor(value, dtype=torch.int64)
            else:
                out[field.name] = torch.tensor(value, dtype=torch.float64)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accept tensors or Python scalars; unknown keys are ignored, missing keys keep their value."""
        for field in dataclasses.fields(self):
            if field.name not in state:
                continue
            value = state[field.name]
            if isinstance(value, torch.Tensor):
                value = value.item()
            kind = type(getattr(self, field.name))
            setattr(self, field.name, kind(value))


@dataclasses.dataclass
class FlopsStats:
    """Real-token statistics of the micro-batches seen since the last reset (filled by forward steps).

    ``num_tokens`` counts non-padding tokens, ``seqlen_sq_sum`` is the sum of squared real sub-sequence lengths
    (the causal-attention FLOP term). Both are Python numbers computed from host-side batch data: no sync.
    """

    num_tokens: int = 0
    seqlen_sq_sum: int = 0
    num_microbatches: int = 0

    def add(self, lengths: list[int]) -> None:
        self.num_tokens += sum(lengths)
        self.seqlen_sq_sum += sum(n * n for n in lengths)
        self.num_microbatches += 1

    def reset(self) -> None:
        self.num_tokens = self.seqlen_sq_sum = self.num_microbatches = 0


@dataclasses.dataclass
class GlobalState:
    """Everything a run shares: config, tokenizer, counters, loggers.

    Attributes:
        cfg: the ConfigContainer (after ``runtime_config_update``).
        tokenizer: the HF tokenizer, or None when the run has no data pipeline (tests).
        train_state: step and consumed-sample counters (checkpointed).
        flops: real-token statistics filled by the forward step, read and reset by the loop.
        metrics: the :class:`~sft_bridge_port.training.metrics.MetricsLogger` (console/jsonl/TB/W&B), or None.
        run_dir: where ``metrics.jsonl`` and the loss curve go.
    """

    cfg: Any = None
    tokenizer: Any = None
    train_state: TrainState = dataclasses.field(default_factory=TrainState)
    flops: FlopsStats = dataclasses.field(default_factory=FlopsStats)
    metrics: Any = None
    run_dir: Any = None
    timers: Any = None
    tensorboard_logger: Any = None
    wandb_logger: Any = None

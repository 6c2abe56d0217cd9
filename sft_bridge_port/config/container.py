"""``ConfigContainer``: the whole run configuration, with Megatron-Bridge v0.5's fields.

A recipe returns one; users change fields as attributes, YAML files or ``a.b=c`` overrides, then
``runtime_config_update(cfg)`` resolves effective values once and validates. Example::

    cfg = llama3_8b_sft_config()
    cfg.train.train_iters = 100
    yaml_text = cfg.to_yaml()                     # run_config.yaml style, with _target_ keys
    assert ConfigContainer.from_yaml_text(yaml_text).to_dict() == cfg.to_dict()
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sft_bridge_port.config import serialization
from sft_bridge_port.config.comm_overlap import CommOverlapConfig
from sft_bridge_port.config.io_configs import CheckpointConfig, LoggerConfig, TokenizerConfig
from sft_bridge_port.config.mcore_configs import DistributedDataParallelConfig, OptimizerConfig
from sft_bridge_port.config.mixed_precision import MixedPrecisionConfig
from sft_bridge_port.config.system_configs import (
    DistributedInitConfig,
    ProfilingConfig,
    RerunStateMachineConfig,
    RNGConfig,
)
from sft_bridge_port.config.training_configs import SchedulerConfig, TrainingConfig, ValidationConfig


@dataclass(kw_only=True)
class ConfigContainer:
    """Every setting of a finetuning run, grouped as in Megatron-Bridge.

    ``model`` is a model provider (``sft_bridge_port.models.GPTModelProvider``, a megatron-core
    ``TransformerConfig`` subclass); ``dataset`` a dataset config from ``sft_bridge_port.data``; ``peft``
    a PEFT object from ``sft_bridge_port.peft`` or None for full finetuning; ``mixed_precision`` a preset
    name such as ``"bf16_mixed"``, a :class:`MixedPrecisionConfig` or None (keep the model's dtypes).
    ``data_parallel_size`` is derived by ``runtime_config_update`` and is not serialised.
    """

    rng: RNGConfig = field(default_factory=RNGConfig)
    rerun_state_machine: RerunStateMachineConfig = field(default_factory=RerunStateMachineConfig)
    train: TrainingConfig
    model: Any
    optimizer: OptimizerConfig
    ddp: DistributedDataParallelConfig = field(default_factory=DistributedDataParallelConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    dataset: Any = None
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    dist: DistributedInitConfig = field(default_factory=DistributedInitConfig)
    profiling: ProfilingConfig = field(default_factory=ProfilingConfig)
    peft: Any = None
    comm_overlap: Optional[CommOverlapConfig] = None
    mixed_precision: MixedPrecisionConfig | str | None = None
    data_parallel_size: Optional[int] = field(default=None, init=False, repr=False, compare=False)

    # -- serialisation (Bridge's Container API) ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested dict with a ``_target_`` key per object (see :mod:`sft_bridge_port.config.serialization`)."""
        return serialization.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConfigContainer":
        """Rebuild a container from :meth:`to_dict` output (``_target_`` keys may be omitted at the top)."""
        data = dict(data)
        data.setdefault("_target_", serialization.import_path(cls))
        obj = serialization.from_dict(data)
        if not isinstance(obj, ConfigContainer):
            raise TypeError(f"from_dict: _target_ {data['_target_']!r} is not a ConfigContainer")
        return obj

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """Return the YAML text and, when ``path`` is given, write it there too."""
        text = serialization.to_yaml(self)
        if path is not None:
            Path(path).write_text(text)
        return text

    def print_yaml(self) -> None:
        """Print the YAML of this config (Bridge's ``print_yaml``)."""
        print(self.to_yaml())

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "ConfigContainer":
        """Read a YAML file written by :meth:`to_yaml` (e.g. a checkpoint's ``run_config.yaml``)."""
        return cls.from_yaml_text(Path(path).read_text())

    @classmethod
    def from_yaml_text(cls, text: str) -> "ConfigContainer":
        """Like :meth:`from_yaml`, from a string."""
        return cls.from_dict(serialization.yaml_to_dict(text))

    # -- derived values (Bridge's helpers) --------------------------------------------------------
    def get_data_parallel_size(self, world_size: int) -> int:
        """World size divided by the model-parallel size (TP x PP x CP)."""
        from sft_bridge_port.config.runtime import data_parallel_size

        return data_parallel_size(self, world_size)

    def validate(self) -> None:
        """Check cross-field rules without changing anything (``runtime_config_update`` calls this)."""
        from sft_bridge_port.config.runtime import validate

        validate(self)

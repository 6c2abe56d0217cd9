"""megatron-core's ``OptimizerConfig`` and ``DistributedDataParallelConfig`` with validation deferred.

megatron-core validates these in ``__post_init__`` (e.g. OptimizerConfig asserts its ``*_dtype`` fields are fp32
unless the precision-aware optimizer is on, and derives ``use_precision_aware_optimizer_no_fp8_or_ds_fp8``).
Bridge recipes build a config and then change fields, so, like Bridge, we subclass only to move that check to
``finalize()``, which ``runtime_config_update`` calls once. The fields, defaults and ``isinstance`` relation to
the megatron-core classes are unchanged, so megatron-core's optimizer and DDP accept these objects as they are.
"""

from __future__ import annotations

from megatron.core.distributed import DistributedDataParallelConfig as MCoreDistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig as MCoreOptimizerConfig


class OptimizerConfig(MCoreOptimizerConfig):
    """megatron-core ``OptimizerConfig`` whose validation runs in :meth:`finalize`, not at construction."""

    def __post_init__(self) -> None:  # deferred: see finalize()
        pass

    def finalize(self) -> None:
        """Run megatron-core's checks and derived attributes (idempotent)."""
        super().__post_init__()


class DistributedDataParallelConfig(MCoreDistributedDataParallelConfig):
    """megatron-core ``DistributedDataParallelConfig`` whose validation runs in :meth:`finalize`."""

    def __post_init__(self) -> None:  # deferred: see finalize()
        pass

    def finalize(self) -> None:
        """Run megatron-core's checks (idempotent)."""
        super().__post_init__()

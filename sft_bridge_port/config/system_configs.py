"""Process-level sub-configs: RNG, distributed init, rerun state machine, profiling (Bridge's names and defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal, Optional


@dataclass(kw_only=True)
class RNGConfig:
    """Random seeds (``cfg.rng``). Bridge recipes use ``seed=5678``."""

    seed: int = 1234
    te_rng_tracker: bool = False
    inference_rng_tracker: bool = False
    data_parallel_random_init: bool = False


def _local_rank_from_env() -> int:
    return int(os.getenv("LOCAL_RANK", "0"))


@dataclass(kw_only=True)
class DistributedInitConfig:
    """How torch.distributed is initialised (``cfg.dist``). On a machine without a GPU the backend becomes gloo."""

    distributed_backend: Literal["nccl", "gloo"] = "nccl"
    distributed_timeout_minutes: int = 10
    align_grad_reduce: bool = True
    local_rank: int = field(default_factory=_local_rank_from_env)
    lazy_mpu_init: bool = False
    use_megatron_fsdp: bool = False
    use_torch_fsdp2: bool = False
    nccl_communicator_config_path: Optional[str] = None
    use_tp_pp_dp_mapping: bool = False
    use_gloo_process_groups: bool = True
    use_sharp: bool = False
    high_priority_stream_groups: list[str] = field(default_factory=list)
    disable_jit_fuser: bool = False
    external_gpu_device_mapping: bool = False
    enable_megatron_core_experimental: bool = False
    use_decentralized_pg: bool = False
    eval_context_parallel_size: Optional[int] = None

    @property
    def lazy_init(self) -> bool:
        """Bridge's alias of ``lazy_mpu_init``."""
        return self.lazy_mpu_init


@dataclass(kw_only=True)
class RerunStateMachineConfig:
    """NaN / spiky-loss checks of the loss function (``cfg.rerun_state_machine``).

    A NaN or Inf loss is fatal when ``check_for_nan_in_loss``; a loss above ``spiky_loss_factor`` x the
    running mean is reported (not fatal) when ``check_for_spiky_loss``.
    """

    error_injection_rate: int = 0
    error_injection_type: Literal["correct_result", "transient_error", "persistent_error"] = "transient_error"
    rerun_mode: Literal["disabled", "validate_results", "report_stats"] = "disabled"
    check_for_nan_in_loss: bool = True
    check_for_spiky_loss: bool = False
    spiky_loss_factor: float = 10.0


@dataclass(kw_only=True)
class ProfilingConfig:
    """Optional nsys / PyTorch profiler window (``cfg.profiling``)."""

    use_nsys_profiler: bool = False
    profile_step_start: int = 10
    profile_step_end: int = 12
    use_pytorch_profiler: bool = False
    profile_ranks: list[int] = field(default_factory=lambda: [0])
    record_memory_history: bool = False
    memory_snapshot_path: str = "snapshot.pickle"
    record_shapes: bool = False
    nvtx_ranges: bool = False

"""Run configuration with Megatron-Bridge's surface: ``ConfigContainer``, sub-configs, YAML, overrides.

``from sft_bridge_port.config import ConfigContainer, TrainingConfig, ...`` replaces
``from megatron.bridge.training.config import ...``.
"""

from sft_bridge_port.config.comm_overlap import CommOverlapConfig
from sft_bridge_port.config.container import ConfigContainer
from sft_bridge_port.config.io_configs import CheckpointConfig, LoggerConfig, TokenizerConfig
from sft_bridge_port.config.mcore_configs import DistributedDataParallelConfig, OptimizerConfig
from sft_bridge_port.config.mixed_precision import (
    MIXED_PRECISION_RECIPES,
    MixedPrecisionConfig,
    bf16_mixed,
    bf16_pure,
    bf16_with_fp8_current_scaling_mixed,
    bf16_with_fp8_delayed_scaling_mixed,
    bf16_with_fp8_subchannel_scaling_mixed,
    bf16_with_mxfp8_mixed,
    fp16_mixed,
    get_mixed_precision_config,
)
from sft_bridge_port.config.overrides import apply_override, parse_override, process_config_with_overrides
from sft_bridge_port.config.runtime import runtime_config_update, validate
from sft_bridge_port.config.serialization import from_dict, from_yaml, to_dict, to_yaml
from sft_bridge_port.config.system_configs import (
    DistributedInitConfig,
    ProfilingConfig,
    RerunStateMachineConfig,
    RNGConfig,
)
from sft_bridge_port.config.training_configs import SchedulerConfig, TrainingConfig, ValidationConfig

__all__ = [
    "CheckpointConfig", "CommOverlapConfig", "ConfigContainer", "DistributedDataParallelConfig",
    "DistributedInitConfig", "LoggerConfig", "MIXED_PRECISION_RECIPES", "MixedPrecisionConfig", "OptimizerConfig",
    "ProfilingConfig", "RNGConfig", "RerunStateMachineConfig", "SchedulerConfig", "TokenizerConfig",
    "TrainingConfig", "ValidationConfig", "apply_override", "bf16_mixed", "bf16_pure",
    "bf16_with_fp8_current_scaling_mixed",
    "bf16_with_fp8_delayed_scaling_mixed", "bf16_with_fp8_subchannel_scaling_mixed", "bf16_with_mxfp8_mixed",
    "fp16_mixed", "from_dict", "from_yaml", "get_mixed_precision_config", "parse_override",
    "process_config_with_overrides", "runtime_config_update", "to_dict", "to_yaml", "validate",
]

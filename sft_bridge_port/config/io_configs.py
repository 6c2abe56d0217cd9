"""Sub-configs for what a run reads and writes: logging, checkpoints, tokenizer (Bridge's names and defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass(kw_only=True)
class LoggerConfig:
    """Console / TensorBoard / W&B logging (``cfg.logger``)."""

    log_interval: int = 100
    log_params_norm: bool = False
    log_throughput: bool = False
    log_throughput_to_tensorboard: bool = False
    throughput_window_size: int = 100
    log_progress: bool = False
    timing_log_level: Literal[0, 1, 2] = 0
    timing_log_option: Literal["max", "minmax", "all"] = "minmax"
    tensorboard_dir: Optional[str] = None
    tensorboard_log_interval: int = 1
    tensorboard_queue_size: int = 1000
    log_timers_to_tensorboard: bool = False
    log_loss_scale_to_tensorboard: bool = True
    log_validation_ppl_to_tensorboard: bool = False
    log_memory_to_tensorboard: bool = False
    log_l2_norm_grad_to_tensorboard: bool = False
    log_runtime_to_tensorboard: bool = False
    log_world_size_to_tensorboard: bool = False
    wandb_project: Optional[str] = None
    wandb_exp_name: Optional[str] = None
    wandb_save_dir: Optional[str] = None
    wandb_entity: Optional[str] = None
    logging_level: Optional[int] = None
    filter_warnings: bool = True
    modules_to_filter: Optional[list[str]] = None
    set_level_for_all_loggers: bool = False
    log_energy: bool = False
    save_config_filepath: Optional[str] = None
    skip_train_metrics_log: bool = False


@dataclass(kw_only=True)
class CheckpointConfig:
    """Where and how checkpoints are saved and loaded (``cfg.checkpoint``).

    ``pretrained_checkpoint`` is the starting weights for finetuning: a folder holding
    ``latest_checkpointed_iteration.txt`` or one ``iter_*`` folder. ``load`` resumes a run (weights,
    optimizer and train state); finetuning needs at least one of the two.
    """

    save: Optional[str] = None
    save_interval: Optional[int] = None
    most_recent_k: int = -1
    save_optim: bool = True
    save_rng: bool = True
    load: Optional[str] = None
    load_optim: bool = True
    load_main_params_from_ckpt: bool = False
    load_rng: bool = True
    non_persistent_save_interval: Optional[int] = None
    non_persistent_ckpt_type: Optional[Literal["global", "local", "in_memory"]] = None
    non_persistent_global_ckpt_dir: Optional[str] = None
    non_persistent_local_ckpt_dir: Optional[str] = None
    non_persistent_local_ckpt_algo: Literal["fully_parallel", "atomic"] = "fully_parallel"
    finetune: bool = False
    pretrained_checkpoint: Optional[str] = None
    ckpt_step: Optional[int] = None
    use_checkpoint_args: bool = False
    exit_on_missing_checkpoint: bool = False
    ckpt_format: Literal["torch_dist", "zarr", "fsdp_dtensor"] = "torch_dist"
    ckpt_convert_format: Optional[str] = None
    ckpt_convert_save: Optional[str] = None
    fully_parallel_save: bool = True
    async_save: bool = False
    fully_parallel_load: bool = False
    ckpt_assume_constant_structure: bool = False
    dist_ckpt_strictness: str = "assume_ok_unexpected"
    dist_ckpt_optim_fully_reshardable: bool = False
    save_tokenizer_assets: bool = True
    replication: bool = False
    storage_writers_per_rank: int = 1
    use_persistent_ckpt_worker: bool = True
    strict_fsdp_dtensor_load: bool = False


@dataclass(kw_only=True)
class TokenizerConfig:
    """Which tokenizer the run uses (``cfg.tokenizer``).

    For SFT the tokenizer is a Hugging Face one: ``tokenizer_type="HuggingFaceTokenizer"`` and
    ``tokenizer_model`` a local folder or hub id (recipes set it to their ``hf_path``).
    """

    tokenizer_type: Optional[str] = None
    tokenizer_model: Optional[str] = None
    vocab_size: Optional[int] = None
    padded_vocab_size: Optional[int] = None
    pad_vocab_size: bool = True
    vocab_file: Optional[str] = None
    merge_file: Optional[str] = None
    vocab_extra_ids: int = 0
    metadata_path: Optional[dict[str, Any]] = None
    special_tokens: Optional[list[str]] = None
    tokenizer_hf_no_use_fast: bool = False
    trust_remote_code: bool = False
    null_tokenizer_eod_id: Optional[int] = None
    null_tokenizer_pad_id: int = -1
    chat_template: Optional[str] = None
    make_vocab_size_divisible_by: int = 1
    tensor_model_parallel_size: int = 1
    rank: int = 0
    use_tokenizer_vocab_size: bool = False
    hf_tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    sp_tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    tokenizer_prompt_format: Optional[str] = None
    image_tag_type: Optional[str] = None
    force_system_message: bool = False

"""Save, resume and warm-start in Bridge's checkpoint layout (torch_dist; see ``utils.ckpt_layout``).

``<save>/iter_0000010/`` holds, through megatron-core ``dist_checkpointing``: the model (``"model"`` or
``"model0".."modelN"``), the optimizer (``"optimizer"``), the LR scheduler (``"opt_param_scheduler"``) and each
rank's RNG state (``"rng_state"``), plus ``train_state.pt``, ``run_config.yaml`` and ``tokenizer/``. The folder is
written under a temporary name and renamed when complete; only then are ``latest_checkpointed_iteration.txt``
and ``latest_train_state.pt`` updated, so a kill during a save leaves the previous checkpoint usable.

Because torch_dist stores global tensors, a checkpoint written at one TP/PP loads at another. RNG states are
per (PP, TP) rank and are restored only when the layout matches (Megatron-LM does the same).

With ``cfg.peft`` set, the model part holds only the adapters (``peft.adapter_sharded_state_dict``) and the
optimizer state covers only them (the frozen base weights never reach the optimizer); the base weights come
from ``checkpoint.pretrained_checkpoint`` when the run is resumed.
"""

from __future__ import annotations

import contextlib
import logging
import random
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from sft_bridge_port.peft import adapter_key_filter, adapter_sharded_state_dict
from sft_bridge_port.utils import ckpt_layout
from sft_bridge_port.utils.dist_ckpt import model_sharded_state_dict, save_sharded, unwrap

logger = logging.getLogger(__name__)

DIST_OPT_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}
CHECKPOINT_VERSION = 3.0


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _broadcast_object(obj: Any) -> Any:
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _layout() -> dict[str, int]:
    from megatron.core import parallel_state as ps

    return {"tp": ps.get_tensor_model_parallel_world_size(), "pp": ps.get_pipeline_model_parallel_world_size()}


def _rng_sharded_object():
    """This rank's Python/NumPy/torch/model-parallel RNG states as a ShardedObject keyed by (PP, TP) rank."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    state = {
        "random_rng_state": random.getstate(),
        "np_rng_state": np.random.get_state(),
        "torch_rng_state": torch.get_rng_state(),
        "cuda_rng_state": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "rng_tracker_states": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }
    pp, tp = ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()
    shape = (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size())
    return ShardedObject("rng_state", [state], shape, (pp, tp), replica_id=ps.get_data_parallel_rank(with_context_parallel=True))


def _restore_rng(state: dict[str, Any]) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["random_rng_state"])
    np.random.set_state(state["np_rng_state"])
    torch.set_rng_state(state["torch_rng_state"])
    if torch.cuda.is_available() and state.get("cuda_rng_state") is not None:
        torch.cuda.set_rng_state(state["cuda_rng_state"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["rng_tracker_states"])


def _uses_dist_optimizer(optimizer: Any) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    return any(isinstance(o, DistributedOptimizer) for o in chained)


def _ensure_optimizer_state(optimizer: Any) -> None:
    """Give a fresh distributed optimizer its (dummy) Adam state so a checkpoint can be loaded into it.

    Without Apex/TE, megatron's DistributedOptimizer.state_dict() requires a ``step`` entry per parameter, which
    torch's Adam creates only at its first step; the dummy values are overwritten by the load.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is not None and not inner.state and hasattr(opt, "_init_optimizer_states_with_dummy_values"):
            opt._init_optimizer_states_with_dummy_values()


def _restore_adam_steps(optimizer: Any, loaded_optimizer: Any) -> None:
    """Give each parameter its own Adam ``step`` tensor holding the checkpoint's step after a load.

    megatron's DistributedOptimizer on the torch-Adam path (no Apex/TE) (a) assigns one shared ``step`` tensor to
    every parameter, which torch's Adam then increments once per parameter, and (b) with the dp_reshardable format
    puts back the pre-load ``step`` when it restores the parameter state. Either way a resumed run would use the
    wrong bias correction and drift from the uninterrupted one; the saved step is in the param groups.
    """
    opts = list(getattr(optimizer, "chained_optimizers", [optimizer]))
    if len(opts) == 1:
        per_opt = [loaded_optimizer]
    elif isinstance(loaded_optimizer, dict):
        per_opt = [v for _, v in sorted(loaded_optimizer.items())]
    else:
        per_opt = list(loaded_optimizer)
    for opt, saved in zip(opts, per_opt):
        inner = getattr(opt, "optimizer", None)
        groups = saved.get("optimizer", saved).get("param_groups", []) if isinstance(saved, dict) else []
        steps = {float(g["step"]) for g in groups if isinstance(g, dict) and g.get("step") is not None}
        for param_state in getattr(inner, "state", {}).values():
            step = param_state.get("step") if isinstance(param_state, dict) else None
            if isinstance(step, torch.Tensor):
                value = torch.tensor(steps.copy().pop(), dtype=step.dtype) if len(steps) == 1 else step.clone()
                param_state["step"] = value.to(step.device)


def build_sharded_state_dict(
    model: Sequence[torch.nn.Module],
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    include_rng: bool = True,
    is_loading: bool = False,
    step: int = 0,
    adapters_only: bool = False,
) -> dict[str, Any]:
    """The dict ``dist_checkpointing`` saves/loads: model, optimizer, scheduler, RNG, a little metadata.

    ``adapters_only`` (PEFT runs) keeps only the ``*.adapter.*`` tensors of the model.
    """
    sd = adapter_sharded_state_dict(model) if adapters_only else model_sharded_state_dict(model)
    if optimizer is not None:
        if is_loading and _uses_dist_optimizer(optimizer):
            _ensure_optimizer_state(optimizer)
        meta = DIST_OPT_METADATA if _uses_dist_optimizer(optimizer) else None
        sd["optimizer"] = optimizer.sharded_state_dict(dict(sd), is_loading=is_loading, metadata=meta)
    if scheduler is not None:
        sd["opt_param_scheduler"] = scheduler.state_dict()
    if include_rng:
        sd["rng_state"] = _rng_sharded_object()
    sd["iteration"] = step
    sd["checkpoint_version"] = CHECKPOINT_VERSION
    sd["parallel_layout"] = _layout()
    return sd


RUNTIME_HOOKS = ("finalize_model_grads_func", "grad_scale_func", "no_sync_func", "grad_sync_func", "param_sync_func")


@contextlib.contextmanager
def _without_runtime_hooks(model_cfg: Any):
    """Hide the callbacks setup attached to the model config (bound methods) while it is written as YAML."""
    saved = {k: getattr(model_cfg, k) for k in RUNTIME_HOOKS if getattr(model_cfg, k, None) is not None}
    for key in saved:
        setattr(model_cfg, key, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            setattr(model_cfg, key, value)


def _write_extras(tmp: Path, state: Any) -> None:
    torch.save(state.train_state.state_dict(), tmp / ckpt_layout.TRAIN_STATE_FILE)
    cfg = state.cfg
    if cfg is not None and hasattr(cfg, "to_yaml"):
        with _without_runtime_hooks(getattr(cfg, "model", None)):
            cfg.to_yaml(str(tmp / ckpt_layout.CONFIG_FILE))
    save_tokenizer = getattr(getattr(cfg, "checkpoint", None), "save_tokenizer_assets", True)
    if state.tokenizer is not None and save_tokenizer and hasattr(state.tokenizer, "save_pretrained"):
        state.tokenizer.save_pretrained(str(tmp / ckpt_layout.TOKENIZER_DIR))


def save_checkpoint(
    state: Any, model: Sequence[torch.nn.Module], optimizer: Any, scheduler: Any, save_dir: str | Path
) -> Path:
    """Write ``<save_dir>/iter_%07d`` for ``state.train_state.step`` (all ranks call this), then the trackers.

    ``checkpoint.save_optim`` / ``save_rng`` (default True) drop the optimizer+scheduler / RNG parts.
    ``checkpoint.most_recent_k > 0`` deletes older iteration folders after a successful save.
    """
    ckpt_cfg = getattr(state.cfg, "checkpoint", None)
    save_optim = getattr(ckpt_cfg, "save_optim", True)
    step = state.train_state.step
    root = Path(save_dir)
    target = root / ckpt_layout.iter_dir_name(step)
    sd = build_sharded_state_dict(
        model, optimizer if save_optim else None, scheduler if save_optim else None,
        include_rng=getattr(ckpt_cfg, "save_rng", True), step=step, adapters_only=_is_peft(state),
    )  # fmt: skip
    if _rank() == 0:
        with ckpt_layout.atomic_directory(target, overwrite=True) as tmp:
            _broadcast_object(str(tmp))
            save_sharded(sd, tmp, fully_parallel=getattr(ckpt_cfg, "fully_parallel_save", False))
            _write_extras(tmp, state)
            _barrier()
        shutil.copyfile(target / ckpt_layout.TRAIN_STATE_FILE, root / f".{ckpt_layout.LATEST_TRAIN_STATE_FILE}.tmp")
        Path(root / f".{ckpt_layout.LATEST_TRAIN_STATE_FILE}.tmp").replace(root / ckpt_layout.LATEST_TRAIN_STATE_FILE)
        ckpt_layout.write_tracker(root, step)
        _prune(root, getattr(ckpt_cfg, "most_recent_k", -1))
    else:
        tmp = _broadcast_object(None)
        save_sharded(sd, tmp, fully_parallel=getattr(ckpt_cfg, "fully_parallel_save", False))
        _barrier()
    _barrier()
    return target


def _is_peft(state: Any) -> bool:
    """True for a PEFT run: its checkpoints hold only the adapters (the base stays the pretrained checkpoint)."""
    return getattr(getattr(state, "cfg", None), "peft", None) is not None


def _prune(root: Path, most_recent_k: int | None) -> None:
    if not most_recent_k or most_recent_k <= 0:
        return
    for step in ckpt_layout.list_iterations(root)[:-most_recent_k]:
        shutil.rmtree(root / ckpt_layout.iter_dir_name(step), ignore_errors=True)


def read_train_state(iter_dir: Path) -> dict[str, Any]:
    """``train_state.pt`` as a dict (``weights_only=True``: our own file holds tensors only)."""
    path = iter_dir / ckpt_layout.TRAIN_STATE_FILE
    if not path.exists():
        raise ckpt_layout.CheckpointNotFoundError(
            f"{iter_dir} has no {ckpt_layout.TRAIN_STATE_FILE}; it is a weights-only checkpoint (e.g. an HF import). "
            f"Use it as checkpoint.pretrained_checkpoint, not checkpoint.load."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupted or foreign pickle: say which file
        raise RuntimeError(f"cannot read {path}: {exc}. The file is corrupted; resume from an older iter_* folder.") from exc


def _saved_content(iter_dir: Path) -> set[str]:
    from megatron.core import dist_checkpointing

    common = dist_checkpointing.load_common_state_dict(str(iter_dir))
    tensors = dist_checkpointing.load_tensors_metadata(str(iter_dir))
    found = set(common.keys()) | {k.split(".", 1)[0] for k in tensors}
    if any(k.startswith("optimizer.") for k in tensors) or "optimizer" in common:
        found.add("optimizer")
    return found


def load_checkpoint(
    state: Any, model: Sequence[torch.nn.Module], optimizer: Any, scheduler: Any, load_dir: str | Path, step: int | None = None
) -> int:
    """Resume model, optimizer, scheduler, RNG and counters from ``load_dir``; returns the resumed step.

    Raises:
        CheckpointNotFoundError / RuntimeError: naming the folder and what is missing or unreadable.
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    ckpt_cfg = getattr(state.cfg, "checkpoint", None)
    iter_dir, step = ckpt_layout.resolve_checkpoint(load_dir, step)
    train_state = read_train_state(iter_dir)
    content = _saved_content(iter_dir)
    load_optim = getattr(ckpt_cfg, "load_optim", True) and "optimizer" in content and optimizer is not None
    same_layout = content and dist_checkpointing.load_common_state_dict(str(iter_dir)).get("parallel_layout") == _layout()
    load_rng = getattr(ckpt_cfg, "load_rng", True) and "rng_state" in content and same_layout
    sd = build_sharded_state_dict(
        model, optimizer if load_optim else None, scheduler if load_optim else None,
        include_rng=load_rng, is_loading=True, step=step, adapters_only=_is_peft(state),
    )  # fmt: skip
    meta_keys = ("iteration", "checkpoint_version", "parallel_layout")
    for key in meta_keys:
        sd.pop(key)
    try:
        loaded = dist_checkpointing.load(sd, str(iter_dir), strict=StrictHandling.ASSUME_OK_UNEXPECTED)
    except Exception as exc:
        raise RuntimeError(f"could not load checkpoint {iter_dir}: {exc}") from exc
    for i, chunk in enumerate(model):
        key = "model" if len(model) == 1 else f"model{i}"
        missing, _ = unwrap(chunk).load_state_dict(loaded[key], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if _is_peft(state):  # the frozen base weights came from pretrained_checkpoint
            missing = [k for k in missing if adapter_key_filter(k)]
        if missing:
            raise RuntimeError(f"{iter_dir}: checkpoint lacks weights the model needs: {missing[:10]}")
    if load_optim:
        with torch.no_grad():  # the distributed optimizer writes into views of leaf parameters
            optimizer.load_state_dict(loaded["optimizer"])
        if _uses_dist_optimizer(optimizer):
            _restore_adam_steps(optimizer, loaded["optimizer"])
        if scheduler is not None and "opt_param_scheduler" in loaded:
            scheduler.load_state_dict(loaded["opt_param_scheduler"])
    elif optimizer is not None:
        optimizer.reload_model_params()  # fp32 master copies must follow the loaded (bf16) weights
    if load_rng:
        _restore_rng(loaded["rng_state"][0])
    state.train_state.load_state_dict(train_state)
    logger.info("resumed from %s (step %d)", iter_dir, step)
    return step

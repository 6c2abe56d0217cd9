"""``python -m checkpoints_conv merge``: a PEFT (LoRA/DoRA) run's checkpoint -> a plain Megatron checkpoint.

A PEFT checkpoint holds only the adapters; its ``run_config.yaml`` names the model (``model:``), the PEFT config
(``peft:``) and the base weights (``checkpoint.pretrained_checkpoint``, a Megatron checkpoint or an HF folder).
Merging rebuilds the model at TP=1/PP=1 in a world of one, loads the base weights and the adapters, folds the
adapters in (fp32, cast back once; ``sft_bridge_port.peft.merge``) and writes ``<output>/iter_<step>/``, which
``python -m checkpoints_conv export`` turns into an HF folder::

    python -m checkpoints_conv merge --lora-checkpoint runs/lora/checkpoints --output runs/lora/merged
    python -m checkpoints_conv export --megatron-path runs/lora/merged --hf-path exports/lora_merged
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from checkpoints_conv.exporter import load_provider, stored_embedding
from checkpoints_conv.importer import _require_world_of_one
from checkpoints_conv.model_io import build_tp1_model


@dataclasses.dataclass(frozen=True)
class PeftRun:
    """What a PEFT checkpoint's ``run_config.yaml`` says: adapter folder, provider, PEFT config, base weights."""

    iter_dir: Path
    step: int
    provider: Any
    peft: Any
    pretrained_checkpoint: str | None


def read_peft_run(lora_checkpoint: str | os.PathLike) -> PeftRun:
    """Resolve a PEFT checkpoint (root or ``iter_*`` folder) and read its run configuration.

    Raises:
        ValueError: the checkpoint's ``run_config.yaml`` is missing or has no ``peft:`` section (not a PEFT run).
    """
    from sft_bridge_port.config.serialization import from_dict, yaml_to_dict
    from sft_bridge_port.utils import ckpt_layout

    iter_dir, step = ckpt_layout.resolve_checkpoint(lora_checkpoint)
    provider = load_provider(iter_dir)  # raises ValueError naming run_config.yaml when it is missing
    data = yaml_to_dict((iter_dir / ckpt_layout.CONFIG_FILE).read_text())
    if not data.get("peft"):
        raise ValueError(
            f"{iter_dir / ckpt_layout.CONFIG_FILE} has no 'peft:' section: {iter_dir} is not a PEFT checkpoint "
            f"(a full-finetuning checkpoint needs no merge; export it directly)"
        )
    pretrained = (data.get("checkpoint") or {}).get("pretrained_checkpoint")
    return PeftRun(iter_dir, step, provider, from_dict(data["peft"]), pretrained)


def _base_loader(provider: Any, base: str) -> tuple[Any, str | None]:
    """``(build_model, megatron_base)``: a builder of the TP=1 model, and the Megatron checkpoint to load into it
    (None when ``build_model`` itself reads an HF folder's weights)."""
    from sft_bridge_port.utils import ckpt_layout

    path = Path(base)
    if not path.exists():
        raise ValueError(f"base weights {base} do not exist: pass --pretrained (a Megatron checkpoint or HF folder)")
    if ckpt_layout.is_megatron_checkpoint(path):
        iter_dir, _ = ckpt_layout.resolve_checkpoint(path)
        rows, dtype = stored_embedding(iter_dir)
        return (lambda: [build_tp1_model(provider, rows, dtype)]), str(iter_dir)
    if not ckpt_layout.is_hf_folder(path):
        raise ValueError(f"base weights {base} are neither a Megatron checkpoint nor an HF model folder")

    def build_from_hf() -> list[torch.nn.Module]:
        from checkpoints_conv.importer import load_hf_weights_into_model

        tp1 = copy.deepcopy(provider)
        tp1.tensor_model_parallel_size = 1  # the vocab padding an import at TP=1 would have
        model = build_tp1_model(provider, tp1.padded_vocab_size(), provider.params_dtype)
        load_hf_weights_into_model([model], path)
        return [model]

    return build_from_hf, None


def merge_lora_checkpoint(
    lora_checkpoint: str | os.PathLike, output: str | os.PathLike, pretrained: str | os.PathLike | None = None
) -> Path:
    """Fold a PEFT checkpoint's adapters into its base weights; returns the written ``iter_*`` folder.

    Args:
        lora_checkpoint: checkpoint root (the tracker picks the iteration) or ``iter_*`` folder of a PEFT run.
        output: checkpoint root to create (``iter_<step>/`` + tracker); must not hold that iteration yet.
        pretrained: base weights (Megatron checkpoint or HF folder); default: the run's
            ``checkpoint.pretrained_checkpoint``.

    Raises:
        ValueError: not a PEFT checkpoint, or no usable base weights.
        FileExistsError: ``output`` already holds the iteration.
    """
    from sft_bridge_port.peft import merge_adapter_checkpoint
    from sft_bridge_port.utils.dist_context import parallel_context

    _require_world_of_one("merge")
    run = read_peft_run(lora_checkpoint)
    base = pretrained if pretrained is not None else run.pretrained_checkpoint
    if base is None:
        raise ValueError(f"{run.iter_dir}: the run recorded no checkpoint.pretrained_checkpoint; pass --pretrained")
    with parallel_context(1, 1, backend="gloo"):
        build_model, megatron_base = _base_loader(run.provider, str(base))
        return merge_adapter_checkpoint(build_model, run.peft, megatron_base, run.iter_dir, output)

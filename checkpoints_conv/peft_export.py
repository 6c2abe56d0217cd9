"""Write trained adapters as an HF PEFT adapter folder that ``peft.PeftModel.from_pretrained`` loads.

Output: ``adapter_config.json`` (``peft_type: LORA``, ``r``, ``lora_alpha``, ``target_modules``, ``use_dora``)
and ``adapter_model.safetensors`` with HF module names. The megatron -> HF names and the fused-row splits
come from the conversion table of the architecture (``checkpoints_conv.tables``), so they never drift from
the weight conversion::

    decoder.layers.0.self_attention.linear_qkv  (fused LoRA: A [r, h], B [qkv_rows, r])
      -> base_model.model.model.layers.0.self_attn.{q,k,v}_proj.lora_A.weight = A      (same A for all three)
         base_model.model.model.layers.0.self_attn.{q,k,v}_proj.lora_B.weight = split_qkv(B)   (by query group)
    decoder.layers.0.mlp.linear_fc1  -> mlp.{gate,up}_proj   (B = [B_gate; B_up])
    DoRA magnitude  -> ...lora_magnitude_vector (split like B)

HF computes ``B_q (A x)`` for q, which is exactly the q rows of our fused ``B (A x)``, so the exported
adapter reproduces the megatron model's logits. CanonicalLoRA's parts map one to one.

From a PEFT run's checkpoint (``python -m checkpoints_conv export-adapter``)::

    export_adapter_checkpoint("runs/lora/checkpoints", "exports/lora_adapter", hf_model="/models/Llama-3.2-1B")
    # then: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "exports/lora_adapter")
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import torch

from checkpoints_conv import engine
from checkpoints_conv.exporter import _architecture
from checkpoints_conv.importer import _require_world_of_one
from checkpoints_conv.mapping import ModelShape
from checkpoints_conv.model_io import build_tp1_model
from checkpoints_conv.tables import get_table
from sft_bridge_port.peft.base import iter_adapted_global
from sft_bridge_port.peft.canonical_lora import PART_ORDER, SplitLoRAAdapter
from sft_bridge_port.peft.checkpoint import load_adapter_weights
from sft_bridge_port.peft.dora import DoRAAdapter

PREFIX = "base_model.model."
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def _model_shape(config: Any) -> ModelShape:
    heads = config.num_attention_heads
    return ModelShape(
        num_layers=config.num_layers, hidden_size=config.hidden_size, num_heads=heads,
        num_groups=config.num_query_groups or heads, head_dim=config.kv_channels or config.hidden_size // heads,
        ffn_hidden_size=config.ffn_hidden_size, vocab_size=0, padded_vocab_size=0,
    )  # fmt: skip


def _row_for(table: Any, name: str) -> tuple[Any, int]:
    """The table row of ``<name>.weight`` and its layer index (``decoder.layers.3.mlp.linear_fc2`` -> row, 3)."""
    m = _LAYER.search(name)
    if m is None:
        raise ValueError(f"{name}: only per-layer linear layers can be exported as HF PEFT adapters")
    pattern = _LAYER.sub(".layers.*.", name, count=1) + ".weight"
    for row in table.rows:
        if row.mcore == pattern:
            return row, int(m.group(1))
    raise ValueError(f"{name}: the {table.name} conversion table has no row {pattern}, so it has no HF name")


def _fused_entries(adapter: Any, row: Any, layer: int, shape: Any) -> dict[str, torch.Tensor]:
    modules = [n.removesuffix(".weight") for n in row.hf_names(layer)]
    a = adapter.linear_in.weight.detach()
    bs = engine.mcore_to_hf(row, shape, adapter.linear_out.weight.detach())
    mags = engine.mcore_to_hf(row, shape, adapter.weight_magnitude.detach()) if isinstance(adapter, DoRAAdapter) else None
    out = {}
    for i, module in enumerate(modules):
        out[f"{PREFIX}{module}.lora_A.weight"] = a
        out[f"{PREFIX}{module}.lora_B.weight"] = bs[i]
        if mags is not None:
            out[f"{PREFIX}{module}.lora_magnitude_vector"] = mags[i]
    return out


def _split_entries(adapter: SplitLoRAAdapter, row: Any, layer: int) -> dict[str, torch.Tensor]:
    modules = dict(zip(PART_ORDER[adapter.fused], (n.removesuffix(".weight") for n in row.hf_names(layer))))
    out = {}
    for part, sub in adapter.parts().items():
        out[f"{PREFIX}{modules[part]}.lora_A.weight"] = sub.linear_in.weight.detach()
        out[f"{PREFIX}{modules[part]}.lora_B.weight"] = sub.linear_out.weight.detach()
    return out


def hf_adapter_state(model_chunks: Sequence[torch.nn.Module], architecture: str = "LlamaForCausalLM") -> dict[str, torch.Tensor]:
    """HF PEFT state dict (``base_model.model.<hf module>.lora_A.weight`` ...) of an adapted model at TP=1.

    Raises:
        ValueError: the model has no adapters, runs at TP > 1 (load the adapter checkpoint at TP=1: it
            reshards), or a layer has no HF name in the architecture's conversion table.
    """
    table = get_table(architecture)
    layers = list(iter_adapted_global(model_chunks))
    if not layers:
        raise ValueError("the model carries no adapter to export")
    state: dict[str, torch.Tensor] = {}
    for name, base in layers:
        adapter = base.adapter
        if adapter.layout.tp_size != 1:
            raise ValueError("export the adapter from a TP=1 model: load the adapter checkpoint with tensor_model_parallel_size=1")
        row, layer = _row_for(table, name)
        if isinstance(adapter, SplitLoRAAdapter):
            state.update(_split_entries(adapter, row, layer))
        else:
            state.update(_fused_entries(adapter, row, layer, _model_shape(base.config)))
    return {k: v.contiguous().clone() for k, v in state.items()}


def _target_modules(keys: list[str], num_layers: int) -> list[str]:
    """Short names (``q_proj``) when every layer has them, else the full module names."""
    modules = sorted({k[len(PREFIX):].rsplit(".lora_", 1)[0] for k in keys})
    by_short: dict[str, set[str]] = {}
    for m in modules:
        by_short.setdefault(m.rsplit(".", 1)[-1], set()).add(m)
    if all(len(v) == num_layers for v in by_short.values()):
        return sorted(by_short)
    return modules


def export_hf_adapter(
    model_chunks: Sequence[torch.nn.Module],
    peft: Any,
    out_dir: str | os.PathLike,
    *,
    architecture: str = "LlamaForCausalLM",
    base_model_name_or_path: str | None = None,
) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` for HF PEFT into ``out_dir``.

    Args:
        model_chunks: the adapted model at TP=1 (PP=1), e.g. built at TP=1 with adapters loaded by
            ``load_adapter_weights``.
        peft: its PEFT config (``dim`` -> ``r``, ``alpha`` -> ``lora_alpha``, DoRA -> ``use_dora``).
        out_dir: folder to write (created).
        architecture: HF ``architectures[0]`` of the base model (picks the conversion table).
        base_model_name_or_path: recorded in the config for ``AutoPeftModel`` loading.

    Returns:
        ``out_dir``.
    """
    from safetensors.torch import save_file

    state = hf_adapter_state(model_chunks, architecture)
    num_layers = next(iter(iter_adapted_global(model_chunks)))[1].config.num_layers
    uses_dora = any(k.endswith("lora_magnitude_vector") for k in state)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model_name_or_path,
        "r": int(peft.dim), "lora_alpha": peft.alpha, "lora_dropout": float(peft.dropout),
        "target_modules": _target_modules(list(state), num_layers), "use_dora": uses_dora,
        "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "init_lora_weights": True,
        "modules_to_save": None, "inference_mode": True,
    }  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def export_adapter_checkpoint(
    lora_checkpoint: str | os.PathLike, output: str | os.PathLike, hf_model: str | os.PathLike | None = None
) -> Path:
    """A PEFT run's checkpoint (any TP/PP it was trained at) -> an HF PEFT adapter folder.

    The model is rebuilt at TP=1/PP=1 in a world of one from the checkpoint's ``run_config.yaml`` (no base
    weights needed: the adapters, DoRA's magnitude included, are all in the checkpoint) and the adapters are
    resharded into it.

    Args:
        lora_checkpoint: checkpoint root or ``iter_*`` folder of a PEFT run.
        output: adapter folder to create (must be absent or empty).
        hf_model: the HF base model (folder or hub id) recorded as ``base_model_name_or_path``; default: the run's
            ``checkpoint.pretrained_checkpoint`` when that is an HF folder.

    Raises:
        ValueError: not a PEFT checkpoint. FileExistsError: ``output`` is not empty.
    """
    from checkpoints_conv.peft_merge import read_peft_run
    from sft_bridge_port.utils import ckpt_layout
    from sft_bridge_port.utils.dist_context import parallel_context

    _require_world_of_one("export-adapter")
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; choose a new folder for the adapter")
    run = read_peft_run(lora_checkpoint)
    recorded = run.pretrained_checkpoint
    if hf_model is None and recorded is not None and ckpt_layout.is_hf_folder(recorded):
        hf_model = recorded
    with parallel_context(1, 1, backend="gloo"):
        model = build_tp1_model(run.provider, int(run.provider.vocab_size), run.provider.params_dtype)
        run.peft([model], training=False)
        load_adapter_weights([model], run.iter_dir)
        return export_hf_adapter(
            [model], run.peft, out, architecture=_architecture(run.provider),
            base_model_name_or_path=None if hf_model is None else str(hf_model),
        )  # fmt: skip

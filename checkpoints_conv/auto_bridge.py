"""``AutoBridge``: Megatron-Bridge's conversion entry point, same method names, no Megatron-Bridge inside.

Example (Bridge users change only the import)::

    from checkpoints_conv import AutoBridge
    AutoBridge.import_ckpt("/models/Llama-3.2-1B", "./ckpt/llama32_1b")
    bridge = AutoBridge.from_hf_pretrained("/models/Llama-3.2-1B")
    provider = bridge.to_megatron_provider(load_weights=False)
    bridge.export_ckpt("./runs/sft/checkpoints", "./exports/llama32_1b_sft")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from checkpoints_conv.exporter import export_megatron_to_hf, load_provider, save_hf_pretrained, stored_embedding
from checkpoints_conv.hf_io import read_config, resolve_hf_folder
from checkpoints_conv.importer import import_hf_to_megatron, load_hf_weights_into_model
from checkpoints_conv.tables import get_table, supported_architectures


class AutoBridge:
    """A handle on one HF model folder: its config, provider and weights."""

    def __init__(self, hf_path: Path, config: dict):
        self.hf_path = Path(hf_path)
        self.config = config
        self.table = get_table((config.get("architectures") or ["<none>"])[0])

    @classmethod
    def list_supported_models(cls) -> list[str]:
        """HF architecture names that convert, e.g. ``["LlamaForCausalLM", "MistralForCausalLM", ...]``."""
        return supported_architectures()

    @classmethod
    def supports(cls, config: dict | Any) -> bool:
        """True when a config (dict or ``PretrainedConfig``) names a supported architecture."""
        archs = config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)
        return bool(archs) and archs[0] in supported_architectures()

    @classmethod
    def from_hf_pretrained(cls, path: str | os.PathLike, trust_remote_code: bool = False, **kwargs: Any) -> "AutoBridge":
        """Open an HF folder (or hub id). Only config.json is read; weights are read when converted.

        ``trust_remote_code`` is accepted for Bridge compatibility; no model code from the folder is ever
        run by conversion. Other Bridge kwargs (``torch_dtype``, ``device_map``...) are ignored.
        """
        folder = resolve_hf_folder(path)
        return cls(folder, read_config(folder))

    def to_megatron_provider(self, load_weights: bool = False, hf_path: str | os.PathLike | None = None) -> Any:
        """The ``GPTModelProvider`` of this model (config only).

        Raises:
            ValueError: ``load_weights=True``; our provider has no hook registry, so weights are loaded by
                :meth:`to_megatron_model` or :meth:`load_hf_weights` on the built model instead.
        """
        if load_weights:
            raise ValueError(
                "to_megatron_provider(load_weights=True) is not supported: build the model with "
                "bridge.to_megatron_model() (weights loaded), or call bridge.load_hf_weights(model) after "
                "provider.provide_distributed_model()."
            )
        from sft_bridge_port.models import get_provider

        return get_provider(hf_path or self.hf_path)

    def to_megatron_model(self, load_weights: bool = True, **provide_kwargs: Any) -> list[torch.nn.Module]:
        """Build this rank's model chunks (in the current parallel state) with the HF weights loaded.

        ``provide_kwargs`` go to ``provide_distributed_model`` (e.g. ``wrap_with_ddp=False``).
        """
        provider = self.to_megatron_provider()
        provider.perform_initialization = not load_weights
        hook = (lambda chunks: (load_hf_weights_into_model(chunks, self.hf_path), chunks)[1]) if load_weights else None
        return provider.provide_distributed_model(pre_wrap_hook=hook, **provide_kwargs)

    def load_hf_weights(self, model: Sequence[torch.nn.Module] | torch.nn.Module, hf_path: str | os.PathLike | None = None) -> None:
        """Copy HF weights into built (possibly sharded) model chunks, in memory."""
        load_hf_weights_into_model(model, hf_path or self.hf_path)

    @classmethod
    def import_ckpt(cls, hf_model_id: str | os.PathLike, megatron_path: str | os.PathLike, **kwargs: Any) -> Path:
        """HF folder/id -> Megatron checkpoint (kwargs: ``tp``, ``pp``, ``dtype``, ``overwrite``, ``show_progress``)."""
        return import_hf_to_megatron(hf_model_id, megatron_path, **kwargs)

    def export_ckpt(
        self, megatron_path: str | os.PathLike, hf_path: str | os.PathLike, show_progress: bool = True,
        source_path: str | os.PathLike | None = None, **kwargs: Any,
    ) -> Path:
        """Megatron checkpoint -> HF folder, with config.json/generation_config.json from this bridge's folder."""
        return export_megatron_to_hf(
            megatron_path, hf_path, hf_config_source=source_path or self.hf_path, show_progress=show_progress, **kwargs
        )

    def save_hf_pretrained(self, model: Sequence[torch.nn.Module] | torch.nn.Module, path: str | os.PathLike, **kwargs: Any) -> Path:
        """Write an unsharded in-memory model as an HF folder (config and tokenizer from this bridge's folder)."""
        return save_hf_pretrained(model, path, hf_config_source=self.hf_path, tokenizer_source=self.hf_path, **kwargs)

    def load_megatron_model(self, path: str | os.PathLike, mp_overrides: dict | None = None, wrap_with_ddp: bool = False) -> list[torch.nn.Module]:
        """Build the model recorded in a Megatron checkpoint and load its weights (any saved TP/PP)."""
        return load_megatron_model(path, mp_overrides=mp_overrides, wrap_with_ddp=wrap_with_ddp)


def load_megatron_model(
    path: str | os.PathLike, mp_overrides: dict | None = None, wrap_with_ddp: bool = False
) -> list[torch.nn.Module]:
    """Model chunks for this rank, built from ``run_config.yaml`` and filled from the checkpoint.

    Uses the current parallel state; without one, a world of one at the provider's TP/PP (overridden by
    ``mp_overrides``, e.g. ``{"tensor_model_parallel_size": 1}``) is initialised and left in place.
    """
    from megatron.core import parallel_state

    from sft_bridge_port.utils.ckpt_layout import resolve_checkpoint
    from sft_bridge_port.utils.dist_ckpt import load_model_weights
    from sft_bridge_port.utils.dist_context import init_distributed, initialize_parallel_state

    iter_dir, _ = resolve_checkpoint(path)
    provider = load_provider(iter_dir)
    for key, value in (mp_overrides or {}).items():
        setattr(provider, key, value)
    if not parallel_state.model_parallel_is_initialized():
        init_distributed()
        initialize_parallel_state(provider.tensor_model_parallel_size, provider.pipeline_model_parallel_size)
    rows, _ = stored_embedding(iter_dir)
    tp = provider.tensor_model_parallel_size
    if rows != provider.padded_vocab_size() and rows % tp == 0:
        provider.should_pad_vocab, provider.make_vocab_size_divisible_by = True, rows // tp  # match the saved rows
    provider.perform_initialization = False
    chunks = provider.provide_distributed_model(wrap_with_ddp=wrap_with_ddp, use_cpu_initialization=not torch.cuda.is_available())
    load_model_weights(chunks, iter_dir, strict=True)
    return chunks

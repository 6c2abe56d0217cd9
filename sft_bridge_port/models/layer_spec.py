"""The default layer spec: megatron-core's module tree with PyTorch kernels inside (no TE, no apex needed).

The tree and parameter names are megatron-core's local ones, which conversion and LoRA target::

    decoder.layers.{i}.input_layernorm.weight
    decoder.layers.{i}.self_attention.linear_qkv.{weight,bias}      # q/k/v interleaved per query group
    decoder.layers.{i}.self_attention.{q,k}_layernorm.weight        # Qwen3 QK-norm only
    decoder.layers.{i}.self_attention.linear_proj.weight
    decoder.layers.{i}.pre_mlp_layernorm.weight
    decoder.layers.{i}.mlp.linear_fc1.weight                        # [gate; up]
    decoder.layers.{i}.mlp.linear_fc2.weight
    decoder.final_layernorm.weight

Four modules differ from ``get_gpt_layer_local_spec``: ``core_attention`` is :class:`SDPAttention`
(fused SDPA / varlen kernels instead of S×S scores), every norm is :class:`TorchNorm`, which also works
with sequence parallelism (megatron's ``WrappedTorchNorm`` refuses it), the MLP is :class:`QuackableMLP`
(megatron's ``MLP`` with SwiGLU in quack's GEMM epilogues where they run; same submodules and names), and the
bias-dropout-adds are :class:`ResidualIntoNorm` (megatron's, or the residual add inside the next RMSNorm's
kernel where it runs; no parameters).

When Transformer Engine is importable, :func:`fast_block_spec` swaps in TE's linear, norm and attention
modules under the same names (unfused norms, so no ``layer_norm_weight`` renames; TE adds ``_extra_state``
entries to the state dict, which conversion skips).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.mlp import MLP
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from sft_bridge_port.models.attention import SDPAttention
from sft_bridge_port.models.quack_mlp import QuackableMLP
from sft_bridge_port.models.quack_norm import QuackableRMSNorm
from sft_bridge_port.models.residual_norm import ResidualIntoNorm

_NORMS = {"RMSNorm": torch.nn.RMSNorm, "LayerNorm": torch.nn.LayerNorm}


class TorchNorm:
    """Builds ``torch.nn.RMSNorm`` / ``LayerNorm`` from megatron-core's norm arguments, sequence-parallel ready.

    Under sequence parallelism each tensor-parallel rank normalises a different slice of the sequence, so
    its weight gradient is partial: megatron-core's ``finalize_model_grads`` sums the gradients of every
    parameter flagged ``sequence_parallel=True`` over the tensor-parallel group. That flag is all a norm
    needs (it is what Transformer Engine's norms set). RMSNorm is a :class:`QuackableRMSNorm` (quack's kernels
    on Hopper/Blackwell when installed, per ``config.norm_kernel``) unless ``norm_kernel="torch"``.
    """

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **unused: Any) -> torch.nn.Module:
        if config.normalization not in _NORMS:
            raise ValueError(
                f"normalization={config.normalization!r} is not supported; use one of {sorted(_NORMS)}"
            )
        if config.layernorm_zero_centered_gamma:
            raise ValueError("layernorm_zero_centered_gamma=True is not supported by TorchNorm")
        kernel = getattr(config, "norm_kernel", "auto")
        if config.normalization == "RMSNorm" and kernel != "torch":
            norm = QuackableRMSNorm(hidden_size, eps=eps, kernel=kernel)
        else:
            norm = _NORMS[config.normalization](hidden_size, eps=eps)
        for param in norm.parameters():
            setattr(param, "sequence_parallel", bool(config.sequence_parallel))
        return norm


@functools.lru_cache(maxsize=1)
def te_available() -> bool:
    """True when Transformer Engine imports (then its kernels replace the PyTorch ones)."""
    try:
        import transformer_engine  # noqa: F401
        from megatron.core.extensions import transformer_engine as _mcore_te  # noqa: F401
    except Exception:  # TE present but broken (CUDA mismatch) counts as absent
        return False
    return True


def get_fast_layer_spec(
    qk_layernorm: bool = False, normalization: str = "RMSNorm", use_te: bool | None = None
) -> ModuleSpec:
    """One transformer layer's spec (dense GPT: attention + MLP).

    Args:
        qk_layernorm: add ``q_layernorm``/``k_layernorm`` on each head (Qwen3).
        normalization: ``"RMSNorm"`` or ``"LayerNorm"``.
        use_te: force Transformer Engine on/off; None picks TE when it imports.
    """
    spec = get_gpt_layer_local_spec(qk_layernorm=qk_layernorm, normalization=normalization)
    layer = spec.submodules
    attn = layer.self_attention.submodules
    if use_te if use_te is not None else te_available():
        from megatron.core.extensions.transformer_engine import (
            TEColumnParallelLinear,
            TEDotProductAttention,
            TENorm,
            TERowParallelLinear,
        )

        norm, core = TENorm, TEDotProductAttention
        attn.linear_qkv, attn.linear_proj = TEColumnParallelLinear, TERowParallelLinear
        # 0.16: ModuleSpec(MLP, submodules=...); 0.19: functools.partial(MLP, submodules=...)
        mlp = layer.mlp.submodules if hasattr(layer.mlp, "submodules") else layer.mlp.keywords["submodules"]
        mlp.linear_fc1, mlp.linear_fc2 = TEColumnParallelLinear, TERowParallelLinear
    else:
        norm, core = TorchNorm, SDPAttention
        layer.mlp = _with_mlp_class(layer.mlp, QuackableMLP)
        layer.self_attn_bda = layer.mlp_bda = ResidualIntoNorm  # megatron's add, or folded into the next norm
    layer.input_layernorm = norm
    layer.pre_mlp_layernorm = norm
    attn.core_attention = core
    if qk_layernorm:
        attn.q_layernorm = norm
        attn.k_layernorm = norm
    return spec


def _with_mlp_class(mlp: Any, cls: type[MLP]) -> Any:
    """``mlp``'s spec building ``cls`` instead of megatron's ``MLP`` (0.16: a ``ModuleSpec``; 0.19: a ``partial``
    of ``MLP.as_mlp_submodule``)."""
    if isinstance(mlp, ModuleSpec):
        if mlp.module is not MLP:
            raise TypeError(f"expected megatron-core's MLP in the local layer spec, got {mlp.module!r}")
        return dataclasses.replace(mlp, module=cls)
    if not (isinstance(mlp, functools.partial) and mlp.func == MLP.as_mlp_submodule):
        raise TypeError(f"expected megatron-core's MLP in the local layer spec, got {mlp!r}")
    return functools.partial(cls.as_mlp_submodule, *mlp.args, **mlp.keywords)


def fast_block_spec(config: TransformerConfig, vp_stage: int | None = None) -> TransformerBlockSubmodules:
    """The decoder spec for this pipeline stage: its layers plus the final norm (also a :class:`TorchNorm`).

    This is ``GPTModelProvider.transformer_layer_spec``'s default; ``provide()`` calls it with the provider.
    """
    layer = get_fast_layer_spec(qk_layernorm=config.qk_layernorm, normalization=config.normalization)
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    final_norm = layer.submodules.input_layernorm
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=final_norm)


def local_block_spec(config: TransformerConfig, vp_stage: int | None = None) -> ModuleSpec:
    """megatron-core's stock local spec (S×S attention): the reference the fast spec is checked against."""
    return get_gpt_layer_local_spec(qk_layernorm=config.qk_layernorm, normalization=config.normalization)

"""The fused SwiGLU MLP computes megatron-core's MLP: same module tree and state dict, same values and gradients.

On CPU the quack kernels are replaced by references written here from quack's documented contract (interleaved
gate/up columns, ``concat_layout``), which checks our wiring of the four GEMMs and megatron's ``main_grad``
protocol; the GPU test checks the real kernels against megatron's path.
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from sft_bridge_port.models import quack_mlp, quack_norm
from sft_bridge_port.models.flash_cute import AUTO_MIN_TOKENS
from sft_bridge_port.models.layer_spec import get_fast_layer_spec
from sft_bridge_port.models.provider import GPTModelProvider
from sft_bridge_port.models.quack_mlp import GatedMLPFunction, QuackableMLP
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.models._helpers import quack_runs_here

H, FFN = 32, 48


def _interleave(t: torch.Tensor) -> torch.Tensor:
    """quack's ``concat_layout`` reading: ``[first; second]`` along the non-contiguous dim -> ``f0, s0, f1, ...``."""
    dim = -2 if t.stride(-1) == 1 else -1
    return t.unflatten(dim, (2, t.shape[dim] // 2)).transpose(dim - 1, dim).flatten(dim - 1, dim)


def _deinterleave_rows(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t[::2], t[1::2]])


def _reference_quack() -> types.SimpleNamespace:
    """quack's gemm / gemm_add_inplace / gemm_gated / gemm_dgated as plain torch (the subset the MLP calls)."""

    def gemm(a, b, concat_layout=(), out_dtype=None, dynamic_scheduler=False):
        out = a @ (_interleave(b) if "B" in concat_layout else b)
        return (_deinterleave_rows(out) if "out" in concat_layout else out).to(out_dtype or a.dtype)

    def gemm_add_inplace(a, b, out, concat_layout=(), dynamic_scheduler=False):
        out += gemm(a, b, concat_layout=concat_layout, out_dtype=out.dtype)

    def gated(a, b, activation, concat_layout=(), store_preact=True):
        assert activation == "swiglu" and concat_layout == ("B",)
        preact = gemm(a, b, concat_layout)
        return (preact if store_preact else None), F.silu(preact[:, ::2]) * preact[:, 1::2]

    def dgated(a, b, preact, activation, dynamic_scheduler=False):
        gate, up = preact[:, ::2].detach().requires_grad_(), preact[:, 1::2].detach().requires_grad_()
        with torch.enable_grad():
            post = F.silu(gate) * up
            dgate, dup = torch.autograd.grad(post, (gate, up), a @ b)
        return torch.stack([dgate, dup], dim=-1).flatten(-2), post.detach()

    return types.SimpleNamespace(gemm=gemm, gemm_add_inplace=gemm_add_inplace, gated=gated, dgated=dgated)


def _mlp(**config_overrides) -> QuackableMLP:
    fields = dict(
        num_layers=1, hidden_size=H, ffn_hidden_size=FFN, num_attention_heads=4, vocab_size=64,
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False, normalization="RMSNorm",
        use_cpu_initialization=True,
    )  # fmt: skip
    provider = GPTModelProvider(**{**fields, **config_overrides})
    provider.finalize()
    layer, ffn = get_fast_layer_spec().submodules.mlp, provider.ffn_hidden_size
    if hasattr(layer, "submodules"):  # megatron-core 0.16: a ModuleSpec
        from megatron.core.transformer.spec_utils import build_module

        return build_module(layer, config=provider, ffn_hidden_size=ffn)
    from megatron.core.process_groups_config import ProcessGroupCollection

    return layer(config=provider, pg_collection=ProcessGroupCollection.use_mpu_process_groups(), is_mtp_layer=False,
                 ffn_hidden_size=ffn)  # fmt: skip


def test_spec_builds_quackable_mlp_with_megatrons_parameters_and_values():
    with parallel_context():
        mlp = _mlp()
        assert type(mlp) is QuackableMLP
        assert {k for k in mlp.state_dict() if not k.endswith("._extra_state")} == {"linear_fc1.weight",
                                                                                      "linear_fc2.weight"}
        assert mlp.linear_fc1.weight.shape == (2 * FFN, H) and mlp.linear_fc2.weight.shape == (H, FFN)
        x = torch.randn(7, 2, H)
        out, bias = mlp(x)  # CPU: megatron-core's own path
        w1, w2 = mlp.linear_fc1.weight, mlp.linear_fc2.weight
        gate, up = (x @ w1.t()).chunk(2, dim=-1)
        torch.testing.assert_close(out, (F.silu(gate) * up) @ w2.t())
        assert bias is None


@pytest.mark.parametrize("fuse", [False, True])
def test_fused_function_matches_megatrons_mlp_values_grads_and_main_grad(monkeypatch, fuse):
    monkeypatch.setattr(quack_mlp, "quack_gemms", _reference_quack)
    with parallel_context():
        mlp = _mlp()
        x = torch.randn(10, 1, H, requires_grad=True)
        dout = torch.randn(10, 1, H)
        out_ref, _ = mlp(x)
        ref = torch.autograd.grad(out_ref, (x, mlp.linear_fc1.weight, mlp.linear_fc2.weight), dout)

        weights = (mlp.linear_fc1.weight, mlp.linear_fc2.weight)
        if fuse:  # megatron DDP's buffers: the gradient goes into main_grad, autograd gets a placeholder
            for w in weights:
                w.main_grad = torch.full_like(w, 0.5)
                w.grad_added_to_main_grad = False
        x2 = x.detach().reshape(-1, H).requires_grad_()
        out = GatedMLPFunction.apply(x2, *weights, fuse)
        got = torch.autograd.grad(out, (x2, *weights), dout.reshape(-1, H))
        torch.testing.assert_close(out, out_ref.reshape(-1, H))
        torch.testing.assert_close(got[0], ref[0].reshape(-1, H))
        for w, g, r in zip(weights, got[1:], ref[1:]):
            if fuse:
                torch.testing.assert_close(w.main_grad, r + 0.5)
                assert w.grad_added_to_main_grad and g.shape == w.shape
            else:
                torch.testing.assert_close(g, r)


def test_module_forward_takes_the_fused_path_from_the_token_floor(monkeypatch):
    calls = []
    reference = _reference_quack()
    monkeypatch.setattr(quack_mlp, "quack_gemms", lambda: (calls.append(1), reference)[1])
    monkeypatch.setattr(quack_norm, "quack_installed", lambda: True)
    monkeypatch.setattr(quack_norm, "cute_arch", lambda x: 9)
    with parallel_context():
        mlp = _mlp().bfloat16()
        small = torch.randn(AUTO_MIN_TOKENS - 1, 1, H, dtype=torch.bfloat16)
        big = torch.randn(AUTO_MIN_TOKENS, 1, H, dtype=torch.bfloat16)
        mlp(small)
        assert not calls
        fused, _ = mlp(big)
        assert calls
        mlp.config.mlp_kernel = "torch"
        plain, _ = mlp(big)
        torch.testing.assert_close(fused, plain, rtol=2e-2, atol=2e-2)


def test_adapters_tensor_parallelism_and_biases_keep_megatrons_path(monkeypatch):
    monkeypatch.setattr(quack_norm, "quack_installed", lambda: True)
    monkeypatch.setattr(quack_norm, "cute_arch", lambda x: 9)
    x = torch.zeros(AUTO_MIN_TOKENS, H, dtype=torch.bfloat16)
    with parallel_context():
        mlp = _mlp().bfloat16()
        assert mlp._fused_runs(x)
        assert not mlp._fused_runs(x.float())
        handle = mlp.linear_fc1.register_forward_hook(lambda *a: None)  # what a LoRA adapter attaches
        assert mlp._structure_fits() == "fc1/fc2 carry forward hooks (e.g. LoRA adapters)"
        handle.remove()
        mlp.config.sequence_parallel = True
        assert mlp._structure_fits() == "tensor parallelism is on"
    with parallel_context():
        assert _mlp(add_bias_linear=True)._structure_fits() == "fc1/fc2 have biases"


def test_quack_required_where_it_cannot_run_names_the_reason(monkeypatch):
    for module in (quack_mlp, quack_norm):  # installed (the provider's check, the layer's), but this is a CPU
        monkeypatch.setattr(module, "quack_installed", lambda: True)
    with parallel_context():
        mlp = _mlp(mlp_kernel="quack").bfloat16()
        with pytest.raises(RuntimeError, match="mlp_kernel='quack'.*device cpu is not a Hopper.*'auto'"):
            mlp(torch.randn(4, 1, H, dtype=torch.bfloat16))
        with pytest.raises(RuntimeError, match="dtype torch.float32"):
            mlp.float()(torch.randn(4, 1, H))


@pytest.mark.gpu
@pytest.mark.skipif(not quack_runs_here(), reason="needs quack-kernels on a Hopper/Blackwell GPU")
@pytest.mark.parametrize("main_grad_dtype", [None, torch.float32, torch.bfloat16])
def test_quack_kernels_match_megatrons_mlp_on_the_gpu(main_grad_dtype):
    torch.manual_seed(0)
    with parallel_context():
        mlp = _mlp(hidden_size=256, ffn_hidden_size=704, num_attention_heads=4).cuda().bfloat16()
        w1, w2 = mlp.linear_fc1.weight, mlp.linear_fc2.weight
        x = torch.randn(AUTO_MIN_TOKENS, 1, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dout = torch.randn_like(x)
        mlp.config.mlp_kernel = "torch"
        ref_out, _ = mlp(x)
        ref = torch.autograd.grad(ref_out, (x, w1, w2), dout)
        fuse = main_grad_dtype is not None
        if fuse:
            for w in (w1, w2):
                w.main_grad = torch.zeros(w.shape, dtype=main_grad_dtype, device="cuda")
                w.grad_added_to_main_grad = False
        mlp.config.mlp_kernel, mlp.config.gradient_accumulation_fusion = "quack", fuse
        out, _ = mlp(x)
        got = list(torch.autograd.grad(out, (x, w1, w2), dout))
        if fuse:
            got[1:] = [w1.main_grad, w2.main_grad]
        for name, r, g in zip(("out", "dx", "dw1", "dw2"), (ref_out, *ref), (out, *got)):
            torch.testing.assert_close(g.float(), r.float(), rtol=2e-2, atol=2e-2 * r.float().abs().max().item(),
                                       msg=lambda m, n=name: f"{n}: {m}")

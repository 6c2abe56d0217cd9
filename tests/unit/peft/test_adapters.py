"""LoRA / DoRA / CanonicalLoRA on a tiny megatron GPT: identity at init, frozen base, training, merge."""

import pytest
import torch

from sft_bridge_port.peft import CanonicalLoRA, DoRA, LoRA, merge_adapters
from sft_bridge_port.utils.dist_context import parallel_context
from tests.unit.peft.helpers import batch, logits, megatron_model, randomize_adapters

CONFIGS = {
    "lora": lambda: LoRA(dim=4, alpha=8),
    "dora": lambda: DoRA(dim=4),
    "canonical": lambda: CanonicalLoRA(dim=4, alpha=8),
}


@pytest.mark.parametrize("scheme", sorted(CONFIGS))
def test_zero_b_init_leaves_the_output_unchanged_exactly(scheme):
    with parallel_context(seed=1):
        model = megatron_model()
        tokens, pos = batch()
        with torch.no_grad():
            ref = logits(model, tokens, pos)
            CONFIGS[scheme]()([model])
            out = logits(model, tokens, pos)
        assert torch.equal(out, ref)


def test_adapter_names_follow_bridge_and_only_adapters_train():
    with parallel_context(seed=1):
        model = megatron_model()
        peft = LoRA(dim=4)
        peft([model])
        names = peft.trainable_parameter_names([model])
        assert len(names) == 2 * 4 * 2  # (A, B) x 4 linears x 2 layers
        assert "decoder.layers.1.self_attention.linear_qkv.adapter.linear_in.weight" in names
        assert "decoder.layers.0.mlp.linear_fc2.adapter.linear_out.weight" in names
        assert "decoder.layers.0.self_attention.linear_qkv.weight" in dict(model.named_parameters())
        assert all(".adapter." in n for n in names)
        qkv = model.decoder.layers[0].self_attention.linear_qkv
        assert qkv.adapter.linear_in.weight.shape == (4, 32)
        assert qkv.adapter.linear_out.weight.shape == ((4 + 2 * 2) * 8, 4)


@pytest.mark.parametrize("scheme", sorted(CONFIGS))
def test_only_adapter_params_get_grads_and_change_after_a_step(scheme):
    with parallel_context(seed=1):
        model = megatron_model()
        peft = CONFIGS[scheme]()
        peft([model])
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(trainable, lr=0.1)
        tokens, pos = batch()
        for _ in range(2):  # step 1 moves B off zero, step 2 then gives A a gradient too
            opt.zero_grad()
            model(tokens, pos, None, labels=tokens).mean().backward()
            opt.step()
        for name, p in model.named_parameters():
            if ".adapter." in name:
                assert not torch.equal(p, before[name]), f"{name} did not change"
            else:
                assert p.grad is None and torch.equal(p, before[name]), f"base param {name} changed"


def test_short_lora_run_lowers_the_loss():
    with parallel_context(seed=2):
        model = megatron_model()
        LoRA(dim=8, alpha=16)([model])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        tokens, pos = batch(seed=3, batch_size=4)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss = model(tokens, pos, None, labels=tokens).mean()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.9 * losses[0] and losses[-1] == min(losses), losses


def test_full_recompute_still_trains_adapters():
    with parallel_context(seed=1):
        model = megatron_model(recompute=True)
        LoRA(dim=4, lora_B_init_method="normal")([model])
        tokens, pos = batch()
        model(tokens, pos, None, labels=tokens).mean().backward()
        grads = [p.grad for n, p in model.named_parameters() if ".adapter." in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("scheme", sorted(CONFIGS))
def test_merged_model_matches_adapted_model(scheme):
    """Merge computes in fp32; fp32 model, so outputs agree to 1e-5 (only summation order differs)."""
    with parallel_context(seed=1):
        model = megatron_model()
        CONFIGS[scheme]()([model])
        randomize_adapters(model)
        tokens, pos = batch()
        with torch.no_grad():
            adapted = logits(model, tokens, pos)
            merge_adapters([model])
            merged = logits(model, tokens, pos)
        assert not any(".adapter." in n for n, _ in model.named_parameters())
        assert not any(".adapter." in k for k in model.sharded_state_dict())
        torch.testing.assert_close(merged, adapted, rtol=1e-5, atol=1e-5)


def test_disable_adapter_gives_base_output():
    with parallel_context(seed=1):
        model = megatron_model()
        tokens, pos = batch()
        with torch.no_grad():
            ref = logits(model, tokens, pos)
            peft = DoRA(dim=4)
            peft([model])
            randomize_adapters(model)
            assert not torch.allclose(logits(model, tokens, pos), ref, atol=1e-3)
            with peft.disable_adapter([model]):
                assert torch.equal(logits(model, tokens, pos), ref)


def test_wildcard_targets_select_single_layers_and_typos_fail():
    with parallel_context(seed=1):
        model = megatron_model()
        peft = CanonicalLoRA(target_modules=["*.layers.1.*.linear_q", "linear_fc1_up"], dim=2)
        peft([model])
        names = peft.trainable_parameter_names([model])
        assert sorted({n.split(".adapter.")[0] for n in names}) == [
            "decoder.layers.0.mlp.linear_fc1", "decoder.layers.1.mlp.linear_fc1",
            "decoder.layers.1.self_attention.linear_qkv",
        ]  # fmt: skip
        assert all(".adapter_up." in n for n in names if "linear_fc1" in n)
        with pytest.raises(ValueError, match="already carries adapters"):
            peft([model])
        with pytest.raises(ValueError, match=r"matched no module: \['linear_qvk'\]"):
            LoRA(target_modules=["linear_qvk"])([megatron_model()])


def test_exclude_modules_adapts_every_other_parallel_linear():
    with parallel_context(seed=1):
        model = megatron_model()
        peft = LoRA(target_modules=[], exclude_modules=["linear_fc2", "output_layer"], dim=2)
        peft([model])
        adapted = sorted({n.split(".adapter.")[0].rsplit(".", 1)[-1] for n in peft.trainable_parameter_names([model])})
        assert adapted == ["linear_fc1", "linear_proj", "linear_qkv"]


@pytest.mark.parametrize("mode", ["column", "row"])
def test_fused_addmm_output_equals_output_plus_delta_values_and_grads(mode):
    from sft_bridge_port.peft.adapters import LoRAAdapter, ParallelLayout

    torch.manual_seed(5)
    layout = ParallelLayout(mode, 1, 0, None, False, False, in_local=6, out_local=5)
    adapter = LoRAAdapter(layout, dim=3, alpha=7.0)
    torch.nn.init.normal_(adapter.linear_out.weight)  # B = 0 at init would hide a wrong scale
    x = torch.randn(4, 2, 6, requires_grad=True)
    y = torch.randn(4, 2, 5, requires_grad=True)
    assert adapter._fusable(y)
    fused, bias = adapter(None, x, (y, None))
    expected = y + adapter.delta(x)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)
    assert bias is None
    grads = torch.autograd.grad(fused.square().sum(), (x, y, adapter.linear_in.weight, adapter.linear_out.weight))
    ref = torch.autograd.grad(expected.square().sum(), (x, y, adapter.linear_in.weight, adapter.linear_out.weight))
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)
    adapter.dropout_position, adapter.dropout.p = "post", 0.5  # post-dropout: the unfused sum
    assert not adapter._fusable(y)

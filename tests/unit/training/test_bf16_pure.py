"""``mixed_precision='bf16_pure'`` end to end on CPU: what the optimizer holds, that it learns, and exact resume."""

import pytest
import torch

from sft_bridge_port.training import finetune
from sft_bridge_port.training.gpt_step import forward_step
from tests.unit.training.helpers import make_config, read_metrics
from tests.unit.training.test_finetune import LR, _pretrained


def _losses(run_dir) -> dict[int, float]:
    return {r["iteration"]: r["lm loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


def _pure_config(tmp_path, **kw):
    cfg = make_config(tmp_path, **kw)
    cfg.mixed_precision = "bf16_pure"
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pure")
    pretrained = str(_pretrained(root / "pretrained"))
    seen = {}
    from sft_bridge_port.training import train as train_module

    original = train_module.train_step

    def recording_step(step_fn, data, model, optimizer, *args, **kwargs):  # keeps the model and optimizer to inspect
        seen.setdefault("model", model)
        seen.setdefault("optimizer", optimizer)
        return original(step_fn, data, model, optimizer, *args, **kwargs)

    train_module.train_step = recording_step
    try:
        finetune(_pure_config(root / "A", train_iters=20, save_interval=10, pretrained=pretrained, lr=LR), forward_step)
    finally:
        train_module.train_step = original
    cfg_b = _pure_config(root / "B", train_iters=20, save_interval=None, pretrained=pretrained, lr=LR,
                         load=str(root / "A" / "ckpt"))
    cfg_b.checkpoint.ckpt_step = 10
    finetune(cfg_b, forward_step)
    return {"A": root / "A", "B": root / "B", **seen}


def test_weights_grads_and_adam_moments_are_bf16_with_no_master_copy(runs):
    params = [p for p in runs["model"][0].parameters() if p.requires_grad]
    assert params and all(p.dtype == torch.bfloat16 for p in params)
    assert all(p.main_grad.dtype == torch.bfloat16 for p in params)  # DDP's grad buffer: reduced in bf16
    inner = runs["optimizer"].optimizer  # torch's Adam inside megatron-core's plain optimizer
    held = {id(p) for group in inner.param_groups for p in group["params"]}
    assert held == {id(p) for p in params}  # it updates the model's own tensors: no fp32 copy exists
    states = [inner.state[p] for p in params]
    assert all(s["exp_avg"].dtype == torch.bfloat16 and s["exp_avg_sq"].dtype == torch.bfloat16 for s in states)
    optimizer_bytes = sum(t.numel() * t.element_size() for p in params for t in (p, p.main_grad,
                          inner.state[p]["exp_avg"], inner.state[p]["exp_avg_sq"]))
    assert optimizer_bytes == 8 * sum(p.numel() for p in params)  # vs 18 B/param under bf16_mixed


def test_bf16_pure_lowers_the_loss(runs):
    losses = _losses(runs["A"])
    assert sorted(losses) == list(range(1, 21))
    assert sum(losses[i] for i in range(16, 21)) / 5 < sum(losses[i] for i in range(1, 6)) / 5 - 0.5, losses


def test_resume_from_a_bf16_pure_checkpoint_reproduces_the_run(runs):
    a, b = _losses(runs["A"]), _losses(runs["B"])
    assert sorted(b) == list(range(11, 21))
    assert all(b[s] == pytest.approx(a[s], rel=1e-6, abs=1e-7) for s in b), (a, b)


def test_clipping_scales_bf16_grads_like_fp32_ones():
    from sft_bridge_port.training.torch_kernels import clip_grad_by_total_norm, foreach_l2_norm

    torch.manual_seed(0)
    fp32 = [torch.nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    for p in fp32:
        p.grad = torch.randn_like(p) * 4
    bf16 = [torch.nn.Parameter(p.detach().bfloat16()) for p in fp32]
    for p, q in zip(bf16, fp32):
        p.grad = q.grad.bfloat16()
    norm = float(foreach_l2_norm(0, None, [[p.grad for p in bf16]], False)[0])
    assert norm == pytest.approx(float(torch.linalg.vector_norm(torch.cat([p.grad.float().flatten() for p in bf16]))))
    clip_grad_by_total_norm(bf16, 1.0, norm)
    clipped = torch.linalg.vector_norm(torch.cat([p.grad.float().flatten() for p in bf16]))
    assert clipped == pytest.approx(1.0, rel=1e-2) and all(p.grad.dtype == torch.bfloat16 for p in bf16)
    clip_grad_by_total_norm(bf16, 1.0, 0.5)  # below the limit: untouched
    assert torch.linalg.vector_norm(torch.cat([p.grad.float().flatten() for p in bf16])) == clipped


@pytest.mark.gpu
def test_bf16_pure_on_one_gpu_lowers_the_loss_with_the_cuda_kernels(tmp_path):
    """On CUDA the fast kernels are on: weight grads GEMM-accumulate into the bf16 buffer, fused AdamW on bf16."""
    cfg = _pure_config(tmp_path, train_iters=30, save_interval=None, pretrained=str(_pretrained(tmp_path / "pre")),
                       lr=LR)
    finetune(cfg, forward_step)
    assert cfg.model.gradient_accumulation_fusion and cfg.model.linear_ce_chunk_tokens > 0
    losses = _losses(tmp_path)
    assert sum(losses[i] for i in range(26, 31)) / 5 < sum(losses[i] for i in range(1, 6)) / 5 - 0.5, losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("factor", [1 / 3373, "tensor"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_vectorised_grad_scaling_is_the_in_place_product_bit_for_bit(dtype, factor, device):
    from types import SimpleNamespace

    from megatron.core.distributed.param_and_grad_buffer import _ParamAndGradBuffer

    from sft_bridge_port.training import torch_kernels
    from sft_bridge_port.training.torch_kernels import install_vectorised_grad_scaling, scale_grad_buffer

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    grads = torch.randn(100_007, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    factor = torch.tensor(1 / 3373, device=device) if factor == "tensor" else factor  # fp32 0-dim, as mcore passes
    expected = grads.clone()
    expected *= factor
    buffer = SimpleNamespace(grad_data=grads)
    old_split = torch_kernels._SCALE_SPLIT
    torch_kernels._SCALE_SPLIT = 4096  # several multi-tensor operands, as an 8B buffer has
    try:
        scale_grad_buffer(buffer, factor)
    finally:
        torch_kernels._SCALE_SPLIT = old_split
    assert torch.equal(buffer.grad_data, expected)
    install_vectorised_grad_scaling()
    assert _ParamAndGradBuffer.scale_gradients is scale_grad_buffer

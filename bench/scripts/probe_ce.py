"""Probe (round 7): the cross-entropy elementwise work of one LM-head chunk, ours against quack's one-pass kernel.

    python bench/scripts/probe_ce.py    # on the GPU, with quack-kernels installed (bench/scripts/fa4_env.sh)

One 4096-token chunk of a 128256 vocabulary (bf16 logits, 1 GiB). Ours (models/linear_ce.py, kept logits): the
forward's compiled log-sum-exp + target, the backward's compiled ``(softmax - onehot) * grad``. quack's
``cross_entropy_fwd_out`` reads each row once (the row lives in a cluster's shared memory) and writes loss, lse
and ``softmax - onehot`` in place. GPU ms per chunk (kernels summed by torch.profiler), and the largest
difference of loss and of the gradient (ours with grad 1) between the two.
"""

from __future__ import annotations

import torch

from bench.scripts.probe_flash_cute import gpu_ms
from sft_bridge_port.models.linear_ce import _kernel

TOKENS, VOCAB = 4096, 128256


def main() -> None:
    from quack.cross_entropy import cross_entropy_fwd_out

    torch.manual_seed(0)
    logits = (torch.randn(TOKENS, VOCAB, device="cuda") * 3).to(torch.bfloat16)
    labels = torch.randint(0, VOCAB, (TOKENS,), device="cuda")
    grad = torch.ones(TOKENS, device="cuda")
    fwd, bwd = _kernel("fwd"), _kernel("bwd")
    lse, loss = fwd(logits, labels)
    ref_dx = bwd(logits, lse, labels, grad)
    q_loss, q_lse, q_dx = torch.empty_like(loss), torch.empty_like(lse), torch.empty_like(logits)
    cross_entropy_fwd_out(logits, labels, None, q_loss, q_lse, q_dx, None, -100)
    diffs = {"loss": (q_loss, loss), "lse": (q_lse, lse), "dx": (q_dx.float(), ref_dx.float())}
    print("  ".join(f"max |{k} diff| {(a - b).abs().max().item():.2e}" for k, (a, b) in diffs.items()), flush=True)
    cases = {
        "ours fwd (lse, target)": lambda: fwd(logits, labels),
        "ours bwd (grad logits)": lambda: bwd(logits, lse, labels, grad),
        "quack fwd_out (loss, lse, dx)": lambda: cross_entropy_fwd_out(logits, labels, None, q_loss, q_lse, q_dx,
                                                                       None, -100),
    }
    for name, fn in cases.items():
        ms = gpu_ms(fn)
        print(f"{name:32s} {ms:7.3f} ms GPU per chunk  ({2 * TOKENS * VOCAB / ms / 1e6:6.0f} GB/s per logits pass)",
              flush=True)


if __name__ == "__main__":
    main()

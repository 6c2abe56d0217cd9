"""Where flash-attention 4's host time goes: cProfile of 200 fwd+bwd calls on 256 packed tokens (GPU-trivial).

    python bench/scripts/profile_flash_cute_host.py     # on the GPU, with flash-attn-4 installed (fa4_env.sh)
"""

from __future__ import annotations

import cProfile
import pstats

import torch

from sft_bridge_port.models.flash_cute import cute_varlen


def main() -> None:
    cu = torch.tensor([0, 100, 256], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(256, h, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True) for h in (32, 8, 8))
    grad = torch.randn(256, 32, 64, device="cuda", dtype=torch.bfloat16)

    def calls(n: int) -> None:
        for _ in range(n):
            cute_varlen(q, k, v, cu, cu, 256, 256).backward(grad)
        torch.cuda.synchronize()

    calls(5)
    prof = cProfile.Profile()
    prof.enable()
    calls(200)
    prof.disable()
    stats = pstats.Stats(prof).sort_stats("tottime")
    stats.print_stats(30)


if __name__ == "__main__":
    main()

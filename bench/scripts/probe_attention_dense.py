"""Probe (round 4): can dense cuDNN/flash SDPA over length-bucketed documents beat varlen FA2 on packed data?

    python bench/scripts/probe_attention_dense.py      # on the GPU; one line per case: ms per fwd+bwd call

Documents of two 4096-token packs (bench.stream, 4 different seeds), 32 query heads, 8 KV heads, head_dim 64, bf16.
"dense": documents sorted by length, grouped while padding stays under ``--waste`` of the group's real tokens,
each group gathered into a right-padded ``[docs, heads, S, d]`` batch for causal SDPA (padding keys sit after every
real query, so causal masking keeps them out), outputs scattered back: the gathers and scatters are timed too.
"""

from __future__ import annotations

import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.scripts.probe_attention import KV, H, attention_inputs, timed
from bench.stream import join_packs, make_packs


def groups(lengths: list[int], waste: float, multiple: int = 64) -> list[list[int]]:
    """Document indices per group: longest first, a group grows while docs x padded-max <= (1+waste) x real."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    for i in order:
        if out:
            g = out[-1]
            size = -(-lengths[g[0]] // multiple) * multiple
            if (len(g) + 1) * size <= (1 + waste) * (sum(lengths[j] for j in g) + lengths[i]):
                g.append(i)
                continue
        out.append([i])
    return out


def dense_plan(lengths: list[int], waste: float):
    starts = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()[:-1]])
    total = sum(lengths)
    plan = []
    for g in groups(lengths, waste):
        size = -(-lengths[g[0]] // 64) * 64
        pos = torch.arange(size)
        idx = torch.stack([torch.where(pos < lengths[i], starts[i] + pos, total) for i in g])  # total = zero row
        valid = torch.stack([pos < lengths[i] for i in g])
        plan.append((idx.cuda(), valid.cuda(), idx[valid].cuda()))
    return plan


def dense_attention(q, k, v, plan, backend, gqa: bool):
    t = q.shape[0]
    pad = lambda x: torch.cat([x, x.new_zeros(1, *x.shape[1:])])  # noqa: E731
    qp, kp, vp = pad(q), pad(k), pad(v)
    out = q.new_empty(q.shape)
    pieces = []
    for idx, valid, dest in plan:
        qg, kg, vg = (x[idx].transpose(1, 2) for x in (qp, kp, vp))  # [B, heads, S, d]
        if not gqa:
            kg, vg = kg.repeat_interleave(H // KV, 1), vg.repeat_interleave(H // KV, 1)
        with sdpa_kernel(backend):
            og = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=gqa)
        pieces.append((dest, og.transpose(1, 2)[valid]))
    dests = torch.cat([d for d, _ in pieces])
    vals = torch.cat([o for _, o in pieces])
    return out.index_copy(0, dests, vals) if t else out


def main() -> None:
    waste = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
    print(f"torch {torch.__version__} cudnn {torch.backends.cudnn.version()} waste {waste}", flush=True)
    from torch.nn.attention.varlen import varlen_attn

    totals: dict[str, float] = {}
    for seed in range(4):
        pack = join_packs(make_packs(2, 4096, 1000, seed=seed))
        cu = torch.tensor([0, *torch.tensor(pack.lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        t, max_len = int(cu[-1]), max(pack.lengths)
        q, k, v, grad = attention_inputs(t)
        plan = dense_plan(pack.lengths, waste)
        padded = sum(int(idx.numel()) for idx, _, _ in plan)
        print(f"seed {seed}: docs {len(pack.lengths)} max {max_len} groups {len(plan)} padded/real {padded / t:.2f}")

        def varlen():
            out = varlen_attn(q, k, v, cu, cu, max_len, max_len, window_size=(-1, 0))
            out.backward(grad)

        ref = varlen_attn(q, k, v, cu, cu, max_len, max_len, window_size=(-1, 0))
        cases = {"varlen_attn (FA2, ours)": varlen}
        for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)):
            for gqa in (True, False):
                def run(backend=backend, gqa=gqa):
                    dense_attention(q, k, v, plan, backend, gqa).backward(grad)

                cases[f"dense {name} {'enable_gqa' if gqa else 'repeat kv'}"] = run
        for name, fn in cases.items():
            try:
                if name.startswith("dense"):
                    backend = SDPBackend.CUDNN_ATTENTION if "cudnn" in name else SDPBackend.FLASH_ATTENTION
                    out = dense_attention(q, k, v, plan, backend, "enable_gqa" in name)
                    err = (out.float() - ref.float()).abs().max().item()
                else:
                    err = 0.0
                ms = timed(fn)
                totals[name] = totals.get(name, 0.0) + ms
                print(f"  {name:28s} {ms:8.3f} ms fwd+bwd   max|out - varlen| {err:.3g}", flush=True)
            except Exception as exc:  # a backend that refuses these inputs says why
                print(f"  {name:28s} error: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
    for name, ms in totals.items():
        print(f"mean {name:28s} {ms / 4:8.3f} ms")


if __name__ == "__main__":
    main()

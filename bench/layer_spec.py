"""Benchmark: our fast layer spec (megatron-core + PyTorch SDPA/varlen) vs HF transformers + SDPA.

One forward+backward of one packed batch, Llama-3.2-1B shape (16 layers, hidden 2048, 32 heads / 8 KV
groups, FFN 8192, vocab 128256, tied), seq 4096, bf16, random weights, identical token stream and document
boundaries for both systems (HF gets ``position_ids`` reset per document, which makes it mask across documents).

FLOPs per step = 6·N·tokens + 6·L·h·Σ s_i²  (N = parameter count; the second term is causal attention
forward+backward, 6·L·h·s_i per token of a document of length s_i, using the real document lengths).

Run: ``python -m bench.layer_spec [--iters 10] [--docs packed|single]``. Prints one JSON line per system, then
one line with the ratios (ours / HF).
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def doc_lengths(seq_len: int, mode: str, seed: int = 0) -> list[int]:
    """Document lengths filling ``seq_len``: one document ('single') or random 128..1024-token documents."""
    if mode == "single":
        return [seq_len]
    gen = torch.Generator().manual_seed(seed)
    lengths: list[int] = []
    while sum(lengths) < seq_len:
        lengths.append(int(torch.randint(128, 1025, (1,), generator=gen)))
    lengths[-1] -= sum(lengths) - seq_len
    return [n for n in lengths if n > 0]


def time_steps(step, iters: int, warmup: int = 3) -> tuple[float, float]:
    """(seconds per step, peak GiB) of ``step()`` after warm-up."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters, torch.cuda.max_memory_allocated() / 2**30


def report(name: str, sec: float, peak: float, n_params: int, lengths: list[int], layers: int, hidden: int) -> dict:
    tokens = sum(lengths)
    flops = 6 * n_params * tokens + 6 * layers * hidden * sum(n * n for n in lengths)
    row = {"system": name, "ms_per_step": round(sec * 1e3, 2), "tokens_per_s": round(tokens / sec),
           "tflops": round(flops / sec / 1e12, 1), "peak_gib": round(peak, 2), "tokens": tokens,
           "num_docs": len(lengths), "n_params": n_params}
    print(json.dumps(row), flush=True)
    return row


def bench_hf(cfg: dict, ids: torch.Tensor, pos: torch.Tensor, iters: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().train()

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, position_ids=pos, labels=ids).loss.backward()

    sec, peak = time_steps(step, iters)
    n = model.num_parameters()
    del model
    torch.cuda.empty_cache()
    return sec, peak, n


def bench_mcore(cfg: dict, ids, pos, lengths: list[int], iters: int, cu_device: str, **overrides):
    from megatron.core.packed_seq_params import PackedSeqParams

    from sft_bridge_port.models import provider_from_hf_config

    provider = provider_from_hf_config(cfg, seq_length=ids.shape[1], bf16=True, params_dtype=torch.bfloat16,
                                       **overrides)
    model = provider.provide_distributed_model(wrap_with_ddp=False)[0].train()
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device=cu_device)

    def step():
        model.zero_grad(set_to_none=True)
        psp = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu,
                              max_seqlen_q=max(lengths), max_seqlen_kv=max(lengths))
        loss = model(ids, pos, None, labels=ids, packed_seq_params=psp)  # [1, s] fp32 per-token loss
        (loss.sum() / loss.numel()).backward()

    sec, peak = time_steps(step, iters)
    n = sum(p.numel() for p in model.parameters()) - (provider.padded_vocab_size() - provider.vocab_size) * provider.hidden_size
    del model
    torch.cuda.empty_cache()
    return sec, peak, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--docs", choices=["packed", "single"], default="packed")
    parser.add_argument("--systems", default="hf,ours,ours_cu_cpu,ours_ce_fused")
    args = parser.parse_args()

    from sft_bridge_port.models.builtin_configs import public_config
    from sft_bridge_port.utils.dist_context import parallel_context

    cfg = public_config("meta-llama/Llama-3.2-1B")
    lengths = doc_lengths(args.seq, args.docs)
    torch.manual_seed(0)
    ids = torch.randint(0, cfg["vocab_size"], (1, args.seq), device="cuda")
    pos = torch.cat([torch.arange(n) for n in lengths])[None].cuda()
    shape = (cfg["num_hidden_layers"], cfg["hidden_size"])
    rows = {}
    systems = args.systems.split(",")
    if "hf" in systems:
        rows["hf"] = report(f"hf_sdpa_{args.docs}", *bench_hf(cfg, ids, pos, args.iters), lengths, *shape)
    with parallel_context():
        variants = (("ours", "cuda", {}), ("ours_cu_cpu", "cpu", {}),
                    ("ours_ce_fused", "cpu", {"cross_entropy_loss_fusion": True}))
        for name, device, overrides in variants:
            if name in systems:
                res = bench_mcore(cfg, ids, pos, lengths, args.iters, device, **overrides)
                rows[name] = report(f"mcore_fast_spec_{args.docs}_{name}", *res, lengths, *shape)
    if "hf" in rows:
        for name in rows.keys() - {"hf"}:
            print(json.dumps({"ratio": f"{name}/hf", "docs": args.docs,
                              "tokens_per_s": round(rows[name]["tokens_per_s"] / rows["hf"]["tokens_per_s"], 3),
                              "peak_memory": round(rows[name]["peak_gib"] / rows["hf"]["peak_gib"], 3)}), flush=True)


if __name__ == "__main__":
    main()

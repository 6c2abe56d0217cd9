"""Benchmark (not a test): seconds and peak RSS of import and export for a ~1B Llama-3.2-1B-shaped model.

    PYTHONPATH=. python bench/conversion.py [--workdir /tmp/conv_bench] [--layers 16]

Random bf16 weights are written locally (no download) with Llama-3.2-1B's shapes: 16 layers, hidden 2048,
FFN 8192, 32 heads / 8 KV groups, vocab 128256, tied embeddings (1.24B parameters, 2.5 GB). Each step runs
in its own child process so its peak RSS (ru_maxrss of that process tree) is measured on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

LLAMA32_1B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048, intermediate_size=8192,
    num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
    max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
    hidden_act="silu", torch_dtype="bfloat16", bos_token_id=128000, eos_token_id=128001,
)


def make_random_hf(folder: Path, cfg: dict) -> int:
    """Write config.json + random bf16 safetensors (2 GB shards, with index); returns the parameter count."""
    from checkpoints_conv.hf_io import write_safetensors
    from checkpoints_conv.mapping import shape_from_hf_config
    from checkpoints_conv.engine import expected_hf_shapes, plan
    from checkpoints_conv.tables import get_table

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    shape = shape_from_hf_config(cfg)
    gen = torch.Generator().manual_seed(0)
    count = 0

    def tensors():
        nonlocal count
        for row, layer in plan(get_table(cfg["architectures"][0]), shape):
            for name, dims in zip(row.hf_names(layer), expected_hf_shapes(row, shape)):
                t = (torch.randn(dims, generator=gen) * 0.02).to(torch.bfloat16)
                count += t.numel()
                yield name, t

    write_safetensors(tensors(), folder, max_shard_bytes=2 * 1024**3)
    return count


def timed_child(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS GiB) of ``python -m checkpoints_conv <args>`` in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "checkpoints_conv", *args, "--no-progress"], check=True)
    seconds = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak_kib, before) / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/conv_bench")
    parser.add_argument("--layers", type=int, default=16)
    args = parser.parse_args()
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    cfg = {**LLAMA32_1B, "num_hidden_layers": args.layers}
    t0 = time.perf_counter()
    params = make_random_hf(work / "hf", cfg)
    print(f"random HF model: {params / 1e9:.3f} B params, {time.perf_counter() - t0:.1f} s to write")
    imp = timed_child(["import", "--hf-model", str(work / "hf"), "--megatron-path", str(work / "mg")])
    print(f"import: {imp[0]:.1f} s, peak RSS {imp[1]:.2f} GiB")
    exp = timed_child(["export", "--megatron-path", str(work / "mg"), "--hf-path", str(work / "hf_out")])
    print(f"export: {exp[0]:.1f} s, peak RSS {exp[1]:.2f} GiB (the max so far over child processes)")
    size_gb = sum(p.stat().st_size for p in (work / "hf").glob("*.safetensors")) / 1e9
    print(f"throughput: import {size_gb / imp[0]:.2f} GB/s, export {size_gb / exp[0]:.2f} GB/s of bf16 weights")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()

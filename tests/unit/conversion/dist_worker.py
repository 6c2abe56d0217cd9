"""torchrun worker for test_parallel_load: load HF folders into TP/PP-sharded models, save them like training.

    torchrun --nproc_per_node=2 -m tests.unit.conversion.dist_worker HF_DIR:CKPT_ROOT:TP:PP [...]

Each job runs in turn in the same two processes (one interpreter start for all of them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def run_job(hf_dir: str, root: str, tp: int, pp: int) -> None:
    from checkpoints_conv import load_hf_weights_into_model
    from checkpoints_conv.importer import write_run_config
    from sft_bridge_port.models import get_provider
    from sft_bridge_port.utils.ckpt_layout import iter_dir_name, write_tracker
    from sft_bridge_port.utils.dist_ckpt import save_model_weights
    from sft_bridge_port.utils.dist_context import parallel_context

    provider = get_provider(hf_dir, tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp, pipeline_dtype=torch.float32)
    with parallel_context(tp, pp):
        chunks = provider.provide_distributed_model(wrap_with_ddp=False, use_cpu_initialization=True)
        load_hf_weights_into_model(chunks, hf_dir)
        iter_dir = Path(root) / iter_dir_name(5)
        save_model_weights(chunks, iter_dir)
        torch.distributed.barrier()
        if torch.distributed.get_rank() == 0:
            write_run_config(provider, iter_dir)
            write_tracker(root, 5)
        torch.distributed.barrier()


if __name__ == "__main__":
    from sft_bridge_port.utils.dist_context import init_distributed

    init_distributed()  # once: parallel_context then reuses the group for every job
    for job in sys.argv[1:]:
        hf, ckpt, tp, pp = job.split(":")
        run_job(hf, ckpt, int(tp), int(pp))

"""Process-group and megatron-core parallel-state setup, one place for training, conversion and tests.

Under ``torchrun`` the usual environment variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) are used. A plain
``python`` process becomes a world of one on a free local port, so conversion, the demo and the tests run
without a launcher. Without a GPU the backend is gloo and the CPU compatibility layer is switched on first.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
from typing import Iterator

import torch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    """nccl when CUDA is usable, else gloo."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed(backend: str | None = None, timeout_minutes: int = 10) -> bool:
    """Initialise ``torch.distributed`` once; returns True when this call created the process group.

    A ``backend`` of "nccl" on a machine without CUDA is replaced by gloo (Bridge recipes say nccl).
    """
    if not torch.cuda.is_available():
        from sft_bridge_port.utils.cpu_compat import enable_cpu_mode

        enable_cpu_mode()
    if torch.distributed.is_initialized():
        return False
    if backend is None or (backend == "nccl" and not torch.cuda.is_available()):
        backend = default_backend()
    if "RANK" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ["MASTER_PORT"] = str(_free_port())
        os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"] = "0", "1", "0"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(
        backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes)
    )
    return True


def initialize_parallel_state(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    virtual_pipeline_model_parallel_size: int | None = None,
    context_parallel_size: int = 1,
    seed: int | None = 1234,
) -> None:
    """``parallel_state.initialize_model_parallel`` plus the model-parallel RNG seeding (CPU-safe)."""
    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
        context_parallel_size=context_parallel_size,
    )
    if seed is not None:
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def destroy_distributed() -> None:
    """Tear down megatron-core parallel state and the process group (idempotent)."""
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def parallel_context(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    virtual_pipeline_model_parallel_size: int | None = None,
    context_parallel_size: int = 1,
    seed: int | None = 1234,
    backend: str | None = None,
) -> Iterator[None]:
    """Run a block inside an initialised process group + parallel state; tears down what it created.

    Used by conversion (world of one on CPU) and tests. If a process group already exists it is reused and
    left in place; the parallel state is always rebuilt for the block and destroyed afterwards.
    """
    from megatron.core import parallel_state

    created = init_distributed(backend)
    try:
        initialize_parallel_state(
            tensor_model_parallel_size,
            pipeline_model_parallel_size,
            virtual_pipeline_model_parallel_size,
            context_parallel_size,
            seed,
        )
        yield
    finally:
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
        if created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

"""Run megatron-core on a machine without a GPU (tests, laptops, the demo).

megatron-core hard-codes CUDA in a handful of places that have nothing to do with kernels: ``device="cuda"`` in
the schedules and DDP buffers, ``torch.cuda.current_device()`` for allocations, CUDA RNG state in the
model-parallel RNG tracker, ``torch.cuda.synchronize``/streams around checkpoint writes, the default causal mask
helpers, and ``param.type() == 'torch.cuda.FloatTensor'`` checks in the optimizers. The probes recorded in
``shared/reference/mcore_on_cpu.md`` found exactly these; this module redirects them to the CPU and nothing else.

Scope and guarantees:
- ``enable_cpu_mode()`` does nothing when CUDA is available, and is idempotent.
- It is pinned to the megatron-core versions we support (``SUPPORTED_MCORE``): ``check_patch_targets()`` raises if an
  upgrade moved a function we redirect, and ``tests/unit/utils/test_cpu_compat.py`` calls it, so a break is loud.
- Our own attention spec never calls the CUDA-only softmax/mask paths; the mask helpers are redirected only for
  megatron's local spec, which tests use as a reference.

How: a process-wide ``TorchFunctionMode`` rewrites CUDA device requests in tensor factories, ``.to()`` and
``.cuda()``; direct replacements handle what a mode cannot reach (``torch.cuda.*`` module functions, and code that
runs inside ``autograd.Function.backward``, where modes are not active, such as activation recompute's RNG swaps).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

SUPPORTED_MCORE = ("0.16", "0.17", "0.18", "0.19")

_ENABLED = False
_MODE: TorchFunctionMode | None = None

# (module path, attribute) pairs that enable_cpu_mode replaces; checked by check_patch_targets().
PATCH_TARGETS = (
    ("megatron.core.tensor_parallel.random", "_get_cuda_rng_state"),
    ("megatron.core.tensor_parallel.random", "_set_cuda_rng_state"),
    ("megatron.core.transformer.utils", "get_default_causal_mask"),
)

_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
}


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False


class _CudaToCpuMode(TorchFunctionMode):
    """Turns every request for a CUDA tensor into a CPU tensor."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.pin_memory:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs = {**kwargs, "device": "cpu"}
        if kwargs.get("pin_memory"):
            kwargs = {**kwargs, "pin_memory": False}
        if func is torch.Tensor.to and any(_is_cuda(a) for a in args[1:]):
            args = tuple("cpu" if _is_cuda(a) else a for a in args)
        return func(*args, **kwargs)


class _NullStream:
    """Stands in for torch.cuda.Stream / Event: every synchronisation is already implied on the CPU."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getattr__(self, name: str):
        return lambda *a, **k: None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cpu_get_rng_state(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
    state = torch.get_rng_state()
    return state.clone() if clone else state


def _cpu_set_rng_state(new_state: torch.Tensor, device: int = -1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


@functools.lru_cache(maxsize=32)
def _cpu_default_causal_mask(sq: int) -> torch.Tensor:
    return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)


def _patch_torch_cuda() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: torch.device("cpu")
    cuda.synchronize = lambda *a, **k: None
    cuda.empty_cache = lambda *a, **k: None
    cuda.current_stream = lambda *a, **k: _NullStream()
    cuda.default_stream = lambda *a, **k: _NullStream()
    cuda.Stream = _NullStream
    cuda.Event = _NullStream
    cuda.stream = lambda *a, **k: contextlib.nullcontext()
    # torch.manual_seed itself calls torch.cuda.manual_seed_all, so seed the CPU generator directly.
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    cuda.memory_allocated = lambda *a, **k: 0
    cuda.max_memory_allocated = lambda *a, **k: 0
    cuda.memory_reserved = lambda *a, **k: 0


def _patch_megatron() -> None:
    import megatron.core.tensor_parallel.random as mrandom
    import megatron.core.transformer.utils as mutils

    mrandom._get_cuda_rng_state = _cpu_get_rng_state
    mrandom._set_cuda_rng_state = _cpu_set_rng_state
    mutils.get_default_causal_mask = _cpu_default_causal_mask
    try:  # fused_softmax imports the helper by name in some versions
        import megatron.core.fusions.fused_softmax as fsoftmax

        if hasattr(fsoftmax, "get_default_causal_mask"):
            fsoftmax.get_default_causal_mask = _cpu_default_causal_mask
    except ImportError:
        pass


def check_patch_targets() -> None:
    """Raise if a megatron-core upgrade removed or renamed something this module redirects."""
    import importlib

    import megatron.core

    version = megatron.core.__version__
    if not version.startswith(SUPPORTED_MCORE):
        raise RuntimeError(
            f"megatron-core {version} is outside the versions cpu_compat was checked against {SUPPORTED_MCORE}; "
            f"re-run tests/unit/utils/test_cpu_compat.py and update SUPPORTED_MCORE."
        )
    for module, attr in PATCH_TARGETS:
        if not hasattr(importlib.import_module(module), attr):
            raise RuntimeError(f"megatron-core {version}: {module}.{attr} is gone; cpu_compat needs updating")


def enable_cpu_mode() -> bool:
    """Redirect megatron-core's CUDA-only calls to the CPU. Returns True when CPU mode is (now) active."""
    global _ENABLED, _MODE
    if torch.cuda.is_available():
        return False
    if _ENABLED:
        return True
    check_patch_targets()
    _patch_torch_cuda()
    _patch_megatron()
    _MODE = _CudaToCpuMode()
    _MODE.__enter__()
    _ENABLED = True
    return True


def cpu_mode_enabled() -> bool:
    """True once enable_cpu_mode() has switched this process to CPU mode."""
    return _ENABLED

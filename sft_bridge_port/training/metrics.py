"""Training metrics: console line, progress bar, ``metrics.jsonl``, TensorBoard, W&B, loss-curve PNG.

One :class:`MetricsLogger` per run, active on the last rank only (the one that holds the loss of the last
pipeline stage, like Megatron's ``print_rank_last``); on other ranks every method is a no-op. The loop hands it
device tensors every step and it reads them back (``.item()``) only every ``logger.log_interval`` steps, so
logging adds no host sync to the other steps.

``metrics.jsonl`` holds one JSON object per logged step, e.g.::

    {"kind": "train", "iteration": 10, "lm loss": 2.31, "lr": 5e-06, "grad_norm": 1.2, "tokens_per_s": 5120.0,
     "tflops_per_gpu": 0.8, "mfu": null, "mem_gb": 1.1, "skipped": 0}
    {"kind": "valid", "iteration": 10, "lm loss": 2.40, "ppl": 11.0}
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


def memory_gb() -> float:
    """Peak memory of this rank: CUDA allocator peak on GPU, process max RSS on CPU (GiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def is_logging_rank() -> bool:
    if not torch.distributed.is_initialized():
        return True
    return torch.distributed.get_rank() == torch.distributed.get_world_size() - 1


class MetricsLogger:
    """Collects per-step values and writes them out every ``log_interval`` steps.

    Args:
        run_dir: folder for ``metrics.jsonl`` and ``loss_curve.png``.
        log_interval: steps between console lines / records.
        train_iters: total steps (progress bar and ETA).
        tensorboard_dir / wandb_*: optional sinks (skipped with a warning when the package is missing).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        log_interval: int = 1,
        train_iters: int = 0,
        tensorboard_dir: str | None = None,
        wandb_project: str | None = None,
        wandb_exp_name: str | None = None,
        wandb_entity: str | None = None,
        wandb_save_dir: str | None = None,
        enabled: bool | None = None,
        progress_bar: bool = True,
    ) -> None:
        self.enabled = is_logging_rank() if enabled is None else enabled
        self.run_dir = Path(run_dir)
        self.log_interval = max(1, int(log_interval or 1))
        self.train_iters = train_iters
        self.history: list[dict[str, Any]] = []
        self._acc: torch.Tensor | None = None
        self._steps = self._skipped = 0
        self._t0 = time.perf_counter()
        self._tb = self._wandb = self._bar = None
        self.throughput: Throughput | None = None  # set by setup; fed by the loop at log intervals
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.run_dir / METRICS_FILE, "a")
        self._tb = _open_tensorboard(tensorboard_dir)
        self._wandb = _open_wandb(wandb_project, wandb_exp_name, wandb_entity, wandb_save_dir)
        self._progress_bar = progress_bar

    def start(self, step: int) -> None:
        """Call once before the first step (after a resume, with the resumed step)."""
        self._t0 = time.perf_counter()
        if self.enabled and self._progress_bar:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=self.train_iters, initial=step, desc="train", unit="it", dynamic_ncols=True)

    def record_step(self, step: int, loss_sum_count: torch.Tensor, grad_norm: float | None, lr: float,
                    skipped: bool, throughput: "Throughput | None" = None) -> dict[str, Any] | None:
        """Add one step's ``[loss_sum, num_tokens]`` (device tensor); at a log interval write a record."""
        if not self.enabled:
            return None
        self._acc = loss_sum_count.detach() if self._acc is None else self._acc + loss_sum_count.detach()
        self._steps += 1
        self._skipped += int(skipped)
        if self._bar is not None:
            self._bar.update(1)
        if step % self.log_interval != 0 and step != self.train_iters:
            return None
        total, count = self._acc.double().cpu().tolist()  # the only host sync of the interval
        elapsed = time.perf_counter() - self._t0
        record: dict[str, Any] = {
            "kind": "train", "iteration": step,
            "lm loss": total / count if count > 0 else float("nan"),
            "lr": lr, "grad_norm": grad_norm, "skipped": self._skipped,
            "step_time_s": elapsed / self._steps, "mem_gb": round(memory_gb(), 3),
        }  # fmt: skip
        if throughput is not None:
            record.update(throughput.rates(elapsed))
        self._emit(record)
        self._acc, self._steps, self._skipped, self._t0 = None, 0, 0, time.perf_counter()
        return record

    def record_eval(self, step: int, loss: float, prefix: str = "valid") -> dict[str, Any] | None:
        if not self.enabled:
            return None
        ppl = math.exp(min(loss, 20.0)) if math.isfinite(loss) else float("nan")
        record = {"kind": prefix, "iteration": step, "lm loss": loss, "ppl": ppl}
        self._emit(record)
        return record

    def _emit(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        line = " | ".join(f"{k}: {_fmt(v)}" for k, v in record.items() if k != "kind" and v is not None)
        message = f"[{record['kind']}] {line}"
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)
        prefix = "" if record["kind"] == "train" else f"{record['kind']}/"
        scalars = {f"{prefix}{k}": v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("iteration", "kind")}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, record["iteration"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=record["iteration"])

    def close(self) -> None:
        """Flush sinks and draw ``loss_curve.png`` (when matplotlib is installed)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        plot_loss_curve(self.history, self.run_dir / LOSS_CURVE_FILE)


class Throughput:
    """Tokens/s, TFLOP/s per GPU and MFU over a log interval, from real-token counts summed over DP ranks."""

    def __init__(self, model_config: Any, vocab_size: int, world_size: int, peak_tflops: float | None) -> None:
        self.model_config, self.vocab_size = model_config, vocab_size
        self.world_size, self.peak = world_size, peak_tflops
        self.num_tokens = 0
        self.flops = 0.0

    def add(self, num_tokens: int, flops: float) -> None:
        self.num_tokens += num_tokens
        self.flops += flops

    def rates(self, elapsed: float) -> dict[str, Any]:
        elapsed = max(elapsed, 1e-9)
        tflops = self.flops / elapsed / self.world_size / 1e12
        out = {"tokens_per_s": self.num_tokens / elapsed, "tflops_per_gpu": tflops,
               "mfu": tflops / self.peak if self.peak else None}  # fmt: skip
        self.num_tokens, self.flops = 0, 0.0
        return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def _open_tensorboard(tensorboard_dir: str | None):
    if not tensorboard_dir:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.warning("logger.tensorboard_dir is set but tensorboard is not installed (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=tensorboard_dir)


def _open_wandb(project: str | None, name: str | None, entity: str | None, save_dir: str | None):
    if not project:
        return None
    try:
        import wandb
    except ImportError:
        logger.warning("logger.wandb_project is set but wandb is not installed (pip install wandb)")
        return None
    return wandb.init(project=project, name=name, entity=entity, dir=save_dir)


def plot_loss_curve(history: list[dict[str, Any]], path: Path) -> Path | None:
    """Train (and validation) ``lm loss`` against iteration as a PNG; None when matplotlib is missing."""
    train = [(r["iteration"], r["lm loss"]) for r in history if r["kind"] == "train"]
    if not train:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(*zip(*train), label="train")
    valid = [(r["iteration"], r["lm loss"]) for r in history if r["kind"] == "valid"]
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation")
    ax.set_xlabel("iteration")
    ax.set_ylabel("lm loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

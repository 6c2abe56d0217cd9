"""Tiny models and a synthetic SFT dataset for the training-engine tests (CPU, fp32, seconds)."""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Iterator

import torch

VOCAB = 64
SEQ = 16


def sft_sample(index: int, seed: int = 0, seq: int = SEQ) -> dict[str, torch.Tensor]:
    """``prompt SEP answer`` + padding; the answer follows a fixed bigram rule (learnable in a few steps) and
    only it is supervised. Its length varies by index, so micro-batches hold uneven supervised-token counts.

    Returns unshifted ``ids`` and ``mask`` of length ``seq + 1``.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    n = int(torch.randint(2, (seq - 1) // 2 + 1, (1,), generator=g))
    prompt = torch.randint(3, VOCAB, (n,), generator=g)
    answer = [int(prompt[0])]
    for _ in range(n - 1):
        answer.append(3 + (answer[-1] * 5 + 1) % (VOCAB - 3))
    ids = torch.cat([prompt, torch.tensor([2]), torch.tensor(answer)])
    mask = torch.cat([torch.zeros(n + 1), torch.ones(n)])
    pad = seq + 1 - ids.numel()
    return {"ids": torch.cat([ids, torch.zeros(pad, dtype=torch.long)]), "mask": torch.cat([mask, torch.zeros(pad)])}


def collate(indices: list[int], seed: int = 0, seq: int = SEQ) -> dict[str, torch.Tensor]:
    """Bridge's unpacked collate: tokens = ids[:-1], labels = ids[1:], loss_mask = mask[1:]."""
    samples = [sft_sample(i, seed, seq) for i in indices]
    ids = torch.stack([s["ids"] for s in samples])
    mask = torch.stack([s["mask"] for s in samples])
    return {
        "tokens": ids[:, :-1].contiguous(),
        "labels": ids[:, 1:].contiguous(),
        "loss_mask": mask[:, 1:].contiguous(),
        "position_ids": torch.arange(seq).expand(len(indices), seq).contiguous(),
        "attention_mask": None,
    }


@dataclasses.dataclass
class SyntheticSFTDataset:
    """Dataset provider for ``cfg.dataset``: global sample order fixed, split by DP rank, resumable."""

    seq_length: int = SEQ
    seed: int = 0
    num_valid_samples: int = 8

    def build_iterators(self, *, tokenizer: Any, micro_batch_size: int, data_parallel_rank: int,
                        data_parallel_size: int, consumed_train_samples: int = 0):
        def train() -> Iterator[dict[str, torch.Tensor]]:
            start = consumed_train_samples
            while True:
                first = start + data_parallel_rank * micro_batch_size
                yield collate(list(range(first, first + micro_batch_size)), self.seed, self.seq_length)
                start += micro_batch_size * data_parallel_size

        def valid() -> Iterator[dict[str, torch.Tensor]]:
            base = 10**6
            for start in range(0, self.num_valid_samples, micro_batch_size * data_parallel_size):
                first = base + start + data_parallel_rank * micro_batch_size
                yield collate(list(range(first, first + micro_batch_size)), self.seed, self.seq_length)

        return types.SimpleNamespace(train=train(), valid=valid, test=None)


def tiny_provider(**overrides: Any):
    from sft_bridge_port.models import GPTModelProvider

    fields = dict(
        num_layers=2, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64, vocab_size=VOCAB, seq_length=SEQ,
        position_embedding_type="rope", normalization="RMSNorm", gated_linear_unit=True, add_bias_linear=False,
        hidden_dropout=0.0, attention_dropout=0.0, use_cpu_initialization=True, init_method_std=0.02,
        share_embeddings_and_output_weights=False,
    )
    fields.update(overrides)
    return GPTModelProvider(**fields)


def tiny_local_gpt(seed: int = 7, calculate_per_token_loss: bool = True):
    """A megatron GPTModel on the stock local spec (needs parallel state), DDP-wrapped, deterministic init."""
    from megatron.core import tensor_parallel
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    cfg = TransformerConfig(
        num_layers=2, hidden_size=32, num_attention_heads=4, use_cpu_initialization=True, hidden_dropout=0.0,
        attention_dropout=0.0, calculate_per_token_loss=calculate_per_token_loss,
    )
    model = GPTModel(config=cfg, transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=VOCAB,
                     max_sequence_length=SEQ, position_embedding_type="rope")
    return DistributedDataParallel(cfg, DistributedDataParallelConfig(), model)


def make_config(tmp_path, *, train_iters: int = 30, save_interval: int | None = 10, gbs: int = 4, mbs: int = 2,
                pretrained: str | None = None, load: str | None = None, save: str | None = "ckpt",
                eval_interval: int | None = None, lr: float = 3e-3, **model_overrides: Any):
    from sft_bridge_port.config import (
        CheckpointConfig, ConfigContainer, DistributedDataParallelConfig, LoggerConfig, OptimizerConfig, RNGConfig,
        SchedulerConfig, TrainingConfig, ValidationConfig,
    )

    return ConfigContainer(
        train=TrainingConfig(train_iters=train_iters, global_batch_size=gbs, micro_batch_size=mbs),
        model=tiny_provider(**model_overrides),
        optimizer=OptimizerConfig(lr=lr, min_lr=lr / 10, weight_decay=0.0, clip_grad=1.0, bf16=False, fp16=False),
        ddp=DistributedDataParallelConfig(),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=2),
        validation=ValidationConfig(eval_interval=eval_interval, eval_iters=2),
        dataset=SyntheticSFTDataset(),
        logger=LoggerConfig(log_interval=1),
        checkpoint=CheckpointConfig(
            save=str(tmp_path / save) if save else None, save_interval=save_interval, load=load,
            pretrained_checkpoint=pretrained, fully_parallel_save=False,
        ),
        rng=RNGConfig(seed=1234),
    )


def read_metrics(path) -> list[dict]:
    import json

    return [json.loads(line) for line in open(path)]

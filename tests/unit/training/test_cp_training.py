"""Context parallelism (CP=2, 2 gloo processes) trains exactly like CP=1, packed and unpacked.

Two levels: (1) one forward/backward of the tiny model through the engine's ``forward_step`` (the CP batch split
included): each rank's per-token losses equal CP=1's at its tokens and the gradients, summed over the CP group as
DDP does, equal CP=1's; (2) three steps of the real ``finetune`` on packed data with ``pad_seq_to_mult=4``: the logged
lm loss and grad norm equal the single-process run. The same file is the torchrun worker (``__main__``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.unit.torchrun import run_torchrun

SEQ = 32
ROWS = [{"input": f"What is {a} plus {b}?", "output": f"{a + b}"} for a in range(10) for b in range(4)]


def packed_batch() -> dict:
    """One pack of three samples (shifted lengths 8, 5, 10 -> padded to 8, 8, 12) plus 4 trailing padding tokens."""
    from sft_bridge_port.data.collate import collate_packed
    from tests.unit.training.helpers import VOCAB

    ids = torch.randint(3, VOCAB, (26,), generator=torch.Generator().manual_seed(3))
    pack = {"input_ids": ids.numpy(), "loss_mask": (ids % 3 != 0).long().numpy(), "seq_start_id": [0, 9, 15]}
    return collate_packed([pack], pad_id=0, pack_size=SEQ, pad_to_max_length=True, pad_mult=4)


def unpacked_batch() -> dict:
    from tests.unit.training.helpers import collate

    return collate([0, 1], seq=SEQ)


def model_step(cp: int, weights: str | None = None) -> tuple[dict, dict]:
    """({batch name: {losses, tokens, grads}}, state_dict) of one forward/backward per batch; grads summed over CP."""
    from megatron.core import parallel_state

    from sft_bridge_port.training.gpt_step import forward_step
    from tests.unit.training.helpers import tiny_provider

    provider = tiny_provider(seq_length=SEQ, num_query_groups=2, context_parallel_size=cp,
                             calculate_per_token_loss=True)
    torch.manual_seed(0)
    model = provider.provide()
    if weights is not None:
        model.load_state_dict(torch.load(weights, weights_only=True))
    results = {}
    for name, batch in (("packed", packed_batch()), ("unpacked", unpacked_batch())):
        model.zero_grad(set_to_none=True)
        losses, loss_func = forward_step(None, iter([batch]), model)
        loss_sum, tokens, _ = loss_func(losses)
        loss_sum.backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        if cp > 1:
            group = parallel_state.get_context_parallel_group()
            for g in [*grads.values(), tokens]:
                torch.distributed.all_reduce(g, group=group)
        results[name] = {"losses": losses.detach(), "tokens": int(tokens), "grads": grads}
    return results, model.state_dict()


def finetune_config(work: Path, cp: int, pretrained: str, save: str | None):
    from sft_bridge_port.config import (
        CheckpointConfig, ConfigContainer, LoggerConfig, OptimizerConfig, SchedulerConfig, TokenizerConfig,
        TrainingConfig,
    )  # fmt: skip
    from sft_bridge_port.data import FinetuningDatasetConfig, PackedSequenceSpecs
    from sft_bridge_port.models import get_provider

    provider = get_provider(work / "hf", seq_length=64, context_parallel_size=cp, hidden_dropout=0.0,
                            attention_dropout=0.0)
    specs = PackedSequenceSpecs(packed_sequence_size=64, pad_seq_to_mult=4)
    return ConfigContainer(
        train=TrainingConfig(train_iters=3, global_batch_size=2, micro_batch_size=1),
        model=provider,
        optimizer=OptimizerConfig(lr=3e-3, min_lr=3e-4, weight_decay=0.0, clip_grad=1.0),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=1),
        dataset=FinetuningDatasetConfig(dataset_root=str(work / "data"), seq_length=64, do_validation=False,
                                        do_test=False, packed_sequence_specs=specs),
        logger=LoggerConfig(log_interval=1),
        tokenizer=TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(work / "hf")),
        checkpoint=CheckpointConfig(save=save, pretrained_checkpoint=pretrained, fully_parallel_save=False),
    )


class Recorder:
    def __init__(self) -> None:
        self.steps: list[dict] = []

    def on_train_step_end(self, state, record) -> None:
        if record is not None and record.get("kind") == "train":
            self.steps.append({"lm loss": record["lm loss"], "grad_norm": record["grad_norm"]})


def run_finetune(work: Path, cp: int, pretrained: str, save: str | None) -> list[dict]:
    from sft_bridge_port.training import finetune
    from sft_bridge_port.training.gpt_step import forward_step

    recorder = Recorder()
    finetune(finetune_config(work, cp, pretrained, save), forward_step, callbacks=[recorder])
    return recorder.steps


def _worker(work: Path) -> None:
    from megatron.core import parallel_state

    from sft_bridge_port.utils.dist_context import init_distributed, parallel_context

    init_distributed()
    rank = torch.distributed.get_rank()
    with parallel_context(context_parallel_size=2):
        cp_rank = parallel_state.get_context_parallel_rank()
        results, _ = model_step(2, str(work / "weights.pt"))
    torch.save({"cp_rank": cp_rank, "results": results}, work / f"model_rank{rank}.pt")
    steps = run_finetune(work, 2, str(work / "ref" / "pretrained_from_hf" / "hf"), None)
    (work / f"finetune_rank{rank}.json").write_text(json.dumps(steps))


def _launch(work: Path) -> None:
    run_torchrun("tests.unit.training.test_cp_training", str(work), cwd=work)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """CP=1 references in this process, then the CP=2 worker under torchrun."""
    from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer
    from sft_bridge_port.models.tiny import make_tiny_hf_model
    from sft_bridge_port.utils import ckpt_layout
    from sft_bridge_port.utils.dist_context import destroy_distributed, parallel_context

    work = tmp_path_factory.mktemp("cp")
    with parallel_context():
        reference, state_dict = model_step(1)
    torch.save(state_dict, work / "weights.pt")
    tok = build_tiny_tokenizer(work / "hf", [r["input"] + " " + r["output"] for r in ROWS], vocab_size=320)
    make_tiny_hf_model(work / "hf", vocab_size=len(tok), num_key_value_heads=2)
    (work / "data").mkdir()
    (work / "data" / "training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    ref_steps = run_finetune(work, 1, str(work / "hf"), str(work / "ref" / "checkpoints"))
    destroy_distributed()
    assert ckpt_layout.is_megatron_checkpoint(work / "ref" / "pretrained_from_hf" / "hf")  # the CP run starts here
    _launch(work)
    return work, reference, ref_steps


@pytest.mark.parametrize("name", ["packed", "unpacked"])
def test_cp2_losses_and_gradients_equal_cp1(runs, name):
    from sft_bridge_port.training.batch import context_parallel_slice

    work, reference, _ = runs
    ref = reference[name]
    batch = packed_batch() if name == "packed" else unpacked_batch()
    seen = 0
    for rank in range(2):
        got = torch.load(work / f"model_rank{rank}.pt", weights_only=False)
        cp_rank, res = got["cp_rank"], got["results"][name]
        # which global tokens this rank held: slice a position marker the way the engine slices the batch
        marker = torch.arange(batch["tokens"].numel()).view_as(batch["tokens"])
        mine = context_parallel_slice({**batch, "tokens": marker}, cp_size=2, cp_rank=cp_rank)["tokens"]
        torch.testing.assert_close(res["losses"], ref["losses"].reshape(-1)[mine], atol=1e-5, rtol=1e-5)
        assert res["tokens"] == ref["tokens"]
        for param, grad in ref["grads"].items():
            torch.testing.assert_close(res["grads"][param], grad, atol=1e-5, rtol=1e-4, msg=f"{name}: {param}")
        seen += mine.numel()
    assert seen == batch["tokens"].numel()
    assert max(g.abs().max().item() for g in ref["grads"].values()) > 1e-3  # gradients are not trivially zero


def test_cp2_finetune_matches_cp1(runs):
    work, _, ref_steps = runs
    logged = [json.loads((work / f"finetune_rank{r}.json").read_text()) for r in range(2)]
    steps = max(logged, key=len)  # only the logging rank records steps
    assert len(ref_steps) == len(steps) == 3
    for ref, got in zip(ref_steps, steps):
        assert got["lm loss"] == pytest.approx(ref["lm loss"], rel=1e-5)
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))

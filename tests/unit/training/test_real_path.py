"""finetune() straight from a Hugging Face folder, with the real config, provider, tokenizer and packed data."""

import json

import pytest

from sft_bridge_port.utils import ckpt_layout
from tests.unit.training.helpers import read_metrics

ROWS = [{"input": f"What is {a} plus {b}?", "output": f"{a + b}"} for a in range(12) for b in range(4)]


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    from sft_bridge_port.config import (
        CheckpointConfig, ConfigContainer, LoggerConfig, OptimizerConfig, SchedulerConfig, TokenizerConfig,
        TrainingConfig, ValidationConfig,
    )
    from sft_bridge_port.data import FinetuningDatasetConfig, PackedSequenceSpecs
    from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer
    from sft_bridge_port.models import get_provider
    from sft_bridge_port.models.tiny import make_tiny_hf_model
    from sft_bridge_port.training import finetune
    from sft_bridge_port.training.gpt_step import forward_step

    root = tmp_path_factory.mktemp("hf_run")
    tok = build_tiny_tokenizer(root / "hf", [r["input"] + " " + r["output"] for r in ROWS], vocab_size=320)
    hf_dir = make_tiny_hf_model(root / "hf", vocab_size=len(tok))
    data = root / "data"
    data.mkdir()
    for name, rows in (("training", ROWS[:40]), ("validation", ROWS[40:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    provider = get_provider(hf_dir)
    provider.seq_length = 64
    cfg = ConfigContainer(
        train=TrainingConfig(train_iters=6, global_batch_size=2, micro_batch_size=1),
        model=provider,
        optimizer=OptimizerConfig(lr=3e-3, min_lr=3e-4, weight_decay=0.0, clip_grad=1.0),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=1),
        validation=ValidationConfig(eval_interval=3, eval_iters=2),
        dataset=FinetuningDatasetConfig(dataset_root=str(data), seq_length=64, do_test=False,
                                        packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=64)),
        logger=LoggerConfig(log_interval=1),
        tokenizer=TokenizerConfig(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(hf_dir)),
        checkpoint=CheckpointConfig(save=str(root / "run" / "checkpoints"), pretrained_checkpoint=str(hf_dir),
                                    fully_parallel_save=False),
    )
    state = finetune(cfg, forward_step)
    return root, state


def test_hf_folder_is_imported_once_into_the_run_cache(hf_run):
    from sft_bridge_port.training.pretrained import resolve_pretrained

    root, state = hf_run
    cache = root / "run" / "pretrained_from_hf" / "hf"
    assert ckpt_layout.read_tracker(cache) == 0 and (cache / "iter_0000000" / ".metadata").exists()
    stamp = (cache / "iter_0000000" / ".metadata").stat().st_mtime_ns
    assert resolve_pretrained(state.cfg) == cache / "iter_0000000"  # a second run reuses the import
    assert (cache / "iter_0000000" / ".metadata").stat().st_mtime_ns == stamp


def test_packed_real_data_trains_and_checkpoints_with_tokenizer(hf_run):
    root, state = hf_run
    records = read_metrics(root / "run" / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == list(range(1, 7))
    assert train[-1]["lm loss"] < train[0]["lm loss"]
    assert [r["iteration"] for r in records if r["kind"] == "valid"] == [3, 6]
    final = root / "run" / "checkpoints" / "iter_0000006"
    assert (final / "tokenizer" / "tokenizer.json").exists() and (final / "run_config.yaml").exists()
    assert state.train_state.consumed_train_samples == 12

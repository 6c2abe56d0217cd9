"""finetune() end to end on a tiny CPU model: learning, checkpoints, resume, metrics, golden losses, errors."""

import json
import math
from pathlib import Path

import pytest
import torch

from sft_bridge_port.training import finetune
from sft_bridge_port.training.gpt_step import forward_step
from sft_bridge_port.utils import ckpt_layout
from tests.unit.training.helpers import make_config, read_metrics, tiny_provider

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "tiny_sft_fp32_losses.json"
LR = 1e-2


def _pretrained(root: Path) -> Path:
    """A weights-only Megatron checkpoint of a randomly initialised tiny model (what an HF import produces)."""
    from sft_bridge_port.utils.dist_context import parallel_context
    from sft_bridge_port.utils.dist_ckpt import save_model_weights

    torch.manual_seed(0)
    with parallel_context():
        model = tiny_provider().provide_distributed_model(wrap_with_ddp=False)
        save_model_weights(model, root / ckpt_layout.iter_dir_name(0))
    ckpt_layout.write_tracker(root, 0)
    return root


def _train_losses(run_dir: Path) -> dict[int, float]:
    return {r["iteration"]: r["lm loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run A: 30 steps from a pretrained checkpoint, save every 10, eval every 10.
    Run B: resume A's step-10 checkpoint, train to 30 (keeps only the newest checkpoint)."""
    root = tmp_path_factory.mktemp("runs")
    pretrained = str(_pretrained(root / "pretrained"))
    cfg_a = make_config(root / "A", train_iters=30, save_interval=10, eval_interval=10, pretrained=pretrained, lr=LR)
    state_a = finetune(cfg_a, forward_step)
    cfg_b = make_config(root / "B", train_iters=30, save_interval=10, pretrained=pretrained, lr=LR,
                        load=str(root / "A" / "ckpt"))
    cfg_b.checkpoint.ckpt_step = 10
    cfg_b.checkpoint.most_recent_k = 1
    state_b = finetune(cfg_b, forward_step)
    return {"root": root, "A": root / "A", "B": root / "B", "state_a": state_a, "state_b": state_b}


def test_training_lowers_the_loss(runs):
    losses = _train_losses(runs["A"])
    assert sorted(losses) == list(range(1, 31))
    first, last = sum(losses[i] for i in range(1, 6)) / 5, sum(losses[i] for i in range(26, 31)) / 5
    assert last < first - 0.5, (first, last)


def test_resume_from_step_10_reproduces_steps_11_to_30(runs):
    a, b = _train_losses(runs["A"]), _train_losses(runs["B"])
    assert sorted(b) == list(range(11, 31))
    for step in range(11, 31):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    assert runs["state_b"].train_state.consumed_train_samples == 30 * 4


def test_checkpoint_folder_layout(runs):
    ckpt = runs["A"] / "ckpt"
    assert ckpt_layout.list_iterations(ckpt) == [10, 20, 30]
    assert ckpt_layout.read_tracker(ckpt) == 30
    it = ckpt / "iter_0000030"
    for name in sorted(ckpt_layout.dist_checkpoint_files() | {"train_state.pt", "run_config.yaml"}):
        assert (it / name).exists(), name
    ts = torch.load(it / "train_state.pt", weights_only=True)
    assert int(ts["step"]) == 30 and int(ts["consumed_train_samples"]) == 120
    assert int(ts["consumed_valid_samples"]) == 3 * 2 * 4 and float(ts["floating_point_operations_so_far"]) > 0
    latest = torch.load(ckpt / "latest_train_state.pt", weights_only=True)
    assert {k: v.item() for k, v in latest.items()} == {k: v.item() for k, v in ts.items()}
    assert "train_iters: 30" in (it / "run_config.yaml").read_text()
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]  # no temporary folders left
    assert ckpt_layout.list_iterations(runs["B"] / "ckpt") == [30]  # most_recent_k=1


def test_metrics_file_eval_and_loss_curve(runs):
    records = read_metrics(runs["A"] / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert all(r["tokens_per_s"] > 0 and r["tflops_per_gpu"] > 0 and r["grad_norm"] > 0 for r in train)
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["iteration"] for r in valid] == [10, 20, 30]
    assert all(r["ppl"] == pytest.approx(math.exp(r["lm loss"])) for r in valid)
    assert valid[-1]["lm loss"] < valid[0]["lm loss"]
    assert (runs["A"] / "loss_curve.png").stat().st_size > 1000


def test_losses_match_golden_values(runs):
    golden = json.loads(GOLDEN.read_text())
    losses = _train_losses(runs["A"])
    assert len(golden["lm_loss"]) == 30
    for step, expected in enumerate(golden["lm_loss"], start=1):
        assert losses[step] == pytest.approx(expected, rel=1e-4), step


def test_finetune_requires_starting_weights(tmp_path):
    with pytest.raises(ValueError, match="pretrained_checkpoint"):
        finetune(make_config(tmp_path), forward_step)


def test_missing_iteration_folder_is_a_clear_error(runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ckpt_layout.TRACKER_FILE).write_text("40\n")
    cfg = make_config(tmp_path, load=str(broken), train_iters=2)
    with pytest.raises(ckpt_layout.CheckpointNotFoundError, match="iter_0000040/ is missing"):
        finetune(cfg, forward_step)
    cfg = make_config(tmp_path, pretrained=str(tmp_path / "nowhere"), train_iters=2)
    with pytest.raises(ckpt_layout.CheckpointNotFoundError, match="does not exist"):
        finetune(cfg, forward_step)


def test_corrupted_train_state_is_a_clear_error(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["A"] / "ckpt" / "iter_0000030", copy / "iter_0000030")
    (copy / "iter_0000030" / "train_state.pt").write_bytes(b"not a torch file")
    cfg = make_config(tmp_path, load=str(copy), train_iters=31)
    with pytest.raises(RuntimeError, match="corrupted"):
        finetune(cfg, forward_step)


@pytest.mark.gpu
def test_bf16_run_on_one_gpu_lowers_the_loss(tmp_path):
    cfg = make_config(tmp_path, train_iters=30, save_interval=None, pretrained=str(_pretrained(tmp_path / "pre")), lr=LR)
    cfg.mixed_precision = "bf16_mixed"
    finetune(cfg, forward_step)
    losses = _train_losses(tmp_path)
    assert sum(losses[i] for i in range(26, 31)) / 5 < sum(losses[i] for i in range(1, 6)) / 5 - 0.5


def test_distributed_optimizer_resume_reproduces_the_run(runs, tmp_path):
    """Resume exactness with the distributed optimizer (the SFT recipes' default through Bridge's OR-sync)."""
    pretrained = str(runs["root"] / "pretrained")
    cfg_a = make_config(tmp_path / "A", train_iters=6, save_interval=3, pretrained=pretrained, lr=LR)
    cfg_a.optimizer.use_distributed_optimizer = True
    finetune(cfg_a, forward_step)
    cfg_b = make_config(tmp_path / "B", train_iters=6, save_interval=None, pretrained=pretrained, lr=LR,
                        load=str(tmp_path / "A" / "ckpt"))
    cfg_b.optimizer.use_distributed_optimizer = True
    cfg_b.checkpoint.ckpt_step = 3
    finetune(cfg_b, forward_step)
    a, b = _train_losses(tmp_path / "A"), _train_losses(tmp_path / "B")
    assert sorted(b) == [4, 5, 6]
    assert all(b[s] == pytest.approx(a[s], rel=1e-6, abs=1e-7) for s in b), (a, b)

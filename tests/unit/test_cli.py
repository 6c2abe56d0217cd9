"""The sft-bridge-port command line and the stage registry: exit codes, output, and what run() calls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sft_bridge_port import stages
from sft_bridge_port.cli import main
from sft_bridge_port.config import ConfigContainer
from tests.unit.torchrun import repo_pythonpath

CALLS: list[tuple] = []
REPO = Path(__file__).resolve().parents[2]


def record_entry(cfg, forward_step, callbacks=None):
    """A stage entry for the tests: remembers what it was called with."""
    CALLS.append((cfg, forward_step, callbacks))
    return "trained"


def my_step(data_iterator, model):
    """A user forward step."""


@pytest.fixture
def recording_stages(monkeypatch):
    CALLS.clear()
    for name in ("sft", "peft"):
        monkeypatch.setitem(stages.STAGES, name, stages.Stage(name, f"{__name__}.record_entry", f"{__name__}.my_step", name))
    return CALLS


def test_recipes_lists_names_with_descriptions(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) >= 52
    assert any(line.startswith("llama3_8b_sft ") and "TP2" in line for line in out)


def test_show_config_prints_yaml_that_reads_back_equal(capsys):
    assert main(["show-config", "--recipe", "llama3_8b_sft_config", "train.train_iters=7", "model.params_dtype=fp32"]) == 0
    cfg = ConfigContainer.from_yaml_text(capsys.readouterr().out)
    from recipes import get_recipe
    from sft_bridge_port.config import process_config_with_overrides

    expected = process_config_with_overrides(get_recipe("llama3_8b_sft")(), cli_overrides=["train.train_iters=7",
                                                                                             "model.params_dtype=fp32"])
    assert cfg.to_dict() == expected.to_dict() and cfg.train.train_iters == 7


def test_show_config_effective_applies_runtime_rules(capsys):
    assert main(["show-config", "--recipe", "llama3_8b_sft", "--effective", "--world-size", "4"]) == 0
    cfg = ConfigContainer.from_yaml_text(capsys.readouterr().out)
    assert cfg.ddp.use_distributed_optimizer and cfg.ddp.grad_reduce_in_fp32 and cfg.scheduler.lr_decay_iters == 1000


def test_show_config_with_yaml_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  train_iters: 11\noptimizer:\n  lr: 2.0e-5\n")
    assert main(["show-config", "--recipe", "llama3_8b_sft", "--config", str(path), "optimizer.lr=3e-5"]) == 0
    cfg = ConfigContainer.from_yaml_text(capsys.readouterr().out)
    assert (cfg.train.train_iters, cfg.optimizer.lr) == (11, 3e-5)


@pytest.mark.parametrize(
    "argv, message",
    [(["show-config", "--recipe", "llama3_8b_stf"], "did you mean llama3_8b_sft"),
     (["show-config", "--recipe", "llama3_8b_sft", "train.train_iter=3"], "Did you mean 'train.train_iters'"),
     (["show-config", "--recipe", "llama3_8b_sft", "train.train_iters=x"], "expected int"),
     (["show-config", "--recipe", "llama3_8b_sft", "--effective", "--world-size", "3"], "not a multiple"),
     (["run", "--recipe", "llama3_8b_sft", "--stage", "pretrian"], "unknown stage"),
     (["run", "--recipe", "llama3_8b_sft", "--stage", "peft"], "needs cfg.peft")],
)
def test_configuration_errors_exit_2_with_message(argv, message, capsys, recording_stages):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert recording_stages == []


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["show-config"])  # --recipe missing
    assert exc.value.code == 2
    assert main([]) == 2


def test_run_applies_overrides_and_calls_stage(recording_stages):
    assert main(["run", "--recipe", "tiny_llama_sft", "train.train_iters=3"]) == 0
    (cfg, step, _), = recording_stages
    assert cfg.train.train_iters == 3 and step is my_step


def test_run_picks_peft_stage_from_config(recording_stages):
    assert main(["run", "--recipe", "tiny_llama_peft"]) == 0
    assert recording_stages[0][0].peft is not None


def test_stage_selection_rules():
    from recipes.tiny import tiny_llama_peft, tiny_llama_sft

    assert stages.select_stage(tiny_llama_sft()).name == "sft"
    assert stages.select_stage(tiny_llama_peft()).name == "peft"
    with pytest.raises(ValueError, match="stages: peft, pretrain, sft"):
        stages.get_stage("dpo")
    with pytest.raises(ValueError, match="peft=null"):
        stages.select_stage(tiny_llama_peft(), "sft")


def test_run_passes_explicit_forward_step_and_callbacks(recording_stages):
    from recipes.tiny import tiny_llama_sft

    def other_step(data_iterator, model):
        return None

    assert stages.run(tiny_llama_sft(), forward_step=other_step, callbacks=["cb"]) == "trained"
    assert recording_stages[0][1] is other_step and recording_stages[0][2] == ["cb"]


def test_default_stages_point_at_training_code():
    assert stages.STAGES["sft"].entry == "sft_bridge_port.training.finetune.finetune"
    assert stages.STAGES["peft"].forward_step == "sft_bridge_port.training.gpt_step.forward_step"


def test_demo_missing_module_exits_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sft_bridge_port.demo", None)
    assert main(["demo"]) == 2
    assert "demo is not available" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "sft_bridge_port", "recipes"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={"PYTHONPATH": repo_pythonpath(), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert "tiny_llama_sft" in result.stdout

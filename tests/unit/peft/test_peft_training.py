"""LoRA through the real path: ``tiny_llama_peft(hf_path=...)`` -> ``stages.run`` -> merge / export-adapter CLIs.

One module fixture trains a small random Llama (an HF folder with a tokenizer trained on the demo chats, given as
``pretrained_checkpoint``) for 8 LoRA steps on the recipe's demo data (checkpoints at 4 and 8), then resumes a
second run from step 4 to 8 (base weights from the first run's import of the HF folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sft_bridge_port.utils import ckpt_layout
from tests.unit.training.helpers import read_metrics

STEPS, SAVE_AT = 8, 4
VOCAB = 512


def _hf_base(folder: Path) -> Path:
    """Random Llama, hidden 128 x 2 layers (a quarter of the demo model's compute), demo-chat tokenizer."""
    from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer
    from sft_bridge_port.demo_stages import demo_chat_texts
    from sft_bridge_port.models.tiny import make_tiny_hf_model

    tok = build_tiny_tokenizer(folder, demo_chat_texts(), vocab_size=VOCAB)
    return make_tiny_hf_model(
        folder, vocab_size=len(tok), hidden_size=128, intermediate_size=256, rope_scaling=None,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip


def _config(hf: Path, run_dir: Path, **checkpoint):
    from recipes.tiny import tiny_llama_peft

    cfg = tiny_llama_peft(hf_path=str(hf))
    cfg.checkpoint.pretrained_checkpoint = str(hf)  # an HF folder: imported once into the run's cache
    cfg.checkpoint.save = cfg.checkpoint.load = str(run_dir / "checkpoints")
    cfg.checkpoint.save_interval = SAVE_AT
    cfg.train.train_iters = STEPS
    cfg.validation.eval_interval = None
    specs = cfg.dataset.packed_sequence_specs
    specs.packed_train_data_path = str(run_dir.parent / "packed" / "training.parquet")
    specs.packed_val_data_path = str(run_dir.parent / "packed" / "validation.parquet")
    for key, value in checkpoint.items():
        setattr(cfg.checkpoint, key, value)
    return cfg


class _Capture:
    """Forward step that remembers the model chunk it trains (the engine owns it; tests inspect it after)."""

    def __init__(self):
        self.model = None

    def __call__(self, state, data_iterator, model, return_schedule_plan: bool = False):
        from sft_bridge_port.training.gpt_step import forward_step

        self.model = model
        return forward_step(state, data_iterator, model, return_schedule_plan)


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["iteration"]: r["lm loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from sft_bridge_port.stages import run
    from sft_bridge_port.training.pretrained import HF_IMPORT_DIR
    from sft_bridge_port.utils.dist_context import destroy_distributed

    root = tmp_path_factory.mktemp("lora")
    hf = _hf_base(root / "hf_base")
    capture = _Capture()
    run(_config(hf, root / "A"), forward_step=capture)
    destroy_distributed()
    imported = root / "A" / HF_IMPORT_DIR / "hf_base"  # a Megatron checkpoint this time
    resumed = _config(hf, root / "B", load=str(root / "A" / "checkpoints"), ckpt_step=SAVE_AT,
                      pretrained_checkpoint=str(imported))
    run(resumed, forward_step=_Capture())
    destroy_distributed()
    return {"root": root, "hf": hf, "A": root / "A", "B": root / "B", "model": capture.model}


def _base_and_adapters(chunk) -> tuple[dict, dict]:
    from sft_bridge_port.utils.dist_ckpt import unwrap

    params = dict(unwrap(chunk).named_parameters())
    adapters = {k: v for k, v in params.items() if ".adapter." in k}
    return {k: v for k, v in params.items() if k not in adapters}, adapters


def _tensor_bytes(iter_dir: Path) -> dict[str, int]:
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(iter_dir)).read_metadata().state_dict_metadata
    return {k: v.size.numel() * v.properties.dtype.itemsize for k, v in meta.items() if hasattr(v, "size")}


def test_lora_run_lowers_the_loss_and_resume_reproduces_it(runs):
    a, b = _losses(runs["A"]), _losses(runs["B"])
    assert sorted(a) == list(range(1, STEPS + 1)) and sorted(b) == list(range(SAVE_AT + 1, STEPS + 1))
    assert a[STEPS] < a[1] - 0.3, a
    for step in b:
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), (step, a, b)


def test_only_adapters_train_and_base_stays_the_pretrained_weights(runs):
    from sft_bridge_port.training.pretrained import HF_IMPORT_DIR
    from sft_bridge_port.utils.dist_context import parallel_context
    from sft_bridge_port.utils.dist_ckpt import load_model_weights, unwrap

    base, adapters = _base_and_adapters(runs["model"])
    assert adapters and all(p.requires_grad for p in adapters.values())
    assert not any(p.requires_grad for p in base.values())
    assert any(float(p.detach().abs().max()) > 0 for k, p in adapters.items() if "linear_out" in k)  # B left zero init
    imported = runs["A"] / HF_IMPORT_DIR / "hf_base"
    with parallel_context():
        fresh = unwrap(runs["model"]).config.provide_distributed_model(wrap_with_ddp=False)
        load_model_weights(fresh, ckpt_layout.resolve_checkpoint(imported)[0])
    pretrained = dict(fresh[0].named_parameters())
    assert set(pretrained) == set(base)
    for name, param in base.items():
        assert torch.equal(param.detach(), pretrained[name].detach()), name


def test_checkpoint_holds_only_adapters_and_is_small(runs):
    from sft_bridge_port.training.pretrained import HF_IMPORT_DIR

    final = runs["A"] / "checkpoints" / ckpt_layout.iter_dir_name(STEPS)
    saved = _tensor_bytes(final)
    assert saved and all(".adapter." in k for k in saved), [k for k in saved if ".adapter." not in k][:5]
    assert any(k.startswith("optimizer.state.exp_avg.") for k in saved)  # Adam state of the adapters only
    base = _tensor_bytes(ckpt_layout.resolve_checkpoint(runs["A"] / HF_IMPORT_DIR / "hf_base")[0])
    model_part = sum(v for k, v in saved.items() if not k.startswith("optimizer."))
    full = 3 * sum(base.values())  # a full-finetuning checkpoint: fp32 weights + two Adam moments
    assert model_part < 0.08 * sum(base.values()), (model_part, sum(base.values()))
    assert sum(saved.values()) < 0.08 * full, (sum(saved.values()), full)
    config = (final / ckpt_layout.CONFIG_FILE).read_text()
    assert "_target_: sft_bridge_port.peft.lora.LoRA" in config and f"pretrained_checkpoint: {runs['hf']}" in config


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0).item()


def _our_logits(model, tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits of the trained megatron chunk (its padded vocab rows cut to the HF vocab)."""
    from sft_bridge_port.utils.dist_context import parallel_context
    from sft_bridge_port.utils.dist_ckpt import unwrap

    position_ids = torch.arange(tokens.shape[1]).expand_as(tokens)
    with parallel_context(), torch.no_grad():
        return unwrap(model).eval()(tokens, position_ids, None)[..., :vocab]


def _tokens() -> torch.Tensor:
    return torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(3))


def test_merge_cli_exports_to_hf_with_the_adapted_logits(runs, tmp_path):
    from transformers import AutoModelForCausalLM

    from checkpoints_conv.cli import main

    ckpt = runs["A"] / "checkpoints"
    assert main(["merge", "--lora-checkpoint", str(ckpt), "--output", str(tmp_path / "merged")]) == 0
    assert ckpt_layout.read_tracker(tmp_path / "merged") == STEPS
    assert all(".adapter." not in k for k in _tensor_bytes(tmp_path / "merged" / ckpt_layout.iter_dir_name(STEPS)))
    assert main(["export", "--megatron-path", str(tmp_path / "merged"), "--hf-path", str(tmp_path / "hf"),
                 "--no-progress"]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(runs["hf"], dtype=torch.float32).eval()
    tokens = _tokens()
    with torch.no_grad():
        theirs, base_logits = hf(input_ids=tokens).logits, base(input_ids=tokens).logits
    ours = _our_logits(runs["model"], tokens, theirs.shape[-1])
    assert _cosine(ours, theirs) >= 0.9999
    assert (ours - base_logits).abs().max() > 100 * (ours - theirs).abs().max()  # the adapters are in the merge
    assert main(["merge", "--lora-checkpoint", str(ckpt), "--output", str(tmp_path / "merged")]) == 2  # exists


def test_export_adapter_cli_loads_in_hf_peft(runs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from checkpoints_conv.cli import main

    out = tmp_path / "adapter"
    assert main(["export-adapter", "--lora-checkpoint", str(runs["A"] / "checkpoints"), "--output", str(out)]) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["base_model_name_or_path"]) == (8, 16, str(runs["hf"]))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(runs["hf"], dtype=torch.float32), str(out))
    tokens = _tokens()
    with torch.no_grad():
        theirs = model.eval()(input_ids=tokens).logits
    assert _cosine(_our_logits(runs["model"], tokens, theirs.shape[-1]), theirs) >= 0.9999


def test_peft_without_pretrained_checkpoint_is_a_clear_error(runs, tmp_path):
    from sft_bridge_port.stages import run

    cfg = _config(runs["hf"], tmp_path / "C", pretrained_checkpoint=None)
    with pytest.raises(ValueError, match=r"checkpoint\.pretrained_checkpoint is None: PEFT needs the base model"):
        run(cfg)
    assert not (tmp_path / "C" / "checkpoints").exists()


def test_merge_of_a_full_checkpoint_is_refused(runs, tmp_path):
    from checkpoints_conv.peft_merge import merge_lora_checkpoint

    with pytest.raises(ValueError, match="not a PEFT checkpoint"):
        merge_lora_checkpoint(runs["A"] / "pretrained_from_hf" / "hf_base", tmp_path / "out")


def test_dora_run_merges_and_exports_with_its_logits(runs, tmp_path):
    """DoRA's magnitude starts from the base weights loaded by the pre-wrap hook; merge and adapter agree with it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from checkpoints_conv.cli import main
    from recipes.tiny import tiny_llama_peft
    from sft_bridge_port.stages import run
    from sft_bridge_port.utils.dist_context import destroy_distributed

    cfg = _config(runs["hf"], tmp_path / "run")
    cfg.peft, cfg.train.train_iters, cfg.scheduler.lr_warmup_iters = tiny_llama_peft("dora").peft, 2, 1
    capture = _Capture()
    run(cfg, forward_step=capture)
    destroy_distributed()
    ckpt = str(tmp_path / "run" / "checkpoints")
    imported = runs["A"] / "pretrained_from_hf" / "hf_base"  # the same base weights as a Megatron checkpoint
    merged_dir = str(tmp_path / "merged")
    assert main(["merge", "--lora-checkpoint", ckpt, "--output", merged_dir, "--pretrained", str(imported)]) == 0
    assert main(["export", "--megatron-path", merged_dir, "--hf-path", str(tmp_path / "hf"), "--no-progress"]) == 0
    assert main(["export-adapter", "--lora-checkpoint", ckpt, "--output", str(tmp_path / "adapter")]) == 0
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["use_dora"] is True
    tokens = _tokens()
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
        merged = merged(input_ids=tokens).logits
        base = AutoModelForCausalLM.from_pretrained(runs["hf"], dtype=torch.float32)
        adapted = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()(input_ids=tokens).logits
    ours = _our_logits(capture.model, tokens, merged.shape[-1])
    assert _cosine(ours, merged) >= 0.9999 and _cosine(ours, adapted) >= 0.9999

"""Every recipe and Bridge alias builds offline, passes runtime_config_update, and has Bridge v0.5.1's values."""

from __future__ import annotations

import pytest
import torch

import recipes
from recipes import ALIASES, RECIPES, get_recipe, list_recipes
from recipes.llama import llama3_8b_finetune_config, llama3_8b_sft, llama3_8b_sft_2gpu_h100_bf16_config
from sft_bridge_port.config import ConfigContainer, runtime_config_update

L = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")
# name: (TP, PP, VPP, SP, seq, GBS, LR, LoRA (dim, alpha, targets) or None, effective distributed optimizer)
BRIDGE_DEFAULTS = {
    "llama32_1b_sft": (1, 1, None, False, 4096, 8, 5e-6, None, True),
    "llama32_3b_sft": (1, 1, None, False, 4096, 8, 5e-6, None, True),
    "llama3_8b_sft": (2, 1, None, False, 4096, 8, 5e-6, None, True),
    "llama31_8b_sft": (2, 1, None, False, 4096, 8, 5e-6, None, True),
    "llama3_70b_sft": (8, 4, None, False, 4096, 8, 5e-6, None, True),
    "llama31_70b_sft": (8, 4, None, False, 4096, 8, 5e-6, None, True),
    "llama31_405b_sft": (8, 16, None, True, 2048, 16, 5e-6, None, True),
    "llama32_1b_peft": (1, 1, None, False, 4096, 8, 1e-4, (32, 32, L), False),
    "llama32_3b_peft": (1, 1, None, False, 4096, 8, 1e-4, (32, 32, L), False),
    "llama3_8b_peft": (1, 1, None, False, 4096, 8, 1e-4, (8, 16, L), False),
    "llama31_8b_peft": (1, 1, None, False, 4096, 8, 1e-4, (8, 16, L), False),
    "llama3_70b_peft": (8, 1, None, False, 4096, 8, 1e-4, (16, 32, L), False),
    "llama31_70b_peft": (8, 1, None, False, 4096, 8, 1e-4, (16, 32, L), False),
    "llama31_405b_peft": (4, 8, 8, True, 2048, 32, 1e-4, (16, 32, ("linear_qkv",)), False),
    "qwen2_7b_sft": (2, 1, None, False, 2048, 8, 5e-6, None, True),
    "qwen2_72b_sft": (8, 4, None, False, 2048, 8, 5e-6, None, True),
    "qwen2_72b_peft": (8, 1, None, False, 2048, 8, 1e-4, (32, 32, L), True),
    "qwen25_7b_sft": (2, 1, None, False, 2048, 8, 5e-6, None, True),
    "qwen25_14b_sft": (4, 1, None, False, 2048, 8, 5e-6, None, True),
    "qwen25_32b_sft": (8, 2, None, False, 2048, 8, 5e-6, None, True),
    "qwen25_32b_peft": (8, 1, None, False, 2048, 8, 1e-4, (32, 32, L), True),
    "qwen3_600m_peft": (1, 1, None, False, 2048, 8, 1e-4, (32, 32, L), True),
    "qwen3_8b_sft": (4, 1, None, False, 2048, 8, 5e-6, None, True),
    "qwen3_8b_peft": (1, 1, None, False, 2048, 8, 1e-4, (32, 32, L), True),
    "qwen3_14b_sft": (8, 1, None, False, 2048, 8, 5e-6, None, True),
    "qwen3_32b_sft": (8, 2, None, False, 2048, 8, 5e-6, None, True),
    "mistral_7b_sft": (2, 1, None, False, 4096, 8, 5e-6, None, True),
    "mistral_7b_peft": (1, 1, None, False, 4096, 8, 1e-4, (8, 16, L), False),
}
HF_IDS = {"llama3_8b_sft": "meta-llama/Meta-Llama-3-8B", "llama31_405b_peft": "meta-llama/Meta-Llama-3.1-405B",
          "qwen3_8b_sft": "Qwen/Qwen3-8B", "qwen25_72b_peft": "Qwen/Qwen2.5-72B", "llama32_1b_sft": "meta-llama/Llama-3.2-1B"}


def _effective(cfg: ConfigContainer) -> ConfigContainer:
    m = cfg.model
    return runtime_config_update(cfg, world_size=m.tensor_model_parallel_size * m.pipeline_model_parallel_size
                                 * m.context_parallel_size)


def test_recipe_counts():
    assert len(list_recipes()) >= 52 and len(RECIPES) >= 52
    assert len(list_recipes(aliases=True)) >= 52 + 120
    assert all(doc for doc in list_recipes().values())


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_builds_offline_validates_and_round_trips(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _effective(RECIPES[name]())
    assert cfg.train.micro_batch_size == 1 and cfg.rng.seed == 5678
    assert cfg.optimizer.adam_beta2 == 0.98 or name.startswith("tiny")
    assert (cfg.peft is not None) == name.endswith("_peft")
    back = ConfigContainer.from_yaml_text(cfg.to_yaml())
    assert back.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("name", sorted(BRIDGE_DEFAULTS))
def test_bridge_defaults_after_runtime_config_update(name):
    tp, pp, vpp, sp, seq, gbs, lr, lora, dist_opt = BRIDGE_DEFAULTS[name]
    cfg = _effective(RECIPES[name]())
    m = cfg.model
    assert (m.tensor_model_parallel_size, m.pipeline_model_parallel_size, m.virtual_pipeline_model_parallel_size,
            m.sequence_parallel) == (tp, pp, vpp, sp)
    assert m.seq_length == cfg.dataset.seq_length == cfg.dataset.packed_sequence_specs.packed_sequence_size == seq
    assert (cfg.train.global_batch_size, cfg.train.train_iters, cfg.optimizer.lr, cfg.optimizer.min_lr) == (gbs, 1000, lr, 0.0)
    assert (cfg.scheduler.lr_warmup_iters, cfg.scheduler.lr_decay_style, cfg.scheduler.lr_decay_iters) == (50, "cosine", 1000)
    assert cfg.scheduler.start_weight_decay == cfg.scheduler.end_weight_decay == 0.033
    assert cfg.optimizer.use_distributed_optimizer is cfg.ddp.use_distributed_optimizer is dist_opt
    assert cfg.dataset.dataset_name == "rajpurkar/squad" and cfg.dataset.dataset_kwargs == {"pad_to_max_length": True}
    assert (cfg.checkpoint.ckpt_format, cfg.checkpoint.save_interval, cfg.validation.eval_interval) == ("torch_dist", 50, 30)
    assert m.bf16 and m.params_dtype is torch.bfloat16 and cfg.tokenizer.tokenizer_type == "HuggingFaceTokenizer"
    assert cfg.ddp.grad_reduce_in_fp32 is (name != "llama31_405b_sft")  # bf16_mixed forces it, except 405B's object
    if lora is None:
        assert cfg.peft is None
    else:
        assert (cfg.peft.dim, cfg.peft.alpha, tuple(cfg.peft.target_modules)) == lora
    if name.startswith(("llama", "mistral")):
        assert cfg.train.manual_gc and cfg.train.manual_gc_interval == 100
        assert m.cross_entropy_loss_fusion is (lora is None)


@pytest.mark.parametrize("name, hf_id", sorted(HF_IDS.items()))
def test_recipes_use_bridge_model_ids_and_accept_hf_path(name, hf_id, tmp_path):
    assert RECIPES[name]().tokenizer.tokenizer_model == hf_id
    from sft_bridge_port.models.tiny import make_tiny_hf_model

    folder = make_tiny_hf_model(tmp_path / "m", "llama")
    cfg = RECIPES[name](hf_path=str(folder))
    assert cfg.tokenizer.tokenizer_model == str(folder) and cfg.model.num_layers == 2


def test_every_alias_builds_and_v05_v06_aliases_are_their_targets():
    for alias, fn in ALIASES.items():
        if alias.endswith("_finetune_config"):
            assert isinstance(fn(), ConfigContainer), alias
            continue
        target = alias.removesuffix("_config").split("_1gpu")[0].split("_2gpu")[0]
        stem = target if target in RECIPES else next(n for n in RECIPES if alias.startswith(n + "_"))
        assert fn is RECIPES[stem], alias
    assert llama3_8b_sft_2gpu_h100_bf16_config is llama3_8b_sft
    assert get_recipe("llama3_8b_peft_config") is RECIPES["llama3_8b_peft"]
    from recipes.qwen import qwen3_8b_sft_config, qwen3_8b_sft_4gpu_h100_bf16_config

    assert qwen3_8b_sft_config is qwen3_8b_sft_4gpu_h100_bf16_config is RECIPES["qwen3_8b_sft"]


def test_peft_scheme_argument_selects_dora():
    assert type(get_recipe("llama3_8b_peft_config")("dora").peft).__name__ == "DoRA"


def test_v02_finetune_config_kwargs():
    packed = llama3_8b_finetune_config(peft=None, packed_sequence=True, seq_length=4096)
    assert packed.to_dict() == llama3_8b_sft().to_dict()
    cfg = llama3_8b_finetune_config(dir="/runs", name="exp", train_iters=20, finetune_lr=1e-5, eval_interval=5,
                                    pretrained_checkpoint="/ckpt", wandb_project="p", precision_config="fp16_mixed")
    assert cfg.peft is not None and (cfg.peft.dim, cfg.peft.alpha) == (8, 16)  # v0.2 default: LoRA
    assert (cfg.train.global_batch_size, cfg.model.seq_length, cfg.dataset.packed_sequence_specs) == (128, 2048, None)
    assert (cfg.train.train_iters, cfg.optimizer.lr, cfg.validation.eval_interval) == (20, 1e-5, 5)
    assert cfg.checkpoint.save == "/runs/exp/checkpoints" and cfg.logger.tensorboard_dir == "/runs/exp/tb_logs"
    assert cfg.checkpoint.pretrained_checkpoint == "/ckpt" and cfg.mixed_precision == "fp16_mixed"
    with pytest.raises(TypeError, match="unexpected keyword"):
        llama3_8b_finetune_config(learning_rate=1.0)


def test_unknown_recipe_suggests_close_names():
    with pytest.raises(KeyError, match="llama3_8b_sft"):
        get_recipe("llama3_8b_stf")


def test_tiny_recipe_is_small_fp32_on_cpu_and_uses_demo_data():
    cfg = _effective(recipes.tiny.tiny_llama_sft())
    m = cfg.model
    params = m.vocab_size * m.hidden_size * 2 + m.num_layers * (
        m.hidden_size * (m.num_attention_heads + 2 * m.num_query_groups) * m.kv_channels
        + m.num_attention_heads * m.kv_channels * m.hidden_size + 3 * m.hidden_size * m.ffn_hidden_size)
    assert 1e6 < params < 10e6
    assert cfg.dataset.dataset_root.endswith("data/demo") and cfg.dataset.packed_sequence_specs.packed_sequence_size == 256
    if not torch.cuda.is_available():
        assert cfg.mixed_precision is None and m.params_dtype is torch.float32

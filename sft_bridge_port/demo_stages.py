"""The six stages of ``sft-bridge-port demo``, each a plain function a user could call in the same order.

    hf = build_base_model(out / "hf_base")                        # tiny Llama + tokenizer, random init
    base = import_checkpoint(hf, out / "megatron_base")           # HF -> Megatron torch_dist
    state = finetune_demo(hf, base, out / "run", steps=60)        # tiny_llama_sft() through stages.run(cfg)
    export = export_checkpoint(out / "run" / "checkpoints", out / "hf_export", hf)   # Megatron -> HF
    reply = generate_reply(export, "How many minutes are in 5 hours?")

Nothing here downloads anything: the tokenizer is trained on the shipped demo chats and the model is random.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from recipes.tiny import DEMO_DATA_DIR, TINY_LLAMA_ARCH, tiny_llama_sft

# config.json keys of TINY_LLAMA_ARCH that make_tiny_hf_model sets itself (family, vocab from the tokenizer).
_NOT_OVERRIDES = ("architectures", "model_type", "vocab_size", "torch_dtype")
ROLE_NAMES = ("system", "user", "assistant")


def demo_chat_texts(data_dir: Path = DEMO_DATA_DIR) -> list[str]:
    """Every message of the demo training chats, plus the role names, as the tokenizer's training corpus.

    Only ``training.jsonl`` is read, so the validation chats (and the demo's held-out prompt) stay unseen.
    """
    texts = list(ROLE_NAMES)
    with open(data_dir / "training.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts += [m["content"] for m in json.loads(line)["messages"]]
    return texts


def reference_answer(prompt: str, data_dir: Path = DEMO_DATA_DIR) -> str | None:
    """The validation set's assistant reply to ``prompt`` (the answer a well-trained model would give), or None."""
    with open(data_dir / "validation.jsonl", encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"] if line.strip() else []
            for question, answer in zip(messages, messages[1:]):
                if question["role"] == "user" and question["content"] == prompt and answer["role"] == "assistant":
                    return answer["content"]
    return None


def build_base_model(folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised tiny Llama (``TINY_LLAMA_ARCH``) and its tokenizer into one HF folder.

    The tokenizer is a byte-level BPE trained on the demo chats (Llama-3 chat template, ``<|eot_id|>`` ends a
    turn); the model's vocabulary is the tokenizer's size and its BOS/EOS/PAD ids are the tokenizer's, so
    ``generate`` stops at the end of the assistant turn. Same seed, same bytes.
    """
    from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer
    from sft_bridge_port.models.tiny import make_tiny_hf_model

    tok = build_tiny_tokenizer(folder, demo_chat_texts(), vocab_size=TINY_LLAMA_ARCH["vocab_size"])
    arch = {k: v for k, v in TINY_LLAMA_ARCH.items() if k not in _NOT_OVERRIDES}
    return make_tiny_hf_model(
        folder, "llama", vocab_size=len(tok), seed=seed, rope_scaling=None, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **arch,
    )  # fmt: skip


def import_checkpoint(hf_folder: Path, megatron_path: Path) -> Path:
    """HF folder -> Megatron torch_dist checkpoint (``checkpoints_conv``), replacing an earlier demo's."""
    from checkpoints_conv import import_hf_to_megatron

    return import_hf_to_megatron(hf_folder, megatron_path, overwrite=True)


def demo_config(hf_folder: Path, pretrained: Path, run_dir: Path, steps: int, eval_interval: int) -> Any:
    """``tiny_llama_sft(hf_path=...)`` pointed at the imported weights, with the run's files under ``run_dir``.

    ``run_dir/checkpoints`` holds the checkpoints, so the engine writes ``metrics.jsonl`` and the loss curve to
    ``run_dir`` (the parent of ``checkpoint.save``). The packed-data cache goes to ``run_dir/packed`` instead of
    next to the shipped data, which may be read-only in an installed package.
    """
    cfg = tiny_llama_sft(hf_path=str(hf_folder))
    cfg.checkpoint.pretrained_checkpoint = str(pretrained)
    cfg.checkpoint.save = cfg.checkpoint.load = str(run_dir / "checkpoints")
    cfg.checkpoint.save_interval = steps
    cfg.train.train_iters = steps
    cfg.scheduler.lr_warmup_iters = min(cfg.scheduler.lr_warmup_iters, steps - 1)
    cfg.validation.eval_interval = eval_interval
    specs = cfg.dataset.packed_sequence_specs
    specs.packed_train_data_path = str(run_dir / "packed" / "training.parquet")
    specs.packed_val_data_path = str(run_dir / "packed" / "validation.parquet")
    return cfg


def finetune_demo(hf_folder: Path, pretrained: Path, run_dir: Path, steps: int, eval_interval: int) -> Any:
    """Train with :func:`demo_config` through ``sft_bridge_port.stages.run`` (what ``sft-bridge-port run`` does).

    Returns the run's ``GlobalState``. The process group and parallel state are torn down afterwards, so the
    export that follows runs as a fresh world of one.
    """
    from sft_bridge_port.stages import run
    from sft_bridge_port.utils.dist_context import destroy_distributed

    cfg = demo_config(hf_folder, pretrained, run_dir, steps, eval_interval)
    try:
        return run(cfg)
    finally:
        destroy_distributed()


def export_checkpoint(checkpoint_root: Path, hf_out: Path, hf_source: Path) -> Path:
    """Latest checkpoint under ``checkpoint_root`` -> HF folder; config.json/generation_config.json come from
    ``hf_source`` (the base model), as when exporting a finetune of a hub model."""
    from checkpoints_conv import export_megatron_to_hf

    return export_megatron_to_hf(checkpoint_root, hf_out, hf_config_source=hf_source, overwrite=True)


def load_exported(folder: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from an HF folder with plain transformers, on the GPU when there is one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def chat_prompt_ids(tokenizer: Any, prompt: str) -> torch.Tensor:
    """``[1, n]`` ids of one user turn rendered with the chat template, ending with the assistant header.

    The template already starts with BOS, so the tokenizer must not add another one.
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]


def generate_reply(folder: Path, prompt: str, max_new_tokens: int = 30) -> str:
    """Greedy reply of the exported model to ``prompt`` (stops at the end-of-turn token)."""
    model, tokenizer = load_exported(folder)
    ids = chat_prompt_ids(tokenizer, prompt).to(model.device)
    with torch.no_grad():
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def clear_previous(out: Path, names: tuple[str, ...]) -> list[str]:
    """Remove the demo's own sub-folders of ``out`` from an earlier run (nothing else); returns those removed.

    Needed because ``checkpoint.load`` would otherwise resume the finished earlier run and train nothing.
    """
    import shutil

    removed = []
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
            removed.append(name)
        elif path.exists():
            os.remove(path)
            removed.append(name)
    return removed

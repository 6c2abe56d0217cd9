"""A tiny byte-level BPE tokenizer trained on given texts, with chat special tokens and a chat template.

Tests and the demo use it instead of a hub download::

    tok = build_tiny_tokenizer("/tmp/tok", ["hello world", "2 + 2 = 4"], vocab_size=300)
    tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    # '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nhi<|eot_id|>'
"""

from __future__ import annotations

import os
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from sft_bridge_port.data.templates import CHAT_TEMPLATES

SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|finetune_right_pad_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<s>", "</s>", "<unk>", "<pad>",
]
# Llama-3's pre-tokenizer split: newline runs stay one piece, so "\n\n" + "12" splits the same way whether or not
# the text continues (GPT-2's pattern would not, breaking the prompt-prefix property of chat templates).
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# (bos, eos, pad) per template family; "llama3" is also used for custom templates.
FAMILY_TOKENS = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"),
    "chatml": (None, "<|im_end|>", "<|endoftext|>"),
    "mistral": ("<s>", "</s>", "<pad>"),
}


def build_tiny_tokenizer(out_dir: str | os.PathLike, texts: Iterable[str], vocab_size: int = 512,
                         chat_template: str = "llama3") -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and save a loadable HF tokenizer folder to ``out_dir``.

    Args:
        out_dir: folder written with ``save_pretrained`` (``tokenizer.json``, ``tokenizer_config.json``, ...).
        texts: training corpus (any short strings; the byte alphabet is always included, so nothing is unknown).
        vocab_size: target vocabulary size including the 13 special tokens and 256 bytes.
        chat_template: "llama3" | "chatml" | "mistral", or a Jinja template string (llama3 special tokens).

    Returns:
        The tokenizer; ``add_special_tokens=True`` prepends the family's BOS (none for chatml), as the real ones do.
    """
    family = chat_template if chat_template in CHAT_TEMPLATES else "llama3"
    template = CHAT_TEMPLATES.get(chat_template, chat_template)
    bos, eos, pad = FAMILY_TOKENS[family]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer=trainer)
    steps = [processors.ByteLevel(trim_offsets=False)]
    if bos is not None:
        steps.append(processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                   special_tokens=[(bos, tok.token_to_id(bos))]))
    tok.post_processor = processors.Sequence(steps)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    hf.chat_template = template
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return hf

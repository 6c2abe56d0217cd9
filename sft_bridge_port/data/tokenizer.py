"""``load_tokenizer``: the Hugging Face tokenizer named by a ``TokenizerConfig`` (Bridge's field names) or a path."""

from __future__ import annotations

import os
from typing import Any

from sft_bridge_port.data.encode import read_chat_template


def load_tokenizer(tokenizer_cfg_or_path: Any) -> Any:
    """Load a fast HF tokenizer.

    Args:
        tokenizer_cfg_or_path: a local folder / hub id, an already-built tokenizer (returned as is), or a config with
            Bridge's ``TokenizerConfig`` fields: ``tokenizer_model`` (required), ``tokenizer_type``
            ("HuggingFaceTokenizer"), ``chat_template`` / ``chat_template_path`` (override), ``hf_tokenizer_kwargs``,
            ``trust_remote_code``.

    Returns:
        ``transformers.PreTrainedTokenizerBase`` with the chat template override applied.

    Raises:
        ValueError: no ``tokenizer_model``, or a tokenizer type other than a Hugging Face one.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    if isinstance(tokenizer_cfg_or_path, PreTrainedTokenizerBase):
        return tokenizer_cfg_or_path
    if isinstance(tokenizer_cfg_or_path, (str, os.PathLike)):
        return AutoTokenizer.from_pretrained(str(tokenizer_cfg_or_path))
    cfg = tokenizer_cfg_or_path
    kind = getattr(cfg, "tokenizer_type", None) or "HuggingFaceTokenizer"
    if kind not in ("HuggingFaceTokenizer", "HFTokenizer"):
        raise ValueError(f"tokenizer.tokenizer_type={kind!r}: SFT data needs 'HuggingFaceTokenizer'")
    model = getattr(cfg, "tokenizer_model", None)
    if not model:
        raise ValueError("tokenizer.tokenizer_model is not set: give an HF folder or hub id (e.g. the model path)")
    kwargs = dict(getattr(cfg, "hf_tokenizer_kwargs", None) or {})
    if getattr(cfg, "trust_remote_code", False):
        kwargs.setdefault("trust_remote_code", True)
    tok = AutoTokenizer.from_pretrained(str(model), **kwargs)
    override = getattr(cfg, "chat_template_path", None) or getattr(cfg, "chat_template", None)
    if override:
        tok.chat_template = read_chat_template(override)
    return tok

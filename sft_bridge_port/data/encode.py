"""Row -> ``Conversation`` -> (input_ids, loss_mask), with Bridge's ``dataset_kwargs`` merged into our options,
``on_bad_sample`` / ``on_long_sample`` applied and every outcome counted in ``DataStats``.

Example::

    enc = SampleEncoder(cfg, tokenizer)
    samples = enc.encode_rows(iter_rows("train.jsonl"), stats)   # list[EncodedSample]
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from sft_bridge_port.data.chat_tokenize import ChatEncoder, EncodedSample
from sft_bridge_port.data.config import FinetuningDatasetConfig
from sft_bridge_port.data.conversation import BadSampleError, Conversation
from sft_bridge_port.data.formats import detect_format, resolve_format_name, row_to_conversation
from sft_bridge_port.data.prompt_tokenize import PromptEncoder
from sft_bridge_port.data.stats import DataStats
from sft_bridge_port.data.templates import CHAT_TEMPLATES


# Bridge `dataset_kwargs` keys we honour (same meaning as in Bridge's create_sft_dataset) -> our field names.
_KWARG_FIELDS = {
    "pad_to_max_length": "pad_to_max_length", "prompt_template": "prompt_template", "label_key": "label_key",
    "answer_only_loss": "answer_only_loss", "add_bos": "add_bos", "add_eos": "add_eos",
    "pad_seq_length_to_mult": "pad_seq_length_to_mult", "chat": "use_chat_template",
    "use_hf_tokenizer_chat_template": "use_chat_template", "format": "format", "chat_template": "chat_template",
    "on_bad_sample": "on_bad_sample", "reasoning": "reasoning", "eot_tokens": "eot_tokens",
}
_IGNORED_KWARGS = ("truncation_method", "truncation_field", "add_sep", "memmap_workers", "index_mapping_dir",
                   "get_attention_mask_from_fusion", "hf_dataset", "global_sample_mapping")
OPTION_FIELDS = tuple(sorted(set(_KWARG_FIELDS.values()) | {"on_long_sample", "verify_prefix_tokens"}))


@dataclass(frozen=True)
class EncodeOptions:
    """The effective per-sample options (config fields overridden by ``dataset_kwargs``)."""

    format: str | None
    chat_template: str | None
    use_chat_template: bool | None
    answer_only_loss: bool
    prompt_template: str
    label_key: str | None
    add_bos: bool | None
    add_eos: bool
    on_bad_sample: str
    on_long_sample: str
    reasoning: str
    pad_to_max_length: bool
    pad_seq_length_to_mult: int
    eot_tokens: tuple[str, ...] | None
    verify_prefix_tokens: bool


def resolve_options(cfg: FinetuningDatasetConfig) -> EncodeOptions:
    """Merge ``cfg.dataset_kwargs`` over the config fields; unknown keys are reported, never silently dropped."""
    values = {name: getattr(cfg, name) for name in OPTION_FIELDS}
    for key, value in (cfg.dataset_kwargs or {}).items():
        if key in _KWARG_FIELDS:
            values[_KWARG_FIELDS[key]] = value
        elif key == "truncation_method" and value != "right":
            raise ValueError(f"dataset.dataset_kwargs.truncation_method={value!r}: only 'right' is supported")
        elif key not in _IGNORED_KWARGS:
            raise ValueError(f"dataset.dataset_kwargs has unknown key {key!r}; known keys: "
                             f"{sorted(_KWARG_FIELDS) + list(_IGNORED_KWARGS)}")
    values["chat_template"] = read_chat_template(values["chat_template"])
    values["eot_tokens"] = tuple(values["eot_tokens"]) if values["eot_tokens"] else None
    if values["format"]:
        values["format"] = resolve_format_name(values["format"])
    return EncodeOptions(**values)


def read_chat_template(value: str | None) -> str | None:
    """A chat template given as a built-in name (``CHAT_TEMPLATES``), a file path, or Jinja source."""
    if not value:
        return None
    if value in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[value]
    if "{" not in value and os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    if "{" not in value:
        raise ValueError(f"dataset.chat_template={value!r} is neither a file, a built-in name "
                         f"{sorted(CHAT_TEMPLATES)}, nor Jinja source")
    return value


class SampleEncoder:
    """Encode rows of one split; ``max_tokens`` caps a sample (seq_length + 1: one token is lost to the shift)."""

    BATCH = 256  # rows per tokenizer call: amortises the per-call cost, small enough to stream

    def __init__(self, cfg: FinetuningDatasetConfig, tokenizer: Any, max_tokens: int | None = None):
        self.opts = resolve_options(cfg)
        self.max_tokens = max_tokens if max_tokens is not None else cfg.seq_length + 1
        o = self.opts
        self.prompt = PromptEncoder(tokenizer, o.prompt_template, o.answer_only_loss, o.add_bos, o.add_eos)
        has_template = bool(o.chat_template or getattr(tokenizer, "chat_template", None))
        self.chat = None
        if has_template and o.use_chat_template is not False:
            self.chat = ChatEncoder(tokenizer, o.chat_template, o.reasoning, list(o.eot_tokens or ()),
                                    o.verify_prefix_tokens)
        elif o.use_chat_template:
            ChatEncoder(tokenizer, o.chat_template)  # raises the "no chat template" error with its remedy

    def encode_row(self, row: Any, source: str) -> EncodedSample:
        """One row -> sample (untruncated); raises ``BadSampleError`` for bad rows."""
        conv, use_chat = self._conversation(row, source)
        return self.chat.encode(conv) if use_chat else self.prompt.encode(conv)

    def _conversation(self, row: Any, source: str) -> tuple[Conversation, bool]:
        """The row's ``Conversation`` and whether it goes through the chat template."""
        if isinstance(row, BadSampleError):
            raise row
        fmt = self.opts.format or (detect_format(row.keys(), source) if isinstance(row, dict) else None)
        conv = row_to_conversation(row, source, fmt, self.opts.label_key)
        use_chat = self.opts.use_chat_template
        if use_chat is None:
            use_chat = self.chat is not None and fmt != "prompt_completion"
        return conv, bool(use_chat)

    def encode_rows(self, rows: Iterable[tuple[Any, str]], stats: DataStats,
                    limit: int | None = None) -> list[EncodedSample]:
        """Encode, truncate and count; bad rows raise (on_bad_sample="error") or are counted and skipped.

        Rows are encoded in chunks of ``BATCH`` (one tokenizer call each) but counted, truncated and reported one by
        one in order, and never more rows are read than one-by-one encoding would read to reach ``limit``.
        """
        out: list[EncodedSample] = []
        it = iter(rows)
        while limit is None or len(out) < limit:
            chunk = list(itertools.islice(it, self.BATCH if limit is None else min(self.BATCH, limit - len(out))))
            if not chunk:
                break
            for (_, source), result in zip(chunk, self.encode_chunk(chunk)):
                stats.rows_read += 1
                try:
                    if isinstance(result, BadSampleError):
                        raise result
                    sample, trained = self._fit(result, source)
                except BadSampleError as err:
                    policy = self.opts.on_long_sample if err.reason == "too_long" else self.opts.on_bad_sample
                    if policy == "error":
                        knob = "on_long_sample" if err.reason == "too_long" else "on_bad_sample"
                        detail = f"{err.detail} (set dataset.{knob}='skip' to count and skip such rows)"
                        raise BadSampleError(err.source, err.field, err.reason, detail) from None
                    stats.skip(err.reason, str(err))
                    continue
                stats.samples += 1
                stats.truncated += sample.truncated
                stats.tokens += len(sample.input_ids)
                stats.trained_tokens += trained
                out.append(sample)
        return out

    def encode_chunk(self, rows: list[tuple[Any, str]]) -> list[EncodedSample | BadSampleError]:
        """``encode_row`` for a list of rows (untruncated), with the chat rows tokenised in one batch; a bad row's
        ``BadSampleError`` is returned in its place."""
        out: list[Any] = [None] * len(rows)
        chat_at, convs = [], []
        for n, (row, source) in enumerate(rows):
            try:
                conv, use_chat = self._conversation(row, source)
                if use_chat:
                    chat_at.append(n)
                    convs.append(conv)
                else:
                    out[n] = self.prompt.encode(conv)
            except BadSampleError as err:
                out[n] = err
        if convs:
            for n, result in zip(chat_at, self.chat.encode_many(convs)):
                out[n] = result
        return out

    def _fit(self, sample: EncodedSample, source: str) -> tuple[EncodedSample, int]:
        """Apply ``on_long_sample`` and require at least one trained target after the shift; returns the sample and
        its number of trained targets."""
        n = len(sample.input_ids)
        if n > self.max_tokens:
            if self.opts.on_long_sample != "truncate":
                raise BadSampleError(source, "<sample>", "too_long", f"{n} tokens > limit {self.max_tokens} "
                                     "(seq_length + 1); set dataset.on_long_sample='truncate' or raise seq_length")
            sample = EncodedSample(sample.input_ids[: self.max_tokens], sample.loss_mask[: self.max_tokens], True)
        trained = int(np.count_nonzero(sample.loss_mask[1:]))
        if not trained:
            reason = "no_trained_tokens_after_truncation" if sample.truncated else "no_trained_tokens"
            raise BadSampleError(source, "<sample>", reason, "no token of this sample would be trained")
        return sample, trained

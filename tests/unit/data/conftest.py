"""Shared fixtures: tiny BPE tokenizers trained in the test with chat templates written here."""

from __future__ import annotations

import json

import pytest

from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Hello! How can I help you today? I am doing well, thank you.",
    "What is 12 + 30? 12 + 30 = 42. Reverse the word 'planet': tenalp.",
    "Answer: yes. Question: why? Because the sky is blue. Context: a short story about a garden.",
    "<think>\nlet me add the numbers\n</think>\n\n",
    '{"name": "get_weather", "parameters": {"city": "Paris"}} tool weather sunny 21 degrees',
] * 3

# Qwen3-like: reasoning shown only after the last user turn; an empty think block on the final assistant turn.
THINK_TEMPLATE = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.reasoning_content and loop.index0 > ns.last_query %}"
    "{{- '<think>\\n' + message.reasoning_content + '\\n</think>\\n\\n' }}"
    "{%- elif loop.last %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{{- message.content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# ChatML with a {% generation %} block: our prefix method must give the same mask as without it.
CHATML_GENERATION_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message.content + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="session")
def tok_factory(tmp_path_factory):
    cache = {}

    def make(template: str = "llama3"):
        if template not in cache:
            out = tmp_path_factory.mktemp("tok")
            family = template if template in ("llama3", "chatml", "mistral") else "chatml"
            tok = build_tiny_tokenizer(out, CORPUS, vocab_size=400, chat_template=family)
            if family != template:
                tok.chat_template = template
                tok.save_pretrained(str(out))
            cache[template] = tok
        return cache[template]

    return make


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat_row(*pairs, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for q, a in pairs:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": msgs}


def trained_runs(tok, sample):
    """Decoded text of each contiguous run of trained tokens."""
    runs, cur = [], []
    for tid, m in zip(sample.input_ids.tolist(), sample.loss_mask.tolist()):
        if m:
            cur.append(tid)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs

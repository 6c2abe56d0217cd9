"""The one-render batched path gives the per-prefix method's exact masks, falls back when it cannot, and batching
keeps row order, limits and errors as one-by-one encoding."""

import random

import jinja2
import pytest

from sft_bridge_port.data.chat_tokenize import ChatEncoder
from sft_bridge_port.data.config import FinetuningDatasetConfig
from sft_bridge_port.data.conversation import BadSampleError
from sft_bridge_port.data.encode import SampleEncoder
from sft_bridge_port.data.formats import row_to_conversation
from sft_bridge_port.data.stats import DataStats

from .conftest import CHATML_GENERATION_TEMPLATE, THINK_TEMPLATE, chat_row, trained_runs

PAIRS = [("What is 12 + 30?", "12 + 30 = 42."), ("And the capital of France?", "The capital of France is Paris."),
         ("Reverse 'planet'.", "tenalp"), ("Hello!", "Hello! How can I help you today?")]


def varied_rows(n=48, seed=0):
    """Chats of 1-3 exchanges, some with a system turn, reasoning, or whitespace around a content."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        msgs = [{"role": "system", "content": "Be brief."}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 3)):
            q, a = rng.choice(PAIRS)
            if rng.random() < 0.25:
                a = f"<think>\nadd {rng.randint(1, 9)}\n</think>\n\n{a}"
            if rng.random() < 0.15:
                q = f"  {q}\n"
            if rng.random() < 0.1:
                a = f" {a}"
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        rows.append({"messages": msgs})
    return rows


def outcome(result):
    if isinstance(result, BadSampleError):
        return ("error", result.reason)
    return (result.input_ids.tolist(), result.loss_mask.tolist())


@pytest.mark.parametrize("name", ["llama3", "chatml", "mistral", "think", "generation"])
@pytest.mark.parametrize("reasoning", ["keep", "strip"])
def test_one_render_path_equals_the_per_prefix_method(tok_factory, name, reasoning):
    template = {"think": THINK_TEMPLATE, "generation": CHATML_GENERATION_TEMPLATE}.get(name, name)
    tok = tok_factory(template)
    convs = [row_to_conversation(r, f"t:{i}") for i, r in enumerate(varied_rows())]
    enc = ChatEncoder(tok, reasoning=reasoning)
    fast = enc._fast.encode_many(convs)
    # the one-render path takes every conversation (None = handed to the per-prefix method), except where the
    # template rewrites a text: the Llama-3 one trims contents, so padded ones go to the per-prefix method
    padded = [any(m.content != m.content.strip() for m in c.messages) for c in convs]
    assert [r is None for r in fast] == [p and name == "llama3" for p in padded]
    for conv, got in zip(convs, enc.encode_many(convs)):
        try:
            want = enc.encode_exact(conv)
        except BadSampleError as err:
            want = err
        assert outcome(got) == outcome(want), conv.source


@pytest.mark.parametrize("name", ["llama3", "mistral"])
def test_one_render_path_without_prefix_verification(tok_factory, name):
    tok = tok_factory(name)
    convs = [row_to_conversation(r, f"t:{i}") for i, r in enumerate(varied_rows(24, seed=1))]
    enc = ChatEncoder(tok, verify_prefix_tokens=False)
    for conv, got in zip(convs, enc.encode_many(convs)):
        assert outcome(got) == outcome(enc.encode_exact(conv)), conv.source


def test_rewritten_content_falls_back_to_the_per_prefix_method(tok_factory):
    tok = tok_factory("llama3")  # the Llama-3 template trims contents, so a padded content is not printed verbatim
    conv = row_to_conversation(chat_row(("hi", "  12 + 30 = 42.\n")), "t:1")
    enc = ChatEncoder(tok)
    assert enc._fast.encode_many([conv]) == [None]
    assert trained_runs(tok, enc.encode(conv)) == ["12 + 30 = 42.<|eot_id|>"]


def test_first_conversation_of_a_shape_is_audited(tok_factory):
    tok = tok_factory("chatml")
    # the prompt of an assistant turn depends on the *content* of the message before it, which the one-render
    # path cannot see: the audit of the shape's first conversation catches it and retires the shape
    template = ("{%- if messages[-1].content == 'magic' %}{{ 'SYS\\n' }}{%- endif %}"
                "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
                "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}")
    enc = ChatEncoder(tok, chat_template=template)
    first = enc.encode_many([row_to_conversation(chat_row(("magic", "12 + 30 = 42.")), "t:1")])[0]
    assert isinstance(first, BadSampleError) and first.reason == "template_prefix_mismatch"
    assert all(shape.skeleton is None for shape in enc._fast._shapes.values())
    conv = row_to_conversation(chat_row(("hi", "12 + 30 = 42.")), "t:2")
    assert enc._fast.encode_many([conv]) == [None]
    assert trained_runs(tok, enc.encode(conv)) == ["12 + 30 = 42.<|im_end|>"]


def test_template_sandbox_is_kept(tok_factory):
    tok = tok_factory("chatml")
    for template in ("{{ messages.__class__.__mro__ }}", "{{ messages.append(1) }}"):
        enc = ChatEncoder(tok, chat_template=template + "{{ messages[0].content }}")
        for _ in range(2):  # the second render goes through the cached attribute check
            with pytest.raises(jinja2.exceptions.SecurityError):
                enc.render([{"role": "user", "content": "hi"}], None, False)


def test_batched_rows_keep_order_limit_and_first_error(tok_factory, monkeypatch):
    tok = tok_factory("chatml")
    rows = [chat_row(PAIRS[i % 4]) for i in range(9)]
    rows[6] = {"messages": [{"role": "user", "content": "no answer"}]}
    monkeypatch.setattr(SampleEncoder, "BATCH", 4)
    pulled = []

    def source():
        for i, row in enumerate(rows):
            pulled.append(i)
            yield row, f"r:{i}"

    enc = SampleEncoder(FinetuningDatasetConfig(seq_length=64), tok)
    stats = DataStats()
    samples = enc.encode_rows(source(), stats, limit=5)  # the bad row 6 is never read
    assert len(samples) == 5 and stats.rows_read == 5 and pulled == [0, 1, 2, 3, 4]
    one_by_one = [enc.encode_row(row, f"r:{i}") for i, row in enumerate(rows[:5])]
    assert [outcome(s) for s in samples] == [outcome(s) for s in one_by_one]
    with pytest.raises(BadSampleError, match="r:6.*on_bad_sample") as err:
        enc.encode_rows([(r, f"r:{i}") for i, r in enumerate(rows)], DataStats())
    assert err.value.reason == "no_assistant_turn"
    skip = SampleEncoder(FinetuningDatasetConfig(seq_length=64, on_bad_sample="skip"), tok)
    stats = DataStats()
    assert len(skip.encode_rows([(r, f"r:{i}") for i, r in enumerate(rows)], stats)) == 8
    assert stats.rows_read == 9 and dict(stats.skipped) == {"no_assistant_turn": 1}

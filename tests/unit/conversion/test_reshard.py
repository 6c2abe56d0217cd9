"""HF -> megatron -> HF as pure state-dict transforms: bit-exact at TP 1 and through TP 2 / PP 2 shards."""

from __future__ import annotations

import pytest
import torch

from checkpoints_conv import engine
from checkpoints_conv.hf_io import SafetensorsReader, iter_state, read_config
from checkpoints_conv.mapping import padded_vocab_size, shape_from_hf_config
from checkpoints_conv.state_dicts import hf_to_mcore_state, mcore_to_hf_state, shard_state, unshard_state
from checkpoints_conv.tables import get_table
from tests.unit.conversion.conftest import FAMILIES


def _load(folder, tp=1, divisible_by=8):
    cfg = read_config(folder)
    shape = shape_from_hf_config(cfg, padded_vocab_size(cfg["vocab_size"], divisible_by, tp))
    return get_table(cfg["architectures"][0]), shape


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_round_trip_through_parallel_shards_is_bit_exact(hf_models, family, tp, pp):
    table, shape = _load(hf_models[family], tp)
    with SafetensorsReader(hf_models[family]) as reader:
        original = dict(iter_state(reader))
        full = hf_to_mcore_state(table, shape, reader)
    assert full["embedding.word_embeddings.weight"].shape[0] == shape.padded_vocab_size > shape.vocab_size
    shards = shard_state(table, shape, full, tp, pp)
    assert len(shards) == tp * pp
    back = dict(mcore_to_hf_state(table, shape, unshard_state(table, shape, shards, tp, pp)))
    assert set(back) == set(original)
    for name, t in original.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def test_shards_have_megatron_local_names_and_shapes(hf_models):
    table, shape = _load(hf_models["qwen2"], tp=2)
    with SafetensorsReader(hf_models["qwen2"]) as reader:
        full = hf_to_mcore_state(table, shape, reader)
    shards = shard_state(table, shape, full, tp=2, pp=2)
    first, last = shards[(0, 1)], shards[(1, 1)]
    assert "embedding.word_embeddings.weight" in first and "output_layer.weight" not in first
    assert "decoder.final_layernorm.weight" in last and "output_layer.weight" in last
    # layer 1 of the model is local layer 0 of stage 1
    q = last["decoder.layers.0.self_attention.linear_qkv.weight"]
    assert q.shape == (shape.qkv_rows // 2, shape.hidden_size)
    assert torch.equal(q, full["decoder.layers.1.self_attention.linear_qkv.weight"][shape.qkv_rows // 2:])
    assert last["decoder.layers.0.self_attention.linear_proj.weight"].shape == (shape.hidden_size, shape.q_rows // 2)
    assert torch.equal(last["decoder.layers.0.input_layernorm.weight"], full["decoder.layers.1.input_layernorm.weight"])


def test_tied_model_puts_an_embedding_copy_on_the_last_stage(hf_models):
    table, shape = _load(hf_models["llama_tied"])
    with SafetensorsReader(hf_models["llama_tied"]) as reader:
        full = hf_to_mcore_state(table, shape, reader)
    assert "output_layer.weight" not in full
    shards = shard_state(table, shape, full, tp=1, pp=2)
    assert torch.equal(shards[(1, 0)]["output_layer.weight"], full["embedding.word_embeddings.weight"])


@pytest.mark.parametrize(
    "overrides,tp,message",
    [
        (dict(num_key_value_heads=1), 2, r"num_query_groups \(KV heads\)=1"),
        (dict(intermediate_size=63), 2, "ffn_hidden_size=63"),
        (dict(num_attention_heads=2, num_key_value_heads=1, head_dim=16), 4, "num_attention_heads=2"),
    ],
)
def test_tp_that_does_not_divide_is_a_clear_error(tmp_path, overrides, tp, message):
    from tests.unit.conversion.conftest import make_hf_model

    folder = make_hf_model(tmp_path / "m", "llama", **overrides)
    table, shape = _load(folder, tp)
    with pytest.raises(ValueError, match=f"tensor parallel size {tp} does not divide.*{message}"):
        engine.check_tp_divides(shape, tp)


def test_odd_vocab_without_padding_does_not_divide(hf_models):
    cfg = read_config(hf_models["llama_tied"])
    shape = shape_from_hf_config(cfg)  # 97 rows, no padding
    with pytest.raises(ValueError, match="padded vocab size=97"):
        engine.check_tp_divides(shape, 2)

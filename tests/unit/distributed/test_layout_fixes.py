"""Two bugs the equivalence runs found: fp32 runs with PP > 1 were refused (no ``pipeline_dtype``), and packed
batches shorter than ``seq_length`` broke PP (fixed P2P shapes) and sequence parallelism (length % TP)."""

from __future__ import annotations

import json
import types

import pytest
import torch

from sft_bridge_port.training.batch import fixed_length_dataset


def test_fp32_pipeline_parallel_provider_gets_a_pipeline_dtype():
    from sft_bridge_port.models import provider_from_hf_config
    from sft_bridge_port.models.tiny import tiny_hf_config

    provider = provider_from_hf_config(tiny_hf_config("llama"), pipeline_model_parallel_size=2,
                                       params_dtype=torch.float32, bf16=False)
    provider.finalize()  # megatron-core raised "pipeline_dtype must be specified" here
    assert provider.pipeline_dtype == torch.float32
    single = provider_from_hf_config(tiny_hf_config("llama"), params_dtype=torch.float32, bf16=False)
    single.finalize()
    assert single.pipeline_dtype is None  # untouched without pipeline parallelism


def _layout(tp=1, pp=1, cp=1, sp=False):
    return types.SimpleNamespace(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                 context_parallel_size=cp, sequence_parallel=sp)


@pytest.fixture
def dataset(tmp_path):
    from sft_bridge_port.data import FinetuningDatasetConfig, PackedSequenceSpecs

    rows = [{"input": f"What is {a} plus {b}?", "output": f"{a + b}"} for a in range(6) for b in range(3)]
    (tmp_path / "training.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return FinetuningDatasetConfig(dataset_root=str(tmp_path), seq_length=64, do_validation=False, do_test=False,
                                   packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=64))


@pytest.mark.parametrize("layout", [_layout(pp=2), _layout(tp=2, sp=True), _layout(cp=2)], ids=["pp2", "tp2_sp", "cp2"])
def test_layouts_that_split_or_pipe_the_sequence_get_full_length_batches(dataset, layout, tmp_path):
    from sft_bridge_port.data import build_sft_data_iterators
    from sft_bridge_port.data.tiny_tokenizer import build_tiny_tokenizer

    fixed = fixed_length_dataset(dataset, layout)
    assert fixed.pad_to_max_length and not dataset.pad_to_max_length  # a copy; the user's config is unchanged
    tok = build_tiny_tokenizer(tmp_path / "tok", ["What is 1 plus 2? 3"], vocab_size=300)
    plain = next(build_sft_data_iterators(dataset, tok, micro_batch_size=1, data_parallel_rank=0,
                                          data_parallel_size=1).train)
    full = next(build_sft_data_iterators(fixed, tok, micro_batch_size=1, data_parallel_rank=0,
                                         data_parallel_size=1).train)
    assert plain["tokens"].shape[1] < 64  # the default packed batch is only as long as its pack (odd lengths too)
    assert full["tokens"].shape == (1, 64)
    n = plain["tokens"].shape[1]
    assert torch.equal(full["tokens"][:, :n], plain["tokens"]) and full["loss_mask"][:, n:].sum() == 0
    assert full["loss_mask"].sum() == plain["loss_mask"].sum()


def test_explicit_false_in_dataset_kwargs_is_overridden_and_plain_layouts_untouched(dataset):
    import dataclasses

    explicit = dataclasses.replace(dataset, dataset_kwargs={"pad_to_max_length": False, "add_eos": True})
    fixed = fixed_length_dataset(explicit, _layout(pp=2))
    assert fixed.pad_to_max_length and fixed.dataset_kwargs == {"add_eos": True}
    for layout in (_layout(), _layout(tp=2), _layout(tp=2, sp=False)):
        assert fixed_length_dataset(dataset, layout) is dataset
    custom = types.SimpleNamespace(build_iterators=lambda **kw: None)  # provider-style datasets pass through
    assert fixed_length_dataset(custom, _layout(pp=2)) is custom

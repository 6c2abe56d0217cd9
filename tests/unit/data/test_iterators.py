"""build_sft_data_iterators: DP sharding, resume, packed cache, bad input accounting, HF path, configs."""

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from sft_bridge_port.data import (
    BadSampleError, FinetuningDatasetConfig, HFDatasetConfig, PackedSequenceSpecs, build_sft_data_iterators,
    default_squad_config, load_tokenizer, process_squad_example,
)
from sft_bridge_port.data.config import DataloaderConfig

from .conftest import chat_row, write_jsonl

QA = [("What is 12 + 30?", "12 + 30 = 42."), ("Capital of France?", "The capital of France is Paris."),
      ("Reverse 'planet'.", "tenalp"), ("Hello!", "Hello! How can I help you today?")]


@pytest.fixture
def root(tmp_path):
    rows = [chat_row(QA[i % 4], QA[(i + 1) % 4][:1] + (f"answer {i}",)) for i in range(24)]
    write_jsonl(tmp_path / "training.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows[:5])
    return tmp_path


def batches(cfg, tok, n, mbs=1, rank=0, dp=1, consumed=0):
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=mbs, data_parallel_rank=rank,
                                   data_parallel_size=dp, consumed_train_samples=consumed)
    return [next(its.train) for _ in range(n)], its


@pytest.mark.parametrize("packed", [False, True])
def test_dp2_interleaves_to_dp1_and_resume(root, tok_factory, packed):
    tok = tok_factory("llama3")
    specs = PackedSequenceSpecs(packed_sequence_size=96) if packed else None
    cfg = FinetuningDatasetConfig(dataset_root=str(root), seq_length=96, packed_sequence_specs=specs,
                                  dataset_kwargs={"pad_to_max_length": True})
    n_items = build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0,
                                       data_parallel_size=1).num_samples["training"]
    steps = n_items + 3  # crosses an epoch boundary (reshuffled by seed)
    dp1, _ = batches(cfg, tok, 2 * steps, mbs=2)
    r0, _ = batches(cfg, tok, steps, mbs=2, rank=0, dp=2)
    r1, _ = batches(cfg, tok, steps, mbs=2, rank=1, dp=2)
    for j in range(steps):
        assert torch.equal(r0[j]["tokens"], dp1[2 * j]["tokens"])
        assert torch.equal(r1[j]["tokens"], dp1[2 * j + 1]["tokens"])
    resumed, _ = batches(cfg, tok, 4, mbs=2, consumed=2 * 5)
    for j in range(4):
        assert torch.equal(resumed[j]["tokens"], dp1[5 + j]["tokens"])
        assert torch.equal(resumed[j]["loss_mask"], dp1[5 + j]["loss_mask"])
    epoch0 = [b["tokens"] for b in batches(cfg, tok, n_items)[0]]
    other_seed, _ = batches(FinetuningDatasetConfig(dataset_root=str(root), seq_length=96, seed=7,
                                                    packed_sequence_specs=specs,
                                                    dataset_kwargs={"pad_to_max_length": True}), tok, n_items)
    if n_items > 3:
        assert any(not torch.equal(a, b["tokens"]) for a, b in zip(epoch0, other_seed))


def test_valid_iterator_and_batch_contract(root, tok_factory):
    tok = tok_factory("chatml")
    cfg = FinetuningDatasetConfig(dataset_root=str(root), seq_length=64)
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=2, data_parallel_rank=0, data_parallel_size=1)
    b = next(its.train)
    assert b["tokens"].dtype == b["labels"].dtype == b["position_ids"].dtype == torch.int64
    assert b["loss_mask"].dtype == torch.float32 and b["loss_mask"].sum() > 0
    assert its.test is None
    assert len(list(its.valid())) == 2 and len(list(its.valid())) == 2  # 5 rows, drop_last -> 2 fresh batches
    assert its.stats["training"].samples == 24 and its.stats["training"].trained_tokens > 0


def test_packed_cache_hit_and_invalidation(root, tok_factory, caplog):
    tok = tok_factory("llama3")

    def build(seq=128, tokenizer=tok):
        cfg = FinetuningDatasetConfig(dataset_root=str(root), seq_length=seq, do_validation=False,
                                      packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=seq))
        from sft_bridge_port.data.builder import prepare_splits
        return prepare_splits(cfg, tokenizer)["training"]

    first = build()
    assert first.meta["cache_hit"] is False and 0 < first.stats.packing_efficiency <= 1
    second = build()
    assert second.meta["cache_hit"] is True and second.meta["cache_path"] == first.meta["cache_path"]
    assert [p["input_ids"].tolist() for p in second.items] == [p["input_ids"].tolist() for p in first.items]
    assert second.stats.samples == first.stats.samples == 24
    meta = json.loads(open(first.meta["cache_path"] + ".meta.json").read())
    assert meta["num_packs"] == len(first.items)
    assert build(seq=160).meta["cache_hit"] is False  # seq length is part of the key
    assert build(tokenizer=tok_factory("chatml")).meta["cache_hit"] is False  # so is the tokenizer
    with open(root / "training.jsonl", "a") as f:
        f.write(json.dumps(chat_row(QA[0])) + "\n")
    changed = build()
    assert changed.meta["cache_hit"] is False and changed.stats.samples == 25  # data hash changed
    explicit = root / "mine.parquet"
    cfg = FinetuningDatasetConfig(dataset_root=str(root), seq_length=128, do_validation=False,
                                  packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=128,
                                                                            packed_train_data_path=str(explicit)))
    from sft_bridge_port.data.builder import prepare_splits
    prepare_splits(cfg, tok)
    cfg.seed = 99  # same path, other options: the stale file is rebuilt, with a warning
    with caplog.at_level(logging.WARNING):
        assert prepare_splits(cfg, tok)["training"].meta["cache_hit"] is False
    assert "rebuilding" in caplog.text


def test_bad_rows_error_or_counted_skip(tmp_path, tok_factory):
    tok = tok_factory("llama3")
    rows = [chat_row(QA[0]), '{"messages": [', {"messages": [{"role": "user", "content": "q"}]},
            {"text": "no format"}, chat_row(QA[1])]
    path = write_jsonl(tmp_path / "training.jsonl", rows)
    cfg = FinetuningDatasetConfig(dataset_root=str(path), seq_length=64)
    with pytest.raises(BadSampleError, match=rf"{path}:2: field '<line>': invalid JSON.*on_bad_sample='skip'"):
        build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)
    cfg.on_bad_sample = "skip"
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)
    st = its.stats["training"]
    assert (st.rows_read, st.samples) == (5, 2)
    assert dict(st.skipped) == {"malformed_json": 1, "no_assistant_turn": 1, "unknown_format": 1}
    assert f"{path}:3" in st.examples["no_assistant_turn"] and "skipped 1 x malformed_json" in st.report()


def test_long_samples_truncate_skip_or_error(tmp_path, tok_factory):
    tok = tok_factory("llama3")
    long_answer = " ".join(["The capital of France is Paris."] * 30)
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(QA[0]), chat_row(("Capital?", long_answer))])
    cfg = FinetuningDatasetConfig(dataset_root=str(path), seq_length=48, do_validation=False)
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=2, data_parallel_rank=0, data_parallel_size=1)
    assert its.stats["training"].truncated == 1 and next(its.train)["tokens"].shape[1] == 48
    cfg.on_long_sample = "skip"
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)
    assert its.stats["training"].skipped == {"too_long": 1}
    cfg.on_long_sample = "error"
    with pytest.raises(BadSampleError, match=r"d.jsonl:2.*tokens > limit 49"):
        build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)


def test_prompt_completion_file_and_iterable_sources(tmp_path, tok_factory):
    tok = tok_factory("llama3")
    rows = [{"input": "Question: why?", "output": "Because."}] * 3
    cfg = FinetuningDatasetConfig(dataset_root=rows, seq_length=32, max_train_samples=2)
    its = build_sft_data_iterators(cfg, tok, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)
    assert its.num_samples == {"training": 2}
    b = next(its.train)
    trained = b["labels"][0][b["loss_mask"][0].bool()].tolist()
    assert tok.decode(trained) == "Because.<|eot_id|>"  # prompt_template path; EOS trained
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "training.parquet")
    its = build_sft_data_iterators(FinetuningDatasetConfig(dataset_root=str(tmp_path), seq_length=32), tok,
                                   micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)
    assert its.num_samples["training"] == 3


def test_hf_dataset_config_through_load_dataset(tmp_path, tok_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = tmp_path / "hub_like"
    (src / "data").mkdir(parents=True)
    rows = [{"context": f"Paris is in France {i}.", "question": "Where is Paris?",
             "answers": {"text": ["France"], "answer_start": [12]}, "id": str(i)} for i in range(20)]
    pq.write_table(pa.Table.from_pylist(rows), src / "data" / "train-00000.parquet")
    cfg = HFDatasetConfig(dataset_name=str(src), process_example_fn=process_squad_example, seq_length=64,
                          dataset_root=str(tmp_path / "out"), val_proportion=0.25, do_test=False)
    its = build_sft_data_iterators(cfg, tok_factory("llama3"), micro_batch_size=1, data_parallel_rank=0,
                                   data_parallel_size=1)
    assert its.num_samples == {"training": 15, "validation": 5}
    first = json.loads((tmp_path / "out" / "training.jsonl").read_text().splitlines()[0])
    assert first["input"].startswith("Context: Paris is in France") and first["output"] == "France"


def test_configs_keep_bridge_fields_and_defaults():
    squad = default_squad_config(2048)
    assert (squad.dataset_name, squad.seed, squad.val_proportion, squad.do_test, squad.rewrite) == (
        "rajpurkar/squad", 5678, 0.1, False, False)
    assert squad.process_example_fn is process_squad_example
    assert squad.packed_sequence_specs.packed_sequence_size == 2048
    assert squad.dataset_kwargs == {"pad_to_max_length": True}
    assert default_squad_config(512, packed_sequence=False).packed_sequence_specs is None
    d = DataloaderConfig()
    assert (d.num_workers, d.data_sharding, d.pin_memory, d.drop_last, d.persistent_workers) == (2, True, True,
                                                                                                True, True)
    f = FinetuningDatasetConfig(seq_length=8)
    assert (f.seed, f.memmap_workers, f.do_validation, f.do_test, f.dataloader_type) == (1234, 1, True, True, "batch")
    p = PackedSequenceSpecs()
    assert (p.packed_sequence_size, p.pad_cu_seqlens, p.pad_seq_to_mult, p.enabled) == (-1, False, 1, False)
    with pytest.raises(ValueError, match="dataset.on_bad_sample"):
        FinetuningDatasetConfig(seq_length=8, on_bad_sample="ignore")
    with pytest.raises(ValueError, match="unknown key 'pad_to_max'"):
        build_sft_data_iterators(FinetuningDatasetConfig(seq_length=8, dataset_root=[], dataset_kwargs={
            "pad_to_max": True}), None, micro_batch_size=1, data_parallel_rank=0, data_parallel_size=1)


def test_load_tokenizer_from_config(tok_factory, tmp_path):
    tok = tok_factory("llama3")
    tok.save_pretrained(str(tmp_path))
    cfg = SimpleNamespace(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=str(tmp_path), chat_template="chatml")
    loaded = load_tokenizer(cfg)
    assert loaded("hi").input_ids == tok("hi").input_ids and "<|im_start|>" in loaded.chat_template
    with pytest.raises(ValueError, match="tokenizer.tokenizer_model"):
        load_tokenizer(SimpleNamespace(tokenizer_type="HuggingFaceTokenizer", tokenizer_model=None))

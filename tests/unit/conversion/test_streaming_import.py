"""The streaming import writes the same checkpoint as a filled CPU model, and its peak memory is not the model."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from checkpoints_conv import import_hf_to_megatron
from checkpoints_conv.engine import expected_hf_shapes, plan
from checkpoints_conv.hf_io import SafetensorsReader, read_config, write_safetensors
from checkpoints_conv.importer import prepare_provider
from checkpoints_conv.mapping import ModelShape, shape_from_hf_config
from checkpoints_conv.model_io import build_tp1_model, load_rows
from checkpoints_conv.tables import get_table


def _full_model_checkpoint(hf: Path, out: Path) -> None:
    """The pre-streaming way: build the CPU model, fill it, ``save_model_weights`` (the reference)."""
    from sft_bridge_port.utils.dist_ckpt import save_model_weights
    from sft_bridge_port.utils.dist_context import parallel_context

    cfg = read_config(hf)
    table = get_table(cfg["architectures"][0])
    with SafetensorsReader(hf) as reader:
        provider = prepare_provider(hf, 1, 1, torch.float32)
        shape = ModelShape.from_provider(provider, provider.padded_vocab_size())
        with parallel_context(1, 1, backend="gloo"):
            model = build_tp1_model(provider, shape.padded_vocab_size, torch.float32)
            load_rows(model, table, shape, reader.get, reader.file_of)
            save_model_weights([model], out)


def _read_all(iter_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(.metadata's {key: (size, dtype)}, every saved tensor) of a torch_dist folder, read with plain torch DCP."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    meta = dcp.FileSystemReader(str(iter_dir)).read_metadata()
    tensors = {k: v for k, v in meta.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)}
    state = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype) for k, v in tensors.items()}
    dcp.load(state, storage_reader=dcp.FileSystemReader(str(iter_dir)), no_dist=True)
    return {k: (tuple(v.size), v.properties.dtype) for k, v in tensors.items()}, state


@pytest.mark.parametrize("family", ["llama_tied", "llama31", "qwen3"])
def test_streamed_checkpoint_equals_the_full_model_save(hf_models, tmp_path, family):
    """Same keys, global shapes, dtypes and bytes (fc1's gate/up factory split included)."""
    import_hf_to_megatron(hf_models[family], tmp_path / "stream", show_progress=False)
    _full_model_checkpoint(hf_models[family], tmp_path / "full")
    meta_s, data_s = _read_all(tmp_path / "stream" / "iter_0000000")
    meta_f, data_f = _read_all(tmp_path / "full")
    assert meta_s == meta_f
    assert any("linear_fc1.weight" in k for k in meta_s)
    for key in data_f:
        assert torch.equal(data_s[key], data_f[key]), key


def _write_random_llama(folder: Path, layers: int, shard_bytes: int) -> int:
    """A random fp32 Llama (hidden 256, FFN 2048, vocab 8192, untied) in small shards; returns its bytes."""
    cfg = dict(
        architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=256, intermediate_size=2048,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=8192,
        max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        hidden_act="silu", torch_dtype="float32",
    )
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    shape = shape_from_hf_config(cfg)
    gen = torch.Generator().manual_seed(0)
    tensors = (
        (name, torch.randn(dims, generator=gen))
        for row, layer in plan(get_table("LlamaForCausalLM"), shape)
        for name, dims in zip(row.hf_names(layer), expected_hf_shapes(row, shape))
    )
    write_safetensors(tensors, folder, max_shard_bytes=shard_bytes)
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


class _PeakRSS:
    """Samples this process's resident set every millisecond; ``peak`` is the largest seen, in bytes."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss() -> int:
        import os

        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.001)

    def __enter__(self) -> "_PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to read RSS")
def test_import_peak_memory_is_a_fraction_of_the_model(hf_models, tmp_path):
    """~190 MB of weights in 16 MB shards: peak RSS growth stays under a third of the model (a full CPU
    model alone would be all of it); the largest converted row is ~4 MB."""
    import_hf_to_megatron(hf_models["llama"], tmp_path / "warmup", show_progress=False)  # imports, gloo, ...
    model_bytes = _write_random_llama(tmp_path / "hf", layers=24, shard_bytes=16 * 1024**2)
    start = _PeakRSS.rss()
    with _PeakRSS() as probe:
        import_hf_to_megatron(tmp_path / "hf", tmp_path / "mg", show_progress=False)
    grown = probe.peak - start
    assert grown < model_bytes / 3, f"import grew RSS by {grown / 2**20:.0f} MiB for {model_bytes / 2**20:.0f} MiB of weights"
    saved = sum(p.stat().st_size for p in (tmp_path / "mg" / "iter_0000000").glob("*.distcp"))
    assert saved >= model_bytes  # everything was written


def test_fallback_to_the_in_memory_path_says_why_and_writes_the_same(hf_models, tmp_path, monkeypatch, caplog):
    """A megatron-core whose writer API differs is not streamed: the full-model path runs, with a warning."""
    from checkpoints_conv import stream_save

    import_hf_to_megatron(hf_models["llama"], tmp_path / "stream", show_progress=False)
    monkeypatch.setattr(stream_save, "streaming_unsupported_reason", lambda: "writer API changed (test)")
    with caplog.at_level("WARNING", logger="checkpoints_conv.importer"):
        import_hf_to_megatron(hf_models["llama"], tmp_path / "fallback", show_progress=False)
    assert "writer API changed (test)" in caplog.text
    meta_s, data_s = _read_all(tmp_path / "stream" / "iter_0000000")
    meta_f, data_f = _read_all(tmp_path / "fallback" / "iter_0000000")
    assert meta_s == meta_f
    assert all(torch.equal(data_s[k], data_f[k]) for k in data_f)


def test_reader_keeps_at_most_the_requested_shards_mapped(tmp_path):
    """``max_open_files=1`` unmaps the previous shard when the next is read (bounded RSS from mmap)."""
    gen = torch.Generator().manual_seed(0)
    write_safetensors(((f"t{i}", torch.randn(256, generator=gen)) for i in range(4)), tmp_path, max_shard_bytes=1024)
    with SafetensorsReader(tmp_path, max_open_files=1) as reader:
        assert len({reader.file_of(n) for n in reader.names}) == 4
        for name in sorted(reader.names):
            assert reader.get(name).shape == (256,) and reader.shape(name) == (256,)
            assert len(reader._handles) == 1

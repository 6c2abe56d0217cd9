"""Streaming HF -> torch_dist save: megatron's checkpoint format, one converted tensor in memory at a time.

The ordinary save builds the whole model on the CPU, fills it and hands every tensor to megatron's writer,
so peak host memory is the model (plus the mapped HF shards). Here the model is built on the ``meta`` device:
it still yields megatron's exact ``sharded_state_dict()`` (keys, global shapes, offsets, the GLU fc1 factory
split into gate/up), so ``dist_checkpointing.save`` plans and writes the same ``.metadata`` as before. Only
the data comes from elsewhere: :class:`StreamingWriter` replaces megatron's ``FileSystemWriterAsync`` and,
while writing, asks a :class:`TensorSource` for each item; the source reads the row's HF tensors, converts
them with the engine, and cuts out the item's slice. Peak memory: one HF shard mapped plus one row converted.
"""

from __future__ import annotations

import dataclasses
import queue
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import torch

from checkpoints_conv import engine
from checkpoints_conv.hf_io import SafetensorsReader
from checkpoints_conv.mapping import ModelShape, Row, Table


class StreamingUnsupported(Exception):
    """This model or megatron-core version cannot be streamed; the caller falls back to a full CPU model."""


def _writer_lookup_module() -> Any | None:
    """The module whose ``FileSystemWriterAsync`` attribute this megatron-core's torch_dist save reads, or None.

    megatron-core 0.16 imports the class into ``strategies.torch`` at import time; 0.19 imports it from
    ``strategies.filesystem_async`` each time it saves (``_import_mcore_async``). Patching that attribute swaps in
    the streaming writer in either case.
    """
    from megatron.core.dist_checkpointing.strategies import filesystem_async
    from megatron.core.dist_checkpointing.strategies import torch as torch_strategy

    if getattr(torch_strategy, "FileSystemWriterAsync", None) is filesystem_async.FileSystemWriterAsync:
        return torch_strategy
    if callable(getattr(torch_strategy, "_import_mcore_async", None)):
        return filesystem_async
    return None


def streaming_unsupported_reason() -> str | None:
    """Why this megatron-core's torch_dist save cannot take the streaming writer, or None when it can.

    The writer is swapped where the strategy looks it up (:func:`_writer_lookup_module`) and reuses
    ``write_preloaded_data`` (the API of megatron-core 0.16 through 0.19); a release that changed either would
    write meta tensors, so refuse it.
    """
    import inspect

    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync

    if _writer_lookup_module() is None:
        return "megatron-core's torch_dist strategy builds its writer in a way this version does not know"
    want = ["transform_list", "local_proc_idx", "write_bucket", "results_queue", "count_queue", "use_fsync"]
    params = list(inspect.signature(getattr(FileSystemWriterAsync, "write_preloaded_data", lambda: None)).parameters)
    if params[:6] != want:
        return f"FileSystemWriterAsync.write_preloaded_data takes {params}, not {want}"
    return None


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where one saved ShardedTensor lives inside a model parameter (a meta view: its size/stride/offset)."""

    param: str
    view: torch.Tensor
    order: int


def check_hf_shapes(table: Table, shape: ModelShape, reader: SafetensorsReader) -> None:
    """Check every HF tensor's presence and shape from the file headers, before anything is written.

    Reuses :func:`engine.read_hf_row` (on meta tensors) so the errors name the tensor, file and both shapes.
    """
    def header_only(name: str) -> torch.Tensor:
        return torch.empty(reader.shape(name), device="meta")

    for row, layer in engine.plan(table, shape):
        engine.read_hf_row(row, shape, layer, header_only, reader.file_of)


class TensorSource:
    """Converted megatron tensors on demand, keyed like dist_checkpointing's write items (key, offsets).

    Built from a meta model's sharded state dict with factories applied: each ShardedTensor's ``data`` is
    the parameter or a view of it (fc1's gate/up chunks), so its size/stride/storage offset say which part
    of the converted parameter to write. The last converted parameter is cached: gate and up share one.
    """

    def __init__(self, model: torch.nn.Module, sharded: dict, table: Table, shape: ModelShape, reader: SafetensorsReader):
        from megatron.core.dist_checkpointing.dict_utils import nested_values
        from megatron.core.dist_checkpointing.mapping import ShardedTensor

        self.table, self.shape, self.reader = table, shape, reader
        self.rows = {row.mcore_name(layer): (row, layer) for row, layer in engine.plan(table, shape)}
        order = {name: i for i, name in enumerate(self.rows)}
        names = {id(p): n for n, p in model.named_parameters()}
        self.slots: dict[tuple[str, tuple[int, ...]], _Slot] = {}
        for st in nested_values(sharded):
            if not isinstance(st, ShardedTensor):
                continue
            base = st.data if st.data._base is None else st.data._base
            name = names.get(id(base))
            if name is None or getattr(st, "flattened_range", None) is not None:
                raise StreamingUnsupported(f"checkpoint tensor {st.key} is not a plain view of a model parameter")
            self.slots[(st.key, tuple(st.global_offset))] = _Slot(name, st.data, order.get(name, len(order)))
        self._cached: tuple[str, torch.Tensor] | None = None

    def sort_key(self, fqn: str, offsets: tuple[int, ...]) -> tuple:
        """HF file order (embedding, layers, head), so the HF shards are read front to back, one at a time."""
        slot = self.slots.get((fqn, tuple(offsets)))
        return (slot.order if slot else -1, fqn, tuple(offsets))

    def get(self, fqn: str, offsets: tuple[int, ...], sizes: tuple[int, ...]) -> torch.Tensor:
        """The contiguous tensor dist_checkpointing writes for item (``fqn``, ``offsets``), shape ``sizes``."""
        slot = self.slots.get((fqn, tuple(offsets)))
        if slot is None:
            raise ValueError(f"streaming import: checkpoint item {fqn} at {tuple(offsets)} has no model parameter")
        full = self._param(slot.param, slot.view.dtype)
        part = full.as_strided(slot.view.size(), slot.view.stride(), slot.view.storage_offset())
        return part.reshape(tuple(sizes)).clone()  # own storage: torch.save of a view would write the whole

    def _param(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """The full converted parameter, in the model's dtype; only the last one is kept (one row in memory)."""
        if self._cached is None or self._cached[0] != name:
            self._cached = None  # drop the previous row before converting the next one
            row, layer = self._row_of(name)
            hf = engine.read_hf_row(row, self.shape, layer, self.reader.get, self.reader.file_of)
            self._cached = (name, engine.hf_to_mcore(row, self.shape, hf).to(dtype).contiguous())
        return self._cached[1]

    def _row_of(self, name: str) -> tuple[Row, int | None]:
        """The table row of a parameter; a tied ``output_layer.weight`` is the embedding's row."""
        if name in self.rows:
            return self.rows[name]
        if name == "output_layer.weight" and self.shape.tied:
            return next((r, None) for r in engine.active_rows(self.table, self.shape) if r.mcore.startswith("embedding."))
        raise ValueError(f"the {self.table.name} table has no row for model parameter {name}")


def _writer_class(source: TensorSource, progress: Callable[[Iterator], Iterator]) -> type:
    """A ``FileSystemWriterAsync`` subclass bound to ``source`` (megatron constructs the writer itself)."""
    from megatron.core.dist_checkpointing.strategies.filesystem_async import FileSystemWriterAsync
    from torch.distributed.checkpoint.planner import WriteItemType

    class StreamingWriter(FileSystemWriterAsync):
        """Writes every item into one file, in this process, resolving each tensor just before writing it.

        Megatron's writer resolves all tensors up front (they are the model's) and writes from forked
        processes; here a tensor is converted when the write loop reaches it and dropped after.
        """

        def prepare_write_data(self, plan, planner) -> None:
            items = sorted(
                (i for i in plan.items if i.type != WriteItemType.BYTE_IO),
                key=lambda i: source.sort_key(i.index.fqn, tuple(i.tensor_data.chunk.offsets)),
            )
            bytes_data = [(i, planner.resolve_data(i)) for i in plan.items if i.type == WriteItemType.BYTE_IO]
            tensors = _LazyTensors(items, source, progress)
            name = f"{plan.storage_data.prefix}0.distcp"
            self.write_buckets = [(str(Path(self.checkpoint_dir) / name), name, (bytes_data, tensors))]
            self.results_queue = None
            self._results: list = []

        def get_save_function_and_args(self):
            return self._write_in_process, None, []

        def _write_in_process(self) -> None:
            transform_list = [self.transforms] if hasattr(self, "transforms") else []
            results, done = queue.Queue(), queue.Queue()
            done.put(0)
            self.write_preloaded_data(transform_list, 0, self.write_buckets[0], results, done, True)
            _, out = results.get()
            if isinstance(out, Exception):
                raise out  # the conversion's own error (naming the tensor), not a wrapped worker failure
            self._results = out

        def retrieve_write_results(self):
            return self._results

    return StreamingWriter


class _LazyTensors:
    """The (item, tensor) list megatron's write loop iterates; each tensor is converted when reached."""

    def __init__(self, items: list, source: TensorSource, progress: Callable[[Iterator], Iterator]):
        self.items, self.source, self.progress = items, source, progress

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        for item in self.progress(self.items):
            chunk = item.tensor_data.chunk
            yield item, self.source.get(item.index.fqn, tuple(chunk.offsets), tuple(chunk.sizes))


def save_streaming(
    model: torch.nn.Module,
    table: Table,
    shape: ModelShape,
    reader: SafetensorsReader,
    iter_dir: Path,
    progress: Callable[[Iterator], Iterator] = lambda it: it,
) -> None:
    """Write ``model``'s (a meta-device TP=1/PP=1 model) torch_dist checkpoint from the HF ``reader``.

    Same keys and metadata as ``save_model_weights`` on a filled CPU model; the caller has set up a world of
    one. The factories are applied here (dist_checkpointing would apply them anyway) so that the source sees
    the ShardedTensors actually saved.

    Raises:
        StreamingUnsupported: before anything is written, when this megatron-core or model cannot be streamed.
    """
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.mapping import apply_factories
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from sft_bridge_port.utils.dist_ckpt import model_sharded_state_dict

    reason = streaming_unsupported_reason()
    if reason:
        raise StreamingUnsupported(reason)
    sharded = model_sharded_state_dict([model])
    apply_factories(sharded)
    source = TensorSource(model, sharded, table, shape, reader)
    Path(iter_dir).mkdir(parents=True, exist_ok=True)
    strategy = get_default_save_sharded_strategy()
    # The torch_dist strategy constructs FileSystemWriterAsync by name; swap in the streaming writer.
    with mock.patch.object(_writer_lookup_module(), "FileSystemWriterAsync", _writer_class(source, progress)):
        dist_checkpointing.save(sharded, str(iter_dir), sharded_strategy=strategy)

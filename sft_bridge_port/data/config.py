"""Bridge's dataset configs (same names, fields and defaults as Megatron-Bridge v0.5) plus our chat options.

All are plain keyword-only dataclasses; callables (``process_example_fn``) must be importable module-level functions
so the config serialises by import path. Field checks that need no I/O run in ``__post_init__``; everything else is
read by ``build_sft_data_iterators``.

Example (a local Bridge-layout folder ``<root>/training.jsonl, validation.jsonl``, packed to 2048)::

    FinetuningDatasetConfig(dataset_root="/data/chat", seq_length=2048,
                            packed_sequence_specs=PackedSequenceSpecs(packed_sequence_size=2048))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

from sft_bridge_port.data.hf_processors import process_squad_example

_CHOICES = {
    "on_bad_sample": ("error", "skip"),
    "on_long_sample": ("truncate", "skip", "error"),
    "reasoning": ("keep", "strip"),
}
PACKING_ALGORITHMS = ("first_fit_decreasing", "first_fit_shuffle")


@dataclass(kw_only=True)
class DataloaderConfig:
    """Bridge's dataloader knobs. ``dataloader_type`` is "single" | "cyclic" | "batch" | "external" (informational:
    our iterators always follow Bridge's "batch" semantics of a seeded global order split by data-parallel rank)."""

    dataloader_type: str | None = None
    num_workers: int = 2
    data_sharding: bool = True
    pin_memory: bool = True
    drop_last: bool = True
    persistent_workers: bool = True
    trust_remote_code: bool | None = None


@dataclass(kw_only=True)
class PackedSequenceSpecs:
    """Bridge's packing spec; ``packed_sequence_size <= 0`` disables packing.

    ``pad_seq_to_mult`` pads every packed sub-sequence to a multiple (2*CP for context parallel);
    ``pad_cu_seqlens`` keeps ``cu_seqlens`` a constant size across batches (for CUDA graphs; needs
    ``pad_to_max_length``). The ``packed_*_path`` fields override where the parquet cache is written.
    """

    packed_sequence_size: int = -1
    tokenizer_model_name: str | None = None
    num_tokenizer_workers: int = -1
    packed_train_data_path: str | None = None
    packed_val_data_path: str | None = None
    packed_metadata_path: str | None = None
    pad_cu_seqlens: bool = False
    pad_seq_to_mult: int = 1
    packing_algorithm: str = "first_fit_decreasing"

    def __post_init__(self) -> None:
        if self.pad_seq_to_mult < 1:
            raise ValueError(f"packed_sequence_specs.pad_seq_to_mult must be >= 1, got {self.pad_seq_to_mult}")
        if self.packing_algorithm not in PACKING_ALGORITHMS:
            raise ValueError(f"packed_sequence_specs.packing_algorithm={self.packing_algorithm!r}; "
                             f"choose one of {PACKING_ALGORITHMS}")

    @property
    def enabled(self) -> bool:
        return self.packed_sequence_size > 0


@dataclass(kw_only=True)
class FinetuningDatasetConfig(DataloaderConfig):
    """Local SFT data: ``dataset_root`` is a Bridge folder (``training.jsonl``, ``validation.jsonl``, ``test.jsonl``;
    .json/.parquet/.arrow also accepted), a single file (training only), or an in-memory iterable of rows (not
    serialisable; for notebooks and tests).

    Our options (all optional): ``format`` (None = detect from columns; see ``formats``), ``chat_template`` (a Jinja
    string or a file path overriding the tokenizer's), ``use_chat_template`` (None = yes for chat formats when a
    template exists, no for prompt/completion rows, which use ``prompt_template`` as in Bridge),
    ``answer_only_loss``, ``prompt_template``, ``label_key``, ``add_bos`` (prompt path; None = the tokenizer's
    default), ``add_eos`` (prompt path: EOS appended and trained), ``on_bad_sample`` ("error" | "skip": skipped rows
    are counted by reason), ``on_long_sample`` ("truncate" | "skip" | "error"), ``reasoning`` ("keep" | "strip"
    ``<think>`` reasoning), ``pad_to_max_length``, ``pad_seq_length_to_mult``, ``eot_tokens`` (extra end-of-turn
    token strings), ``verify_prefix_tokens`` (token-exact check of every rendered prefix; keep on).
    Bridge's ``dataset_kwargs`` keys with the same names override these fields.
    """

    dataloader_type: str | None = "batch"
    dataset_root: Any = None
    seq_length: int
    seed: int = 1234
    memmap_workers: int = 1
    max_train_samples: int | None = None
    packed_sequence_specs: PackedSequenceSpecs | None = None
    dataset_kwargs: dict[str, Any] | None = None
    do_validation: bool = True
    do_test: bool = True
    format: str | None = None
    chat_template: str | None = None
    use_chat_template: bool | None = None
    answer_only_loss: bool = True
    prompt_template: str = "{input} {output}"
    label_key: str | None = None
    add_bos: bool | None = None
    add_eos: bool = True
    on_bad_sample: str = "error"
    on_long_sample: str = "truncate"
    reasoning: str = "keep"
    pad_to_max_length: bool = False
    pad_seq_length_to_mult: int = 1
    eot_tokens: list[str] | None = None
    verify_prefix_tokens: bool = True

    def __post_init__(self) -> None:
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"dataset.{name}={getattr(self, name)!r}; choose one of {choices}")
        if not isinstance(self.seq_length, int) or self.seq_length < 2:
            raise ValueError(f"dataset.seq_length must be an int >= 2, got {self.seq_length!r}")
        if "{output}" not in self.prompt_template:
            raise ValueError(f"dataset.prompt_template {self.prompt_template!r} must contain '{{output}}'")


def get_dataset_root(dataset_name: str) -> str:
    """Where HF datasets are written as Bridge-layout jsonl: ``$SFT_BRIDGE_PORT_DATASETS_CACHE/<name>``
    (default ``~/.cache/sft_bridge_port/datasets``)."""
    base = os.environ.get("SFT_BRIDGE_PORT_DATASETS_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "sft_bridge_port", "datasets"))
    return os.path.join(base, dataset_name.replace("/", "--"))


@dataclass(kw_only=True)
class HFDatasetConfig(FinetuningDatasetConfig):
    """A dataset from the Hugging Face hub (or any ``datasets.load_dataset`` path), written once as Bridge-layout
    jsonl under ``dataset_root`` (default ``get_dataset_root(dataset_name)``), then read like a local folder.

    ``process_example_fn(example, tokenizer) -> {"input", "output", ...} | {"messages", "tools"}`` maps each row
    (None keeps rows as they are). ``split_val_from_train`` carves ``val_proportion`` of the train split (seeded)
    for validation and uses the hub's "validation" split as test, as Bridge does. ``rewrite`` re-downloads even
    when the jsonl files exist. ``revision`` pins a hub revision (also accepted inside ``hf_kwargs``).
    """

    dataset_name: str
    process_example_fn: Callable[..., dict] | None = None
    dataset_subset: str | None = None
    dataset_dict: Any = None
    split: str | None = None
    download_mode: str | None = None
    val_proportion: float | None = 0.05
    split_val_from_train: bool = True
    delete_raw: bool = False
    rewrite: bool = True
    hf_kwargs: dict[str, Any] | None = None
    hf_filter_lambda: Callable[..., bool] | None = None
    hf_filter_lambda_kwargs: dict[str, Any] | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.val_proportion is not None and not 0.0 <= self.val_proportion < 1.0:
            raise ValueError(f"dataset.val_proportion must be in [0, 1), got {self.val_proportion}")


def default_squad_config(seq_length: int, packed_sequence: bool = True, pad_seq_to_mult: int = 1) -> HFDatasetConfig:
    """Bridge's default finetuning dataset: SQuAD from the hub as ``Context: ... Question: ... Answer:`` prompts.

    Example: ``default_squad_config(2048)`` packs to 2048 with ``pad_to_max_length`` (Bridge's recipe default).
    """
    specs = None
    if packed_sequence:
        specs = PackedSequenceSpecs(packed_sequence_size=seq_length, pad_seq_to_mult=pad_seq_to_mult)
    return HFDatasetConfig(
        dataset_name="rajpurkar/squad",
        process_example_fn=process_squad_example,
        seq_length=seq_length,
        seed=5678,
        dataloader_type="batch",
        num_workers=1,
        do_validation=True,
        do_test=False,
        val_proportion=0.1,
        dataset_kwargs={"pad_to_max_length": True} if packed_sequence else {},
        packed_sequence_specs=specs,
        rewrite=False,
    )

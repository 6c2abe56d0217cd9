"""What every PEFT method does to a model: freeze it, attach adapters to the matched layers, report them.

A PEFT object is a plain config dataclass (it serialises into ``run_config.yaml``) that is also callable::

    model_chunks = provider.provide_distributed_model(wrap_with_ddp=False)   # base weights loaded
    model_chunks = LoRA(dim=8)(model_chunks, training=True)                  # in place; returns the same list

After the call every base parameter has ``requires_grad=False`` and only the adapters' parameters (names
containing ``.adapter.``) train, reach the optimizer and are written to adapter-only checkpoints.
Subclasses implement :meth:`PEFT.make_adapter`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
from typing import Iterator, Sequence

import torch

from sft_bridge_port.peft import adapters
from sft_bridge_port.peft.module_matcher import ModuleMatcher
from sft_bridge_port.utils.dist_ckpt import unwrap

logger = logging.getLogger(__name__)

ADAPTER_KEY = f".{adapters.ADAPTER_ATTR}."


def adapter_key_filter(name: str) -> bool:
    """True for a parameter / state-dict key that belongs to an adapter.

    Example: ``decoder.layers.0.self_attention.linear_qkv.adapter.linear_in.weight`` -> True,
    ``decoder.layers.0.self_attention.linear_qkv.weight`` -> False.
    """
    return ADAPTER_KEY in f".{name}"


def _as_chunks(model: torch.nn.Module | Sequence[torch.nn.Module]) -> list[torch.nn.Module]:
    return [model] if isinstance(model, torch.nn.Module) else list(model)


def _enable_input_grad_for_recompute(chunk: torch.nn.Module) -> None:
    """With full activation recompute and a frozen embedding, the decoder input needs ``requires_grad``.

    megatron-core's recompute is an autograd Function over the layer inputs; if none requires grad (PP=1,
    frozen embedding) its backward never runs and the adapters inside get no gradient. A pre-hook on the
    decoder block marks the input as requiring grad (no parameter is unfrozen).
    """
    from megatron.core.transformer.transformer_block import TransformerBlock

    if getattr(getattr(chunk, "config", None), "recompute_granularity", None) is None:
        return
    for module in chunk.modules():
        if isinstance(module, TransformerBlock) and not getattr(module, "_peft_input_grad", False):
            module.register_forward_pre_hook(_require_input_grad, with_kwargs=True)
            module._peft_input_grad = True


def _require_input_grad(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    if args and torch.is_tensor(args[0]) and args[0].is_floating_point() and not args[0].requires_grad:
        return (args[0].detach().requires_grad_(True), *args[1:]), kwargs
    hidden = kwargs.get("hidden_states")
    if torch.is_tensor(hidden) and hidden.is_floating_point() and not hidden.requires_grad:
        kwargs["hidden_states"] = hidden.detach().requires_grad_(True)
        return args, kwargs
    return None


@dataclasses.dataclass(kw_only=True)
class PEFT(ModuleMatcher, abc.ABC):
    """Base of LoRA, DoRA and CanonicalLoRA (Bridge's ``PEFT`` + ``ModuleMatcher``)."""

    @abc.abstractmethod
    def make_adapter(self, base: torch.nn.Module, name: str, full_name: str, pattern: str) -> torch.nn.Module:
        """Build the adapter module for ``base`` (matched by ``pattern``)."""

    def __call__(self, model: torch.nn.Module | Sequence[torch.nn.Module], training: bool = True):
        """Freeze ``model`` (a module or a list of chunks), attach adapters in place, return ``model``.

        Raises:
            ValueError: a ``target_modules`` entry matched nothing, or the model already has adapters.
        """
        chunks = [unwrap(c) for c in _as_chunks(model)]
        matched, count = set(), 0
        for chunk in chunks:
            if any(True for _ in adapters.adapted_modules(chunk)):
                raise ValueError("the model already carries adapters; apply a PEFT object only once")
            for param in chunk.parameters():
                param.requires_grad = False
            for full_name, module, hits in self._targets(chunk):
                leaf = full_name.rsplit(".", 1)[-1]
                adapters.attach(module, self.make_adapter(module, leaf, full_name, hits[0]))
                matched.update(hits)
                count += 1
            if training:
                _enable_input_grad_for_recompute(chunk)
            if not training:
                for param in chunk.parameters():
                    param.requires_grad = False
            chunk.train(training)
        matched = _union_over_pipeline(matched)
        if self.target_modules:
            self.check_all_matched(matched)
        elif count == 0:
            raise ValueError("no parallel linear layer is left to adapt after peft.exclude_modules")
        logger.info("%s: %d adapters, %d trainable parameters", type(self).__name__, count,
                    sum(p.numel() for c in chunks for p in c.parameters() if p.requires_grad))
        return model

    def _targets(self, chunk: torch.nn.Module) -> list[tuple[str, torch.nn.Module, list[str]]]:
        out = []
        for full_name, module in global_named_modules(chunk):
            if not full_name or f".{adapters.ADAPTER_ATTR}." in f".{full_name}.":
                continue
            hits = self.matched_targets(module, full_name.rsplit(".", 1)[-1], full_name)
            if hits:
                out.append((full_name, module, hits))
        return out

    def adapter_key_filter(self, key: str | tuple) -> bool:
        """Bridge's filter: True for adapter keys (``(name, param)`` tuples test ``requires_grad``)."""
        if isinstance(key, tuple):
            return bool(key[1].requires_grad)
        return adapter_key_filter(key)

    def trainable_parameter_names(self, model: torch.nn.Module | Sequence[torch.nn.Module]) -> list[str]:
        """Names of the parameters that train (the adapters), for logging and tests."""
        return [n for c in _as_chunks(model) for n, p in unwrap(c).named_parameters() if p.requires_grad]

    def set_adapters_enabled(self, model: torch.nn.Module | Sequence[torch.nn.Module], enabled: bool) -> None:
        """Switch every adapter of ``model`` on or off (off = the base model's output)."""
        for _, module in iter_adapted(model):
            module.adapter.enabled = enabled

    def enable_adapter_layers(self, model) -> None:
        """Bridge name for ``set_adapters_enabled(model, True)``."""
        self.set_adapters_enabled(model, True)

    def disable_adapter_layers(self, model) -> None:
        """Bridge name for ``set_adapters_enabled(model, False)``."""
        self.set_adapters_enabled(model, False)

    @contextlib.contextmanager
    def disable_adapter(self, model) -> Iterator[None]:
        """Run a block with the adapters switched off (e.g. reference logits of the base model)."""
        self.set_adapters_enabled(model, False)
        try:
            yield
        finally:
            self.set_adapters_enabled(model, True)


def iter_adapted(model: torch.nn.Module | Sequence[torch.nn.Module]) -> Iterator[tuple[str, torch.nn.Module]]:
    """``(name, base_module)`` of every adapted layer over all chunks (names are chunk-local)."""
    for chunk in _as_chunks(model):
        yield from adapters.adapted_modules(unwrap(chunk))


def global_named_modules(chunk: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Module]]:
    """``named_modules()`` with pipeline-local layer indices replaced by global ones.

    megatron-core numbers ``decoder.layers.{i}`` from 0 on every pipeline stage; its ``TransformerLayer``
    knows its global ``layer_number`` (1-based). Example: stage 1 of 2 of a 4-layer model yields
    ``decoder.layers.2.self_attention.linear_qkv`` for its local ``decoder.layers.0.self_attention.linear_qkv``,
    so ``*.layers.2.*`` targets mean the same layer at any PP size (and match checkpoint keys).
    """
    renames = {}
    for name, module in chunk.named_modules():
        number = getattr(module, "layer_number", None)
        head, _, index = name.rpartition(".")
        if isinstance(number, int) and index.isdigit() and head.endswith("layers"):
            renames[name] = f"{head}.{number - 1}"
    for name, module in chunk.named_modules():
        for local, global_name in renames.items():
            if name == local or name.startswith(local + "."):
                name = global_name + name[len(local):]
                break
        yield name, module


def _union_over_pipeline(matched: set[str]) -> set[str]:
    """Targets matched on any pipeline stage (a stage may hold none of a layer-specific wildcard's layers)."""
    from megatron.core import parallel_state

    if not (torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized()):
        return matched
    if parallel_state.get_pipeline_model_parallel_world_size() == 1:
        return matched
    gathered: list = [None] * parallel_state.get_pipeline_model_parallel_world_size()
    torch.distributed.all_gather_object(gathered, sorted(matched), group=parallel_state.get_pipeline_model_parallel_group())
    return set().union(*map(set, gathered))


def iter_adapted_global(model: torch.nn.Module | Sequence[torch.nn.Module]) -> Iterator[tuple[str, torch.nn.Module]]:
    """Like :func:`iter_adapted`, with global layer indices in the names (see :func:`global_named_modules`)."""
    for chunk in _as_chunks(model):
        for name, module in global_named_modules(unwrap(chunk)):
            if adapters.is_adapted(module):
                yield name, module

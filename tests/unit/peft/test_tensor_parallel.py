"""TP=2 (two CPU processes, gloo) against TP=1: same logits and same adapter gradients, with and without
sequence parallelism; adapter checkpoints reshard between the two (incl. fc1's [gate; up] split).

The TP=1 process writes the base weights and the adapters; each TP=2 rank loads them (dist_checkpointing
reshards), runs forward/backward, and writes the adapter *gradients* as an adapter checkpoint, which TP=1
loads back to compare. This exercises the real megatron mappings (copy/reduce/gather/reduce-scatter).
"""

import os

import pytest
import torch
import torch.multiprocessing as mp

from sft_bridge_port.peft import CanonicalLoRA, DoRA, LoRA, load_adapter_weights, save_adapter_weights
from sft_bridge_port.utils.dist_context import parallel_context
from sft_bridge_port.utils.dist_ckpt import load_model_weights, save_model_weights
from tests.unit.torchrun import free_port
from tests.unit.peft.helpers import batch, megatron_model, randomize_adapters

SCHEMES = {
    "lora": lambda: LoRA(dim=4, alpha=8),
    "dora": lambda: DoRA(dim=4),
    "canonical": lambda: CanonicalLoRA(dim=4, alpha=8),
}
# (scheme, sequence_parallel): plain TP mappings for LoRA; gather / reduce-scatter, DoRA's row-norm all-reduce
# and the SP gradient flag for DoRA; the q/k/v and gate/up re-interleave per rank for CanonicalLoRA.
CASES = (("lora", 0), ("dora", 1), ("canonical", 1))


def _adapter_grads_as_params(model) -> None:
    from megatron.core import parallel_state

    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".adapter." in name:
                if getattr(p, "sequence_parallel", False):  # what megatron's finalize_model_grads does under SP
                    torch.distributed.all_reduce(p.grad, group=parallel_state.get_tensor_model_parallel_group())
                p.copy_(p.grad)


def _forward_backward(model, tokens, pos):
    logits = model(tokens, pos, None)
    model(tokens, pos, None, labels=tokens).sum().backward()
    return logits.detach()


def _tp2_worker(rank: int, port: int, root: str) -> None:
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tokens, pos = batch()
    with parallel_context(tensor_model_parallel_size=2, seed=1):
        for scheme, sp in CASES:
            model = megatron_model(tp=2, sequence_parallel=bool(sp))
            load_model_weights([model], f"{root}/base/iter_0000000")
            SCHEMES[scheme]()([model])
            load_adapter_weights([model], f"{root}/{scheme}/adapter/iter_0000001")
            logits = gather_from_tensor_model_parallel_region(_forward_backward(model, tokens, pos))
            _adapter_grads_as_params(model)
            save_adapter_weights([model], f"{root}/{scheme}/grads/iter_0000001")
            if rank == 0:
                torch.save(logits, f"{root}/{scheme}/logits.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU/gloo test")
def test_tp2_matches_tp1_for_logits_and_adapter_grads(tmp_path):
    tokens, pos = batch()
    want = {}
    with parallel_context(seed=1):
        save_model_weights([megatron_model()], tmp_path / "base" / "iter_0000000")
        for scheme, _ in CASES:
            model = megatron_model()
            load_model_weights([model], tmp_path / "base" / "iter_0000000")
            SCHEMES[scheme]()([model])
            randomize_adapters(model)
            save_adapter_weights([model], tmp_path / scheme / "adapter" / "iter_0000001")
            logits = _forward_backward(model, tokens, pos)
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if ".adapter." in n}
            want[scheme] = (logits, grads)
    mp.spawn(_tp2_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    with parallel_context(seed=1):
        for scheme, sp in CASES:
            logits, grads = want[scheme]
            got = torch.load(tmp_path / scheme / "logits.pt")
            torch.testing.assert_close(got, logits, rtol=1e-4, atol=1e-5, msg=lambda m: f"{scheme} sp={sp} logits: {m}")
            model = megatron_model()
            SCHEMES[scheme]()([model])
            load_adapter_weights([model], tmp_path / scheme / "grads" / "iter_0000001")
            assert len(grads) >= 16
            for name, p in model.named_parameters():
                if ".adapter." in name:
                    scale = grads[name].abs().max().item()  # fp32 sums in another order: 1e-4 of the largest entry
                    torch.testing.assert_close(p, grads[name], rtol=1e-3, atol=1e-4 * scale,
                                               msg=lambda m: f"{scheme} sp={sp} {name}: {m}")

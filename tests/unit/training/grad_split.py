"""Gradient of one global batch computed through megatron-core's schedule for a given micro-batch split.

Used in-process by test_grad_invariance.py and, under torchrun with 2 gloo ranks, as a script.
"""

from __future__ import annotations

import sys

import torch

GLOBAL_BATCH = [0, 1, 2, 3]  # sample indices; their supervised-token counts differ (asserted in the test)


def split_grads(microbatches: list[list[int]], per_token: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(tensor([loss_sum, tokens]) over all ranks, {param: grad})`` after one forward/backward of the split.

    Needs an initialised parallel state. ``per_token=False`` is megatron's default normalisation (each
    micro-batch divided by its own token count and by the number of micro-batches): the naive mean of means.
    """
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from sft_bridge_port.training import gpt_step
    from sft_bridge_port.training.eval import reduce_loss_sums
    from sft_bridge_port.training.step_signature import adapt_forward_step
    from tests.unit.training.helpers import SEQ, collate, tiny_local_gpt

    model = tiny_local_gpt(seed=7, calculate_per_token_loss=per_token)
    model.config.finalize_model_grads_func = finalize_model_grads
    model.config.no_sync_func = model.no_sync
    model.zero_grad_buffer()
    losses = get_forward_backward_func()(
        forward_step_func=adapt_forward_step(gpt_step.forward_step, None), data_iterator=iter([collate(m) for m in microbatches]),
        model=[model], num_microbatches=len(microbatches), seq_length=SEQ, micro_batch_size=len(microbatches[0]),
        forward_only=False,
    )
    grads = {name: p.main_grad.detach().clone() for name, p in model.named_parameters()}
    return reduce_loss_sums(losses), grads


if __name__ == "__main__":
    from sft_bridge_port.utils.dist_context import parallel_context

    out = sys.argv[1]
    with parallel_context():
        rank = torch.distributed.get_rank()
        # global order as the data iterators split it: micro-batch j of rank r holds sample 2*j + r
        mine = [[GLOBAL_BATCH[2 * j + rank]] for j in range(2)]
        total, grads = split_grads(mine)
        if rank == 0:
            torch.save({"total": total, "grads": grads}, out)

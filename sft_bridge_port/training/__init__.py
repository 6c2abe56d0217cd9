"""Training engine: Bridge-compatible finetune()/pretrain() on megatron-core (loss, steps, loop, checkpoints)."""

from sft_bridge_port.training.finetune import finetune, pretrain
from sft_bridge_port.training.losses import create_masked_next_token_loss_function, masked_next_token_loss
from sft_bridge_port.training.state import GlobalState, TrainState

__all__ = [
    "GlobalState", "TrainState", "create_masked_next_token_loss_function", "finetune", "masked_next_token_loss",
    "pretrain",
]

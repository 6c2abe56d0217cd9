"""Regenerate tiny_sft_fp32_losses.json: the per-step losses of run A in tests/unit/training/test_finetune.py.

Run only when a deliberate change alters the numerics (and say why in the commit):
    PYTHONPATH=. python tests/golden/make_tiny_sft_golden.py
"""

import json
import tempfile
from pathlib import Path

if __name__ == "__main__":  # dist_checkpointing spawns helper processes that re-import this file
    import megatron.core
    import torch

    from sft_bridge_port.training import finetune
    from sft_bridge_port.training.gpt_step import forward_step
    from tests.unit.training.helpers import make_config, read_metrics
    from tests.unit.training.test_finetune import LR, _pretrained

    torch.set_num_threads(2)
    root = Path(tempfile.mkdtemp())
    pretrained = str(_pretrained(root / "pretrained"))
    cfg = make_config(root / "A", train_iters=30, save_interval=10, eval_interval=10, pretrained=pretrained, lr=LR)
    finetune(cfg, forward_step)
    losses = [r["lm loss"] for r in read_metrics(root / "A" / "metrics.jsonl") if r["kind"] == "train"]
    out = Path(__file__).with_name("tiny_sft_fp32_losses.json")
    meta = {"torch": torch.__version__, "megatron_core": megatron.core.__version__, "device": "cpu", "dtype": "fp32"}
    out.write_text(json.dumps({"what": "tiny SFT run A of test_finetune.py, lm loss per step 1..30", **meta,
                               "lm_loss": losses}, indent=1) + "\n")
    print(out, losses[0], losses[-1])

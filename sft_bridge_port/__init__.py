"""sft-bridge-port: supervised finetuning (SFT, LoRA/DoRA) on megatron-core with Megatron-Bridge's recipe surface.

Layout (imports point down only): ``cli``/``stages`` -> ``training/`` and ``recipes/`` -> ``config/`` and
``checkpoints_conv/`` -> ``models/``, ``data/``, ``peft/`` -> ``utils/``. Start with ``recipes.get_recipe`` and
:func:`sft_bridge_port.stages.run`.
"""

__version__ = "0.1.0"

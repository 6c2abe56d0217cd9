"""``GPTModelProvider``: a megatron-core ``TransformerConfig`` that can build the model (Bridge's interface).

A provider is plain data until ``provide()``: recipes and users construct it, then change fields
(``provider.seq_length = 4096``) before anything is validated, exactly as with Megatron-Bridge. megatron-core's
eager ``TransformerConfig.__post_init__`` is therefore deferred to :meth:`GPTModelProvider.finalize`, which
``provide()`` calls. Every field stays serialisable (numbers, strings, dtypes, and ``transformer_layer_spec`` as
a function reference resolved inside ``provide()``).

Example::

    provider = get_provider("meta-llama/Llama-3.2-1B")        # offline, from the built-in table
    provider.tensor_model_parallel_size = 1
    with parallel_context():
        model = provider.provide_distributed_model(wrap_with_ddp=False)[0]
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from megatron.core import parallel_state, tensor_parallel
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.enums import ModelType
from megatron.core.models.gpt import GPTModel
from megatron.core.transformer.module import Float16Module
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from sft_bridge_port.models.attention import SDPAttention
from sft_bridge_port.models.flash_cute import check_kernel_choice
from sft_bridge_port.models.fused_ops import install_grad_accum_fusion
from sft_bridge_port.models.layer_spec import fast_block_spec
from sft_bridge_port.models.linear_ce import ChunkedLossGPTModel
from sft_bridge_port.models.quack_ce import check_ce_kernel
from sft_bridge_port.models.quack_mlp import check_mlp_kernel
from sft_bridge_port.models.quack_norm import check_norm_kernel
from sft_bridge_port.models.residual_norm import link_residual_norms
from sft_bridge_port.models.rope import RotaryTable, base_inv_freq, llama3_scaled_inv_freq

ModelHook = Callable[[list[torch.nn.Module]], list[torch.nn.Module]]


@dataclass
class GPTModelProvider(TransformerConfig):
    """Megatron-Bridge's ``GPTModelProvider`` fields and defaults, plus the few our HF round trip needs."""

    # --- Bridge fields (megatron/bridge/models/gpt_provider.py) ---
    fp16_lm_cross_entropy: bool = False
    parallel_output: bool = True
    share_embeddings_and_output_weights: bool = True
    make_vocab_size_divisible_by: int = 128
    position_embedding_type: str = "learned_absolute"
    rotary_base: float = 10000
    rotary_percent: float = 1.0
    rope_scaling: bool = False
    rope_scaling_factor: float = 1.0
    seq_len_interpolation_factor: float | None = None
    seq_length: int = 1024
    attention_softmax_in_fp32: bool = False
    deallocate_pipeline_outputs: bool = True
    scatter_embedding_sequence_parallel: bool = True
    tp_comm_overlap_cfg: Any = None
    use_transformer_engine_full_layer_spec: bool = False
    use_transformer_engine_op_fuser: bool = False
    transformer_layer_spec: Callable[..., Any] | ModuleSpec = fast_block_spec
    hf_model_id: str | None = None
    vocab_size: int | None = None
    should_pad_vocab: bool = False
    init_model_with_meta_device: bool = False
    # --- ours: the rest of HF's llama3 rope_scaling dict, and the HF architecture for export ---
    rope_scaling_low_freq_factor: float = 1.0
    rope_scaling_high_freq_factor: float = 4.0
    rope_scaling_original_max_position_embeddings: int = 8192
    hf_architecture: str | None = None
    # --- ours: fusion switches (see models/linear_ce.py and models/fused_ops.py) ---
    linear_ce_chunk_tokens: int = 0
    """> 0: compute LM head + loss in chunks of this many tokens (no [tokens, vocab] logits); 0: megatron's path."""
    linear_ce_keep_logits: bool | None = None
    """With ``linear_ce_chunk_tokens``: keep the chunks' bf16 logits for the backward instead of recomputing them
    (one LM-head GEMM less per chunk, ``2·tokens·vocab`` bytes more per micro-batch: a third of what megatron-core's
    own loss keeps; see models/linear_ce.py). None (default): keep them when a micro-batch's logits take at most
    4 GiB (``linear_ce.KEEP_LOGITS_MAX_ELEMENTS``), else recompute; True / False: always / never."""
    attention_kernel: str = "auto"
    """Packed (THD) attention on CUDA: ``"auto"`` uses flash-attention 4 (``pip install flash-attn-4``) where it
    is installed and runs (Hopper/Blackwell, bf16/fp16) on micro-batches of at least 8192 tokens (below that its
    host time costs more than it saves), else PyTorch's flash-attention 2; ``"fa4"`` requires FA4 (a clear error
    otherwise); ``"fa2"`` always uses PyTorch's kernels. See models/flash_cute.py."""
    norm_kernel: str = "auto"
    """RMSNorm: ``"auto"`` runs quack's kernels (``pip install quack-kernels``; flash-attn-4 brings it) where
    installed on a Hopper/Blackwell GPU with bf16/fp16 activations of at least 8192 rows per call, else
    ``torch.nn.RMSNorm``'s; ``"quack"`` requires them; ``"torch"`` never uses them. The module is a
    ``torch.nn.RMSNorm`` either way. See models/quack_norm.py."""
    mlp_kernel: str = "auto"
    """SwiGLU MLP: ``"auto"`` computes SwiGLU inside quack's fc1 and fc2-backward GEMMs (``pip install
    quack-kernels``; flash-attn-4 brings it) where installed on a Hopper/Blackwell GPU with bf16/fp16 weights,
    tensor-parallel size 1 and no adapter on fc1/fc2, from 8192 tokens per call, else megatron-core's MLP;
    ``"quack"`` requires it; ``"torch"`` never uses it. Same parameters either way. See models/quack_mlp.py."""
    ce_kernel: str = "auto"
    """Chunked LM head + cross-entropy (with ``linear_ce_chunk_tokens``): ``"auto"`` runs quack's one-pass
    cross-entropy and GEMMs (``pip install quack-kernels``; flash-attn-4 brings it) where installed on a
    Hopper/Blackwell GPU with bf16/fp16 activations, every label in ``[0, vocab)``, from 8192 tokens per
    micro-batch, else the torch path; ``"quack"`` requires it; ``"torch"`` never uses it. See models/quack_ce.py."""
    cuda_fast_kernels: bool = True
    """On CUDA, when building a DDP-wrapped model for training, switch on the kernels that bench/ measured to pay
    (bench/README.md, round 2: 1B packed SFT 43.0k -> 48.9k tokens/s, peak 30.7 -> 27.5 GiB on an H100):
    ``gradient_accumulation_fusion`` (weight grads GEMM-accumulated into fp32 main_grad), ``bias_activation_fusion``
    (megatron's fused SwiGLU) and ``linear_ce_chunk_tokens`` from ``linear_ce.default_chunk_tokens`` (4096 for a
    128k vocabulary; no [tokens, vocab] fp32 logits; with ``linear_ce_keep_logits``' default, round 4: 553.8 ->
    523.6 ms per 1B step, +1.0 GiB); and, for any model on CUDA, RoPE as one ``torch.compile``-d
    kernel (``rope.apply_rotary_pair_fused``, round 3: +4.5 %). Fields a user already turned on are kept; set this to
    False to keep megatron-core's unfused paths and eager RoPE. No effect on CPU."""

    def __post_init__(self) -> None:
        """Deferred: megatron-core validates eagerly, Bridge validates in ``finalize()`` (see module doc)."""

    def finalize(self) -> None:
        """Validate and derive fields (kv_channels, ffn size, init methods...). Idempotent; ``provide`` calls it."""
        if self.vocab_size is None or self.vocab_size <= 0:
            raise ValueError(f"GPTModelProvider.vocab_size must be a positive int, got {self.vocab_size!r}")
        if not self.should_pad_vocab and self.vocab_size % self.tensor_model_parallel_size:
            raise ValueError(
                f"vocab_size {self.vocab_size} is not divisible by tensor_model_parallel_size "
                f"{self.tensor_model_parallel_size}; set should_pad_vocab=True"
            )
        check_kernel_choice(self.attention_kernel)
        check_norm_kernel(self.norm_kernel)
        check_mlp_kernel(self.mlp_kernel)
        check_ce_kernel(self.ce_kernel)
        if self.linear_ce_chunk_tokens < 0:
            raise ValueError(f"linear_ce_chunk_tokens must be >= 0 (0 = off), got {self.linear_ce_chunk_tokens}")
        if self.pipeline_model_parallel_size > 1 and self.pipeline_dtype is None:
            # Activations cross stages in the parameters' dtype (Megatron-LM's default); only mixed-precision
            # configs set pipeline_dtype, so an fp32 run with PP > 1 would otherwise be refused by megatron-core.
            self.pipeline_dtype = self.params_dtype
        TransformerConfig.__post_init__(self)

    def padded_vocab_size(self) -> int:
        """Rows of the embedding/output matrices: vocab rounded up to ``make_vocab_size_divisible_by × TP``.

        Example: vocab 128256, divisible_by 128, TP 2 -> multiple of 256 -> 128256 (already aligned);
        vocab 1000, TP 1 -> 1024.
        """
        if not self.should_pad_vocab:
            return int(self.vocab_size)
        multiple = self.make_vocab_size_divisible_by * self.tensor_model_parallel_size
        return int(math.ceil(self.vocab_size / multiple) * multiple)

    def _resolve_layer_spec(self, vp_stage: int | None) -> Any:
        spec = self.transformer_layer_spec
        if isinstance(spec, ModuleSpec) or not callable(spec):
            return spec
        if "vp_stage" in inspect.signature(spec).parameters:
            return spec(self, vp_stage=vp_stage)
        return spec(self)

    def provide(
        self, pre_process: bool | None = None, post_process: bool | None = None, vp_stage: int | None = None
    ) -> GPTModel:
        """Build one (unwrapped) ``GPTModel`` for this pipeline stage / virtual stage."""
        self.finalize()
        self._install_fusion_kernels()
        if pre_process is None:
            pre_process = parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
        if post_process is None:
            post_process = parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
        model_cls = ChunkedLossGPTModel if self.linear_ce_chunk_tokens else GPTModel
        model = model_cls(
            config=self,
            transformer_layer_spec=self._resolve_layer_spec(vp_stage),
            vocab_size=self.padded_vocab_size(),
            max_sequence_length=self.seq_length,
            pre_process=pre_process,
            post_process=post_process,
            fp16_lm_cross_entropy=self.fp16_lm_cross_entropy,
            parallel_output=self.parallel_output,
            share_embeddings_and_output_weights=self.share_embeddings_and_output_weights,
            position_embedding_type=self.position_embedding_type,
            rotary_percent=self.rotary_percent,
            rotary_base=self.rotary_base,
            rope_scaling=self.rope_scaling,
            rope_scaling_factor=self.rope_scaling_factor,
            scatter_embedding_sequence_parallel=self.scatter_embedding_sequence_parallel,
            seq_len_interpolation_factor=self.seq_len_interpolation_factor,
            vp_stage=vp_stage,
        )
        self._set_exact_rope(model)
        self._move_rope_into_attention(model)
        link_residual_norms(model)  # residual adds folded into the next RMSNorm where it runs (models/residual_norm.py)
        return model

    def _install_fusion_kernels(self) -> None:
        """``gradient_accumulation_fusion`` without apex: our torch GEMM stands in for apex's (models/fused_ops.py)."""
        if not self.gradient_accumulation_fusion:
            return
        if not torch.cuda.is_available():
            raise ValueError(
                "gradient_accumulation_fusion=True needs a CUDA device (megatron-core's fused weight-gradient path "
                "allocates on the GPU); set provider.gradient_accumulation_fusion = False on CPU"
            )
        install_grad_accum_fusion()

    def _move_rope_into_attention(self, model: GPTModel) -> None:
        """Let :class:`SDPAttention` apply RoPE (one vectorised pass per layer, cos/sin shared per batch).

        megatron-core's packed (THD) RoPE loops over documents in Python in every layer; with our core attention
        the same rotation is applied inside it instead, and the model's own RoPE is switched off. Other core
        attentions (Transformer Engine, megatron's local one) keep megatron-core's RoPE.
        """
        rotary = getattr(model, "rotary_pos_emb", None)
        cores = [m for m in model.modules() if isinstance(m, SDPAttention)]
        if (
            rotary is None
            or not cores
            or getattr(model, "position_embedding_type", None) != "rope"
            or self.rotary_interleaved
            or self.multi_latent_attention
        ):
            return
        table = RotaryTable(rotary.inv_freq, self.seq_len_interpolation_factor)
        for core in cores:
            core.rotary = table
        model.position_embedding_type = "none"  # GPTModel then passes rotary_pos_emb=None to its layers

    def _set_exact_rope(self, model: GPTModel) -> None:
        """Replace megatron's llama3 scaling (fixed low/high/original factors) by the configured one."""
        rotary = getattr(model, "rotary_pos_emb", None)
        if rotary is None or self.position_embedding_type != "rope" or not self.rope_scaling:
            return
        # Computed on the CPU even when the model is built under ``torch.device("meta")`` (streaming import): the
        # llama3 scaling needs real values, and the small table is then moved to wherever the model lives.
        with torch.device("cpu"):
            inv_freq = llama3_scaled_inv_freq(
                base_inv_freq(self.kv_channels, self.rotary_base, self.rotary_percent),
                factor=self.rope_scaling_factor,
                low_freq_factor=self.rope_scaling_low_freq_factor,
                high_freq_factor=self.rope_scaling_high_freq_factor,
                original_max_position_embeddings=self.rope_scaling_original_max_position_embeddings,
            )
        rotary.inv_freq = inv_freq.to(rotary.inv_freq.device)

    def provide_distributed_model(
        self,
        ddp_config: DistributedDataParallelConfig | None = None,
        model_type: ModelType = ModelType.encoder_or_decoder,
        overlap_param_gather_with_optimizer_step: bool = False,
        fp16: bool | None = None,
        bf16: bool | None = None,
        use_megatron_fsdp: bool = False,
        use_torch_fsdp2: bool = False,
        wrap_with_ddp: bool = True,
        data_parallel_random_init: bool = False,
        use_cpu_initialization: bool | None = None,
        init_model_with_meta_device: bool | None = None,
        pre_wrap_hook: ModelHook | None = None,
        post_wrap_hook: ModelHook | None = None,
        mixed_precision_wrapper: Callable[..., torch.nn.Module] | None = Float16Module,
        pg_collection: Any = None,
    ) -> list[torch.nn.Module]:
        """Build this rank's model chunks, ready for megatron-core's schedules and optimizer.

        Order (as Bridge): build one ``GPTModel`` per virtual pipeline stage -> ``pre_wrap_hook(chunks)``
        (PEFT, HF weight loading see unwrapped ``GPTModel`` names) -> move to the GPU -> ``Float16Module`` when
        bf16/fp16 -> megatron DDP -> ``post_wrap_hook(chunks)``.

        Returns:
            One module per virtual pipeline stage (a single-item list without virtual pipelining).
        """
        if use_megatron_fsdp or use_torch_fsdp2 or pg_collection is not None:
            raise ValueError("use_megatron_fsdp / use_torch_fsdp2 / pg_collection are not supported; use megatron DDP")
        if fp16 is not None:
            self.fp16 = fp16
        if bf16 is not None:
            self.bf16 = bf16
        if use_cpu_initialization is not None:
            self.use_cpu_initialization = use_cpu_initialization
        if init_model_with_meta_device:
            raise ValueError("init_model_with_meta_device=True is not supported")
        if self.fp16 and self.bf16:
            raise ValueError("GPTModelProvider: fp16 and bf16 are both True; choose one")
        if wrap_with_ddp and self.cuda_fast_kernels and torch.cuda.is_available():
            self._enable_cuda_fast_kernels()
        chunks = self._build_chunks(model_type)
        if pre_wrap_hook is not None:
            chunks = pre_wrap_hook(chunks)
        for chunk in chunks:
            for param in chunk.parameters():
                tensor_parallel.set_defaults_if_not_set_tensor_model_parallel_attributes(param)
        if torch.cuda.is_available() and not (self.use_cpu_initialization and not wrap_with_ddp):
            chunks = [chunk.cuda(torch.cuda.current_device()) for chunk in chunks]
        if (self.fp16 or self.bf16) and mixed_precision_wrapper is not None:
            chunks = [mixed_precision_wrapper(self, chunk) for chunk in chunks]
        if wrap_with_ddp:
            chunks = self._wrap_ddp(chunks, ddp_config, overlap_param_gather_with_optimizer_step)
            if data_parallel_random_init:
                for chunk in chunks:
                    chunk.broadcast_params()
        if post_wrap_hook is not None:
            chunks = post_wrap_hook(chunks)
        return chunks

    def _enable_cuda_fast_kernels(self) -> None:
        """See ``cuda_fast_kernels``: training-only fusions, turned on in place (run_config.yaml records them)."""
        self.gradient_accumulation_fusion = True
        if self.gated_linear_unit and self.activation_func is F.silu:
            self.bias_activation_fusion = True
        if not self.linear_ce_chunk_tokens:
            from sft_bridge_port.models.linear_ce import default_chunk_tokens

            self.linear_ce_chunk_tokens = default_chunk_tokens(self.vocab_size)

    def _build_chunks(self, model_type: ModelType) -> list[torch.nn.Module]:
        vpp = self.virtual_pipeline_model_parallel_size
        if self.pipeline_model_parallel_size > 1 and vpp is not None:
            chunks = [self.provide(vp_stage=stage) for stage in range(vpp)]
        else:
            chunks = [self.provide()]
        for chunk in chunks:
            chunk.model_type = model_type
        return chunks

    def _wrap_ddp(
        self, chunks: list[torch.nn.Module], ddp_config: DistributedDataParallelConfig | None, overlap: bool
    ) -> list[torch.nn.Module]:
        ddp_config = ddp_config or DistributedDataParallelConfig()
        return [
            DistributedDataParallel(
                config=self, ddp_config=ddp_config, module=chunk, disable_bucketing=(i > 0) or overlap
            )
            for i, chunk in enumerate(chunks)
        ]

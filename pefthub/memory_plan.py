"""GPU memory and GPU-hours of a run, estimated from the model's architecture and the run config.

Pure functions, no weights and no GPU: :class:`Architecture` reads the dimensions a transformers
config (or ``config.json``) declares, :func:`estimate_run` turns them and one run config into the
bytes each GPU holds at the run's peak, the FLOPs it spends and what that costs in GPU-hours at a
stated model-FLOP utilisation, and :func:`fix_for` names the smallest change that makes a run fit.
``pefthub plan`` prints it; docs/gpu.md explains every term. Hand-written because no library
estimates a training run's memory from a config (accelerate's ``estimate-memory`` counts weights
and Adam state only, without activations, rollouts or a vLLM engine).

Units: GB = 10^9 bytes. Figures are upper bounds at the budget's caps: every sequence of a
micro-batch at ``budget.max_seq_len``, every rollout at ``budget.max_new_tokens``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

GB = 1e9
#: GPU memory per GPU, the default of ``pefthub plan --gpu-memory-gb`` (an H100/A100 80 GB card).
DEFAULT_GPU_MEMORY_GB = 80.0
#: Dense bf16 peak of one H100 SXM (NVIDIA's H100 datasheet: 989 TFLOPS without sparsity).
DEFAULT_GPU_TFLOPS = 989.0
#: Model-FLOP utilisation of training: large dense transformer training reaches 0.30-0.46 (PaLM,
#: Chowdhery et al. 2022, Table 3: GPT-3 0.21, Gopher 0.33, Megatron-Turing NLG 0.30, PaLM 0.46);
#: 0.35 is a single-node 7B fine-tune's figure within that range.
TRAIN_MFU = 0.35
#: Model-FLOP utilisation of generation: decoding is memory-bandwidth bound (each new token reads
#: every weight once), so batched decoding reaches about a tenth of the matmul peak; scripts/gpu-check
#: measures the real figure on the GPU at hand.
GENERATION_MFU = 0.10
#: What a run's ``dtype = "auto"`` computes in on a GPU (devices.resolve: bf16 where supported).
GPU_AUTO_DTYPE = "bfloat16"
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Bytes per trainable parameter: fp32 master weight, fp32 gradient, AdamW's two fp32 moments.
MASTER_BYTES, GRAD_BYTES, ADAM_BYTES = 4, 4, 8
TRAINABLE_STATE_BYTES = MASTER_BYTES + GRAD_BYTES + ADAM_BYTES
#: Largest GPU count :func:`fix_for` suggests for sharded full fine-tuning.
MAX_SUGGESTED_GPUS = 64
#: Trainers whose gradient checkpointing is on unless the run turns it off (TRL's engines).
CHECKPOINTING_BY_DEFAULT = ("trl-sft", "trl-grpo")


@dataclass(frozen=True)
class Architecture:
    """The dimensions of a decoder-only transformer (Llama/Qwen2 family: RMSNorm, GQA, SwiGLU MLP)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    qkv_bias: bool
    max_positions: int

    @classmethod
    def from_config(cls, config: Any) -> "Architecture":
        """From a transformers config object or a ``config.json`` dict."""
        get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (
            lambda k, d=None: getattr(config, k, d))
        heads = int(get("num_attention_heads"))
        hidden = int(get("hidden_size"))
        bias = get("attention_bias")  # Llama declares it; Qwen2 always has q/k/v biases
        return cls(hidden=hidden, layers=int(get("num_hidden_layers")), heads=heads,
                   kv_heads=int(get("num_key_value_heads") or heads), head_dim=int(get("head_dim") or hidden // heads),
                   intermediate=int(get("intermediate_size")), vocab=int(get("vocab_size")),
                   tied_embeddings=bool(get("tie_word_embeddings", False)),
                   qkv_bias=bool(bias) if bias is not None else get("model_type") == "qwen2",
                   max_positions=int(get("max_position_embeddings") or 0))

    @property
    def layer_params(self) -> int:
        """One decoder layer: q/k/v/o projections (with q/k/v biases where declared), the gated MLP,
        two RMSNorms."""
        q, kv, h = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden
        attention = h * q + 2 * h * kv + q * h + (q + 2 * kv if self.qkv_bias else 0)
        return attention + 3 * h * self.intermediate + 2 * h

    @property
    def params(self) -> int:
        """Every parameter, counted once (a tied output head shares the embedding)."""
        embed = self.vocab * self.hidden
        return self.layers * self.layer_params + self.hidden + embed * (1 if self.tied_embeddings else 2)

    @property
    def forward_params(self) -> int:
        """``N`` of the FLOP formulas: parameters in forward matmuls (the input embedding is a lookup;
        a tied head still multiplies), as :func:`pefthub.trainers.budget.forward_params` counts them."""
        return self.params - self.vocab * self.hidden + (self.vocab * self.hidden if self.tied_embeddings else 0)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V cache of one token across all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    def layer_activation_bytes(self, dtype_bytes: int) -> int:
        """Bytes one decoder layer keeps for backward, per token, without recomputation.

        Adapted from Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
        Transformer Models", arXiv 2205.05198, section 4.1: ``sbh(34 + 5as/h)`` bytes per layer for
        GPT with 16-bit activations) to a transformers Llama/Qwen2 layer, with ``p`` bytes per element:
        two RMSNorms, each keeping its input upcast to fp32, its fp32 reciprocal RMS, the normalised
        input and its output (``(4 + 2p)·h + 4``); fused attention (SDPA / FlashAttention keeps Q, K,
        V, its output and an fp32 log-sum-exp per head, not the ``a·s²`` scores:
        ``(2·a·d + 2·kv·d)·p + 4a``); a gated MLP keeping gate, up, the activation and the product
        (``4·I·p``); no dropout masks.
        tests/test_plan_gpu.py checks it, to the byte, against what autograd saves for a Qwen2 layer.
        """
        p, h = dtype_bytes, self.hidden
        norms = 2 * ((4 + 2 * p) * h + 4)
        attention = (2 * self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim) * p + 4 * self.heads
        return norms + attention + 4 * self.intermediate * p

    def activation_bytes_per_token(self, dtype_bytes: int, checkpointing: bool) -> int:
        """Activations of a forward pass per token: the input ids (int64), the rotary cos and sin the
        layers share (``2·d·p`` per position: exact at micro-batch 1, an upper bound above), the decoder
        layers and the final norm (whose output the output head keeps). With gradient checkpointing (transformers'
        per-layer checkpointing) each layer keeps only its input (``h·p``) and one layer at a time is
        recomputed in full during backward."""
        p, h = dtype_bytes, self.hidden
        layer = self.layer_activation_bytes(p)
        kept = self.layers * h * p + layer if checkpointing else self.layers * layer
        return 8 + 2 * self.head_dim * p + kept + (4 + 2 * p) * h + 4

    def logits_bytes_per_token(self, dtype_bytes: int) -> int:
        """The output head's logits (compute dtype), their fp32 copy (losses and log-probs are taken
        in fp32) and the fp32 log-softmax cross-entropy keeps for backward."""
        return self.vocab * (dtype_bytes + (4 if dtype_bytes != 4 else 0) + 4)


@dataclass
class RunEstimate:
    """One run's peak bytes per GPU by part, its FLOPs and GPU-hours, and whether it fits."""

    trainer: str
    method: str
    dtype: str
    num_gpus: int
    sharded: bool                 # full fine-tuning sharded over num_gpus (FSDP)
    refused: str | None           # why the run would be refused as asked (None: it would start)
    checkpointing: bool
    micro_batch: int              # sequences per forward/backward
    seq_len: int
    weights: float                # frozen weights in the compute dtype (bytes, per GPU)
    trainable_state: float        # fp32 master weights + gradients + AdamW moments (per GPU)
    shard_buffer: float           # FSDP: the gathered layer being computed and the one prefetched
    rollout_gather: float         # sharded GRPO: the whole weights gathered for the rollout, and its KV cache
    activations: float            # decoder activations at the micro-batch
    logits: float                 # output-head logits and the fp32 log-softmax
    vllm_reserved: float          # what vLLM takes: gpu_memory_utilization × GPU memory
    vllm_beside_training: bool    # the rollout engine is up while training runs (else evaluation's, after)
    vllm_kv_tokens: int           # tokens of KV cache left in that share after vLLM's weights
    vllm_needs_tokens: int        # the longest sequence vLLM must hold (its max_model_len)
    rollout_rows: int             # completions a step samples on vLLM (0 when rollouts are not on vLLM)
    gpu_memory: float
    train_flops: float
    generation_flops: float
    gpu_hours: float

    @property
    def total(self) -> float:
        """Peak bytes on the busiest GPU: state, plus the training pass and vLLM's share together when
        vLLM serves the rollouts, else the largest of the training pass, a sharded rank's rollout and
        evaluation's engine (which starts after training)."""
        training = self.activations + self.logits
        phases = (training + self.vllm_reserved if self.vllm_beside_training
                  else max(training, self.rollout_gather, self.vllm_reserved))
        return self.weights + self.trainable_state + self.shard_buffer + phases

    @property
    def fits(self) -> bool:
        return (self.refused is None and self.total <= self.gpu_memory
                and self.vllm_kv_tokens >= self.vllm_needs_tokens)

    @property
    def rollouts_at_once(self) -> int:
        """Completions at ``budget.max_seq_len`` whose KV cache vLLM's share holds together (at most the
        step's); a step's rollouts decode in ``rollout_rows / rollouts_at_once`` waves at the caps."""
        if not self.rollout_rows or not self.seq_len:
            return 0
        return min(self.rollout_rows, self.vllm_kv_tokens // self.seq_len)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "total": self.total, "fits": self.fits,
                "rollouts_at_once": self.rollouts_at_once}


def _sharded_trainers() -> tuple[str, ...]:
    from pefthub.trainers.sharded import SHARDED_TRAINERS

    return SHARDED_TRAINERS


def shard_refusal(config: dict) -> str | None:
    """Why a ``full`` run config with more than one GPU would not shard (sharded.py's rule), or None."""
    from pefthub.trainers.sharded import grpo_refusal

    trainer = config.get("trainer")
    if trainer not in _sharded_trainers():
        return (f"sharded full fine-tuning supports the {' and '.join(_sharded_trainers())} trainers only, not "
                f"{trainer} (pefthub/trainers/sharded.py)")
    reason = grpo_refusal(config.get("trainer_options") or {}) if trainer == "grpo" else None
    if reason is not None:
        return f"sharded full fine-tuning with GRPO does not support {reason} (pefthub/trainers/sharded.py)"
    return None


def shards(config: dict) -> bool:
    """Whether a run config's ``full`` fine-tuning shards over its GPUs with FSDP (sharded.py's rule)."""
    from pefthub.trainers.sharded import SHARDED_METHOD

    return config.get("method") == SHARDED_METHOD and shard_refusal(config) is None


def run_dtype(config: dict) -> str:
    """The compute dtype a run config asks for, as it resolves on a GPU."""
    dtype = config.get("dtype", "auto")
    return GPU_AUTO_DTYPE if dtype == "auto" else dtype


def uses_vllm(config: dict) -> tuple[bool, bool]:
    """(rollouts on vLLM, evaluation on vLLM) for a run config."""
    rollouts = (config.get("trainer_options") or {}).get("rollout_backend") == "vllm"
    return rollouts, (config.get("eval") or {}).get("backend") == "vllm"


def vllm_model_len(config: dict, model_context: int) -> int | None:
    """The ``max_model_len`` a run's vLLM engines get: the ``vllm`` setting where the run sets one; else
    the longest of the rollout engine's (``budget.max_seq_len``: rollout prompts are cut to leave
    room for ``max_new_tokens``) and the evaluation engine's (the model's whole context
    ``model_context``: lm-eval cuts a prompt, never a completion, to fit); None without vLLM."""
    rollouts, evaluation = uses_vllm(config)
    configured = (config.get("vllm") or {}).get("max_model_len")
    if not (rollouts or evaluation):
        return None
    if configured:
        return int(configured)
    rollout_len = int((config.get("budget") or {}).get("max_seq_len", 0)) if rollouts else 0
    return max(rollout_len, model_context if evaluation else 0)


def estimate_run(arch: Architecture, config: dict, *, algorithm: str, trainable_params: int, num_gpus: float = 1,
                 gpu_memory_gb: float = DEFAULT_GPU_MEMORY_GB, gpu_tflops: float = DEFAULT_GPU_TFLOPS,
                 checkpointing: bool | None = None, micro_batch: int | None = None) -> RunEstimate:
    """The estimate for one run config (``docs/results-schema.md``'s ``config``) whose trainer runs
    ``algorithm`` (``grpo``, ``sft`` or ``none`` for the base row). ``checkpointing`` and
    ``micro_batch`` override the config's (what :func:`fix_for` tries)."""
    from pefthub.trainers.budget import forward_flops, train_step_flops

    options = config.get("trainer_options") or {}
    budget = config.get("budget") or {}
    evaluation = config.get("eval") or {}
    dtype = run_dtype(config)
    p = DTYPE_BYTES[dtype]
    gpus = max(1, int(num_gpus))
    full = config.get("method") == "full"
    refused = None
    if full and gpus > 1 and not shards(config):
        refused = f"{shard_refusal(config)}, so it trains on one GPU"
        gpus = 1
    sharded = full and gpus > 1
    training = algorithm != "none"
    trainable = arch.params if full else (trainable_params if training else 0)

    # Static state: frozen weights in the compute dtype, trainable parameters as fp32 master weights
    # with fp32 gradients and AdamW moments (bf16 compute with fp32 trainable parameters).
    weights = (arch.params - trainable) * p
    state = trainable * TRAINABLE_STATE_BYTES
    shard_buffer = 0.0
    if sharded:  # FSDP: parameters, gradients and optimizer state split over the GPUs
        state /= gpus
        shard_buffer = 2 * max(arch.layer_params, arch.vocab * arch.hidden) * p
    rows_per_step = int(budget.get("batch_size", 0)) * (int(budget.get("generations", 1)) if algorithm == "grpo" else 1)
    seq_len = int(budget.get("max_seq_len", 0))
    rollout_gather = 0.0
    if sharded and algorithm == "grpo":  # rollouts on each rank's gathered weights, KV cache of its share of rows
        rollout_gather = arch.params * p + rows_per_step // gpus * seq_len * arch.kv_bytes_per_token(p)

    # One forward/backward chunk: micro_batch sequences at the budget's longest sequence.
    if micro_batch is None:
        micro_batch = int(options.get("micro_batch_size", rows_per_step)) or rows_per_step
    micro_batch = min(micro_batch, rows_per_step) if rows_per_step else micro_batch
    if checkpointing is None:
        checkpointing = bool(options.get("gradient_checkpointing", config.get("trainer") in CHECKPOINTING_BY_DEFAULT))
    tokens = micro_batch * seq_len if training else 0
    activations = tokens * arch.activation_bytes_per_token(p, checkpointing)
    logits = tokens * arch.logits_bytes_per_token(p)

    # vLLM reserves its share of the GPU up front: its own bf16 copy of the weights plus KV cache.
    rollouts_vllm, eval_vllm = uses_vllm(config)
    settings = config.get("vllm") or {}
    gpu_memory = gpu_memory_gb * GB
    vllm_reserved, kv_tokens, needs = 0.0, 0, 0
    if rollouts_vllm or eval_vllm:
        from pefthub.generation.vllm_engine import DEFAULT_VLLM_GPU_MEMORY_UTILIZATION

        share = settings.get("gpu_memory_utilization", DEFAULT_VLLM_GPU_MEMORY_UTILIZATION)
        vllm_reserved = share * gpu_memory
        vllm_p = DTYPE_BYTES[GPU_AUTO_DTYPE]
        kv_tokens = max(0, int((vllm_reserved - arch.params * vllm_p) // arch.kv_bytes_per_token(vllm_p)))
        needs = vllm_model_len(config, arch.max_positions) or 0

    # FLOPs at the caps: trainers/budget.py's train step (6N for full fine-tuning, 4N + 2·trainable for
    # adapters, whose frozen weights need no weight gradient), one more forward with checkpointing
    # and with a KL reference; generation 2N per token (prefill of each prompt once, then decoding).
    n = arch.forward_params
    steps = int(budget.get("steps", 0)) if training else 0
    prompt_cap = max(0, seq_len - int(budget.get("max_new_tokens", 0)))
    train_tokens = steps * rows_per_step * seq_len
    train_flops = train_step_flops(n, trainable, train_tokens)
    if checkpointing:
        train_flops += forward_flops(n, train_tokens)
    if algorithm == "grpo" and float(options.get("beta", 0) or 0) > 0:
        train_flops += forward_flops(n, train_tokens)
    generated = 0
    if algorithm == "grpo":
        prompts = steps * int(budget.get("batch_size", 0))
        generated = prompts * prompt_cap + prompts * int(budget.get("generations", 1)) * int(budget.get("max_new_tokens", 0))
    eval_items = int(evaluation.get("limit") or 0) + int(evaluation.get("validation_limit") or 0)
    eval_items += checkpoint_items(evaluation, steps)
    generated += eval_items * _eval_len(budget, evaluation)
    generation_flops = forward_flops(n, generated)
    peak = gpu_tflops * 1e12
    gpu_hours = (train_flops / (peak * TRAIN_MFU) + generation_flops / (peak * GENERATION_MFU)) / 3600
    return RunEstimate(
        trainer=config.get("trainer", ""), method=config.get("method", ""), dtype=dtype, num_gpus=gpus,
        sharded=sharded, refused=refused, checkpointing=checkpointing, micro_batch=micro_batch if training else 0, seq_len=seq_len,
        weights=float(weights), trainable_state=float(state), shard_buffer=float(shard_buffer),
        rollout_gather=float(rollout_gather),
        activations=float(activations), logits=float(logits), vllm_reserved=float(vllm_reserved),
        vllm_beside_training=rollouts_vllm,
        vllm_kv_tokens=kv_tokens, vllm_needs_tokens=needs, rollout_rows=rows_per_step if rollouts_vllm else 0, gpu_memory=gpu_memory, train_flops=float(train_flops),
        generation_flops=float(generation_flops), gpu_hours=gpu_hours)


def checkpoint_items(evaluation: dict, steps: int) -> int:
    """Validation examples scored at ``eval.checkpoints`` inside training: each checkpoint before the
    last step scores the run's validation evaluation once more (the one at ``steps`` is the final one)."""
    inside = sum(1 for step in evaluation.get("checkpoints") or () if step < steps)
    per = evaluation.get("limit") if evaluation.get("split") == "validation" else evaluation.get("validation_limit")
    return inside * int(per or 0)


def _eval_len(budget: dict, evaluation: dict) -> int:
    """An evaluation sequence at the caps: the rollouts' prompt room plus ``eval.max_new_tokens``
    (the budget's ``max_new_tokens`` stands in where evaluation sizes it from the task)."""
    new = evaluation.get("max_new_tokens", 0)
    if not isinstance(new, int):
        new = int(budget.get("max_new_tokens", 0))
    return max(0, int(budget.get("max_seq_len", 0)) - int(budget.get("max_new_tokens", 0))) + new


def fix_for(arch: Architecture, config: dict, estimate: RunEstimate, **kwargs: Any) -> str | None:
    """The smallest change that makes a run that does not fit fit, as a line naming the settings
    (None when it fits already). Tried in order: gradient checkpointing, a smaller micro-batch,
    then (full fine-tuning) more GPUs with FSDP, then a larger vLLM share; ``kwargs`` are
    :func:`estimate_run`'s."""
    if estimate.fits:
        return None
    trainer = config.get("trainer", "")
    where = f"trainer_options.{trainer}"
    changes: list[str] = []
    options = config.get("trainer_options") or {}
    if estimate.refused and trainer == "grpo" and options.get("rollout_backend") == "vllm":
        # Sharded GRPO does not roll out on vLLM: try its own engine on the ranks' gathered weights.
        swapped = {**config, "trainer_options": {**options, "rollout_backend": "fused"}}
        if shards(swapped):
            change = f"{where}.rollout_backend = 'fused' (sharded GRPO does not roll out on vLLM)"
            rest = fix_for(arch, swapped, estimate_run(arch, swapped, **kwargs), **kwargs)
            if rest is None or rest.startswith("set "):
                return f"set {change}" + (f"; {rest[4:]}" if rest else "")
    if estimate.vllm_kv_tokens < estimate.vllm_needs_tokens:
        arch_p = DTYPE_BYTES[GPU_AUTO_DTYPE]
        need = arch.params * arch_p + estimate.vllm_needs_tokens * arch.kv_bytes_per_token(arch_p)
        share = math.ceil(100 * need / estimate.gpu_memory) / 100
        if share >= 1:
            return (f"vLLM cannot hold the weights and one {estimate.vllm_needs_tokens}-token sequence on one "
                    f"{estimate.gpu_memory / GB:g} GB GPU: use a GPU with more memory")
        config = {**config, "vllm": {**(config.get("vllm") or {}), "gpu_memory_utilization": share}}
        changes.append(f"vllm.gpu_memory_utilization >= {share:g}")
        estimate = estimate_run(arch, config, **kwargs)
        if estimate.fits:
            return "set " + "; ".join(changes)
    gpus = estimate.num_gpus
    gpu_options = [gpus]
    if shards(config):
        gpu_options += [g for g in (2, 4, 8, 16, 32, MAX_SUGGESTED_GPUS) if g > gpus]
    if estimate.refused:
        changes.append("resources.num_gpus = 1")
        kwargs = {**kwargs, "num_gpus": 1}
    for n_gpus in gpu_options:
        for checkpointing in ([estimate.checkpointing] if estimate.checkpointing else [False, True]):
            micro = estimate.micro_batch or 1
            while micro >= 1:
                trial = estimate_run(arch, config, **{**kwargs, "num_gpus": n_gpus, "checkpointing": checkpointing,
                                                      "micro_batch": micro})
                if trial.fits:
                    out = list(changes)
                    if n_gpus != gpus:
                        out.append(f"resources.num_gpus >= {n_gpus} (full fine-tuning shards with FSDP)")
                    if checkpointing and not estimate.checkpointing:
                        out.append(f"{where}.gradient_checkpointing = true")
                    if micro != estimate.micro_batch:
                        out.append(f"{where}.micro_batch_size <= {micro}")
                    return "set " + "; ".join(out)
                micro //= 2
    least = estimate_run(arch, config, **{**kwargs, "num_gpus": gpu_options[-1], "checkpointing": True,
                                          "micro_batch": 1})
    return ((f"{estimate.refused}; " if estimate.refused else "")
            + f"needs {least.total / GB:,.0f} GB on {gpu_options[-1]} GPU(s) even at micro-batch 1 with gradient "
            f"checkpointing, more than {estimate.gpu_memory / GB:g} GB: use GPUs with more memory or shorten "
            "budget.max_seq_len")

"""A lean sampler for Llama-family causal LMs (Llama, Qwen2, Mistral): the ``fused`` rollout engine.

It samples from the (adapter-merged) model's own weights with fused projections, a preallocated KV
cache, one prefill per prompt and seeded ``softmax(logits / T)`` sampling, recording each sampled
token's log-probability; results agree with transformers' forward to float rounding. Anything it
does not compute exactly is refused by :func:`check_supported` with one line, and the ``hf`` engine
serves it. Design and measurements: docs/trainers.md, docs/performance.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
import torch
import torch.nn.functional as F
from torch import nn

from pefthub.errors import UnsupportedError
from pefthub.models import base_model
from pefthub.generation.allocator import keep_freed_memory

#: transformers architectures whose decoder layer is exactly what :class:`FusedDecoder` computes.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
#: Compact the batch when at least this share of its rows has ended (and at least 2 rows have).
COMPACT_SHARE = 0.25


def check_supported(model: nn.Module, method: Any = None) -> None:
    """Raise :class:`UnsupportedError` unless :class:`FusedDecoder` computes exactly this model with
    ``method``'s adapter merged in (a method that cannot merge, e.g. prompt tuning, is refused)."""
    if method is not None and not getattr(method, "mergeable", True):
        raise UnsupportedError(f"the 'fused' rollout engine samples from merged weights and method '{method.name}' "
                               f"cannot be merged (prompt tuning prepends virtual tokens); use rollout_backend='hf'")
    base = base_model(model)
    cls = type(base)
    if cls.__name__ == f"FSDP{cls.__mro__[2].__name__}":  # FSDP2's wrapper class (FSDPModule, the model's class)
        cls = cls.__mro__[2]
    arch = cls.__name__
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedError(f"the 'fused' rollout engine serves {', '.join(SUPPORTED_ARCHITECTURES)}, not {arch}; "
                               f"use rollout_backend='hf'")
    config = base.config
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        raise UnsupportedError(f"the 'fused' rollout engine has no sliding-window attention ({arch} with "
                               f"sliding_window={config.sliding_window}); use rollout_backend='hf'")
    for name in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, name, None):
            raise UnsupportedError(f"the 'fused' rollout engine has no {name}; use rollout_backend='hf'")


def _linear(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) a projection computes with: the frozen base layer of an adapter wrapper,
    which holds the merged weight inside ``method.merged``."""
    while isinstance(getattr(module, "base_layer", None), nn.Module):
        if not bool(getattr(module, "merged", True)):
            raise UnsupportedError(f"{type(module).__name__} is not merged: sample inside `with method.merged(model)`")
        module = module.base_layer
    if not isinstance(module, nn.Linear):
        raise UnsupportedError(f"the 'fused' rollout engine needs plain linear projections, found {type(module).__name__}")
    return module.weight.detach(), None if module.bias is None else module.bias.detach()


def _fuse(*pairs: tuple[torch.Tensor, torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Stack projections that read the same input into one (weight, bias)."""
    weight = torch.cat([w for w, _ in pairs], dim=0)
    if all(b is None for _, b in pairs):
        return weight, None
    return weight, torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b in pairs])


def onednn_available() -> bool:
    """oneDNN's prepacked fp32 linear can be used here (a CPU build of torch with mkldnn)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class Projection:
    """``x @ weight.T + bias``; on CPU in fp32 with the weight prepacked once per rollout for oneDNN
(the kernel torch's inductor uses), measured against torch's ``linear`` by ``test_linear_kernels``.
"""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, prepack: bool):
        # A trainable bias is kept in fp32 beside bf16 weights (BitFit under mixed precision).
        self.bias = None if bias is None else bias.to(weight.dtype)
        self.out_features = weight.shape[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, None) if prepack else None
        self.weight = None if prepack else weight

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


@dataclass
class _Layer:
    norm1: torch.Tensor
    qkv: Projection  # q and k rows in rotary-pair order (see _pair_rows)
    out: Projection
    norm2: torch.Tensor
    gate_up: Projection
    down: Projection


def _pair_rows(pair: tuple[torch.Tensor, torch.Tensor | None], head_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reorder a q or k projection's output rows, per head, from rotary's half-split layout
    (x_0..x_{h/2-1}, x_{h/2}..x_{h-1}) to pairs (x_0, x_{h/2}, x_1, x_{h/2+1}, ...).

    Why: each rotary pair (x_i, x_{i+h/2}) is then adjacent, so the rotation is one complex
    multiplication per tensor instead of slicing, negating, concatenating and three more ops. Scores
    are dot products of q and k, which do not change when both are permuted alike, and v is not
    permuted, so the attention output is the model's own.
    """
    weight, bias = pair
    half = head_dim // 2
    order = torch.arange(head_dim, device=weight.device).view(2, half).t().reshape(-1)  # 0, h/2, 1, h/2+1, ...
    rows = (torch.arange(weight.shape[0] // head_dim, device=weight.device)[:, None] * head_dim + order).reshape(-1)
    return weight[rows], None if bias is None else bias[rows]



def _pairs(x: torch.Tensor) -> torch.Tensor:
    """A complex view of ``x`` (..., head_dim) whose entries are its adjacent (rotary) pairs."""
    return torch.view_as_complex(x.unflatten(-1, (x.shape[-1] // 2, 2)))


def _rotate_pairs(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """``x`` (rows, heads, tokens, head_dim) in pair order, each pair rotated by the complex
    ``rope`` (rows, 1, tokens, head_dim / 2); fp32 throughout (other dtypes round-trip)."""
    if x.dtype != torch.float32:  # complex bf16 does not exist
        return _rotate_pairs(x.float(), rope).to(x.dtype)
    return torch.view_as_real(_pairs(x) * rope).flatten(-2)


#: Vocabulary entries per block of the two-level inverse-CDF sampler.
SAMPLE_BLOCK = 256


def sample_categorical(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row, drawn with probability proportional to ``weights`` (rows, vocab) >= 0.

Inverse CDF with one uniform draw per row, in two levels (a block of ``SAMPLE_BLOCK`` tokens, then a
token inside it), in float64 so rounding cannot move probability between neighbours; a token of
weight zero is never chosen. Measured against ``torch.multinomial`` by ``test_sampler_step``.
"""
    return _sample_with_total(weights, generator)[0]


def _sample_with_total(weights: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_categorical`'s tokens, and each row's total weight (float64) that it sums anyway."""
    rows, vocab = weights.shape
    blocks = -(-vocab // SAMPLE_BLOCK)
    if blocks * SAMPLE_BLOCK != vocab:  # a vocabulary that is not a multiple of the block: pad with zeros
        weights = F.pad(weights, (0, blocks * SAMPLE_BLOCK - vocab))
    blocked = weights.view(rows, blocks, SAMPLE_BLOCK)
    mass = blocked.sum(-1, dtype=torch.float64)
    cdf = mass.cumsum(-1)
    u = torch.rand(rows, 1, generator=generator, dtype=torch.float64, device=weights.device) * cdf[:, -1:]
    block = torch.searchsorted(cdf, u, right=True).clamp_(max=blocks - 1)  # cdf[block - 1] <= u < cdf[block]
    u = u - torch.where(block > 0, cdf.gather(1, (block - 1).clamp(min=0)), 0.0)
    inner = blocked[torch.arange(rows, device=weights.device), block.squeeze(-1)].double().cumsum(-1)
    token = torch.searchsorted(inner, u, right=True)
    # Rounding can leave u at or past the block's own total: take its last token of positive weight.
    last = torch.searchsorted(inner, inner[:, -1:].contiguous(), right=False)
    return (block * SAMPLE_BLOCK + torch.minimum(token, last)).squeeze(-1), cdf[:, -1]


def pick_tokens(logits: torch.Tensor, temperature: float, generator: torch.Generator,
                greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample (or, ``greedy``, take the arg-max of) ``softmax(logits / temperature)`` per row and
    return (tokens, their log-probabilities). Overwrites ``logits``.

    The log-probability is ``z - log Σ exp(z)`` with ``z = logits / T - max``: log-softmax's own
    formula, evaluated for the chosen token only rather than for the whole vocabulary.
    """
    z = logits if temperature == 1.0 else logits.div_(temperature)
    z = z.sub_(z.amax(-1, keepdim=True))
    weights = torch.exp(z)
    if greedy:
        chosen, total = z.argmax(-1), weights.sum(-1, dtype=torch.float64)
    else:
        chosen, total = _sample_with_total(weights, generator)
    return chosen, z.gather(-1, chosen[:, None]).squeeze(-1) - total.log().to(z.dtype)


#: Prompts sharing at least this many leading tokens prefill them once (shorter shares are not worth it).
MIN_SHARED_PREFIX = 16


def shared_prefix_length(ids: torch.Tensor, valid: torch.Tensor) -> int:
    """How many leading real tokens all left-padded prompt rows share, keeping at least one token of
    each row's own (its last position gives the row's first logits)."""
    rows = [row[mask].tolist() for row, mask in zip(ids, valid.bool())]
    if len(rows) < 2:
        return 0
    limit = min(len(r) for r in rows) - 1
    shared = 0
    while shared < limit and all(r[shared] == rows[0][shared] for r in rows[1:]):
        shared += 1
    return shared


@dataclass
class Samples:
    """``N`` sampled continuations (row order as requested)."""

    tokens: torch.Tensor  # (N, C) sampled ids, ``pad_id`` after a row's end token
    mask: torch.Tensor  # (N, C) 1 up to and including the end token
    logprobs: torch.Tensor  # (N, C) log-prob of each sampled token under softmax(logits / T), 0 where masked
    positions_computed: int  # prefill + decode positions the engine ran (for the FLOP estimate)


class FusedDecoder:
    """Samples from a Llama-family model whose adapter (if any) is already merged.

    Build it inside ``method.merged(model)`` and use it before leaving the block: it copies the
    projections (concatenated, prepacked on CPU) but references the embedding and norm weights.
    """

    def __init__(self, model: nn.Module, *, prepack: bool | None = None):
        check_supported(model)
        base = base_model(model)
        config = base.config
        self.config = config
        inner = base.model
        self.embed = inner.embed_tokens.weight.detach()
        if prepack is None:
            prepack = self.embed.device.type == "cpu" and self.embed.dtype == torch.float32 and onednn_available()
        self.prepack = prepack
        if self.embed.device.type == "cpu":
            keep_freed_memory()  # each rollout reallocates the same large buffers: reuse, do not re-fault

        def projection(pair: tuple[torch.Tensor, torch.Tensor | None]) -> Projection:
            return Projection(*pair, prepack=prepack)

        self.rotary = inner.rotary_emb
        self.final_norm = inner.norm.weight.detach()
        self.lm_head = projection((base.lm_head.weight.detach(), None))
        self.eps = float(config.rms_norm_eps)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.intermediate = int(config.intermediate_size)
        from transformers.activations import ACT2FN

        self.act = ACT2FN[config.hidden_act]
        hd = self.head_dim
        self.layers = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append(_Layer(
                norm1=layer.input_layernorm.weight.detach(),
                qkv=projection(_fuse(_pair_rows(_linear(attn.q_proj), hd), _pair_rows(_linear(attn.k_proj), hd),
                                     _linear(attn.v_proj))),
                out=projection(_linear(attn.o_proj)),
                norm2=layer.post_attention_layernorm.weight.detach(),
                gate_up=projection(_fuse(_linear(mlp.gate_proj), _linear(mlp.up_proj))),
                down=projection(_linear(mlp.down_proj)),
            ))
        self.dtype = self.embed.dtype
        self.device = self.embed.device

    # ---- the transformer ---------------------------------------------------------------------
    def _rope(self, positions: torch.Tensor) -> torch.Tensor:
        """Rotations (rows, 1, tokens, head_dim / 2) as complex numbers cos + i·sin, for integer
        ``positions`` (rows, tokens), from the model's rotary module (its scaling included)."""
        probe = self.embed.new_empty(1)
        cos, sin = self.rotary(probe, positions)
        half = self.head_dim // 2
        return torch.complex(cos[..., :half].float(), sin[..., :half].float()).unsqueeze(1)

    def _forward(self, hidden: torch.Tensor, rope: torch.Tensor, cache: list[list[torch.Tensor]],
                 start: int, attn_mask: torch.Tensor) -> torch.Tensor:
        """Run the layers over ``hidden`` (rows, tokens, d) whose tokens sit at cache slots
        ``start .. start + tokens``; write their K/V there and attend to slots ``0 .. start + tokens``
        under ``attn_mask``: (rows, 1, tokens, keys), True = may attend; for one token (decode) an
        additive float mask (rows, 1, 1, keys), 0 = may attend, -inf = may not."""
        rows, tokens, d = hidden.shape
        hq, hkv, hd = self.heads, self.kv_heads, self.head_dim
        group = hq // hkv
        end = start + tokens
        scale = hd ** -0.5
        decode = attn_mask.dtype != torch.bool  # a one-token prefill (a one-token prompt) takes the SDPA path
        if decode:  # one mask row per (row, kv head), shared by the layers and the group's queries
            attn_mask = attn_mask.expand(rows, hkv, 1, end).reshape(rows * hkv, 1, end)
        for layer, (k_cache, v_cache) in zip(self.layers, cache):
            x = F.rms_norm(hidden, (d,), layer.norm1, self.eps)
            qkv = layer.qkv(x)
            q = _rotate_pairs(qkv[..., : hq * hd].view(rows, tokens, hq, hd).transpose(1, 2), rope)
            k = qkv[..., hq * hd: (hq + hkv) * hd].view(rows, tokens, hkv, hd).transpose(1, 2)
            if k.dtype == torch.float32:  # rotate straight into the cache slots
                torch.mul(_pairs(k), rope, out=_pairs(k_cache[:, :, start:end]))
            else:
                k_cache[:, :, start:end] = _rotate_pairs(k, rope)
            v_cache[:, :, start:end] = qkv[..., (hq + hkv) * hd:].view(rows, tokens, hkv, hd).transpose(1, 2)
            keys, values = k_cache[:, :, :end], v_cache[:, :, :end]
            if decode:  # ~35% faster than SDPA's CPU kernel for one query
                # (rows, kv heads) merge into one batch dimension as views of the cache: no copies.
                keys, values = keys.reshape(rows * hkv, end, hd), values.reshape(rows * hkv, end, hd)
                scores = torch.baddbmm(attn_mask, q.reshape(rows * hkv, group, hd), keys.transpose(1, 2), alpha=scale)
                attn = torch.bmm(torch.softmax(scores, dim=-1), values).view(rows, 1, hq * hd)
            else:
                attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask, scale=scale,
                                                      enable_gqa=hq != hkv)
                attn = attn.transpose(1, 2).reshape(rows, tokens, hq * hd)
            hidden = hidden + layer.out(attn)
            x = F.rms_norm(hidden, (d,), layer.norm2, self.eps)
            gate, up = layer.gate_up(x).split(self.intermediate, dim=-1)
            hidden = hidden + layer.down(self.act(gate) * up)
        return hidden

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(F.rms_norm(hidden, (hidden.shape[-1],), self.final_norm, self.eps)).float()

    def _new_cache(self, rows: int, slots: int) -> list[list[torch.Tensor]]:
        shape = (rows, self.kv_heads, slots, self.head_dim)
        return [[torch.empty(shape, dtype=self.dtype, device=self.device) for _ in range(2)] for _ in self.layers]

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Full-sequence logits (rows, tokens, vocab) of left-padded ``input_ids``: for tests."""
        cache = self._new_cache(input_ids.shape[0], input_ids.shape[1])
        hidden, rope, mask = self._prefill_inputs(input_ids, attention_mask)
        return self._logits(self._forward(hidden, rope, cache, 0, mask))

    def _prefill_inputs(self, ids: torch.Tensor, valid: torch.Tensor, embeds: torch.Tensor | None = None):
        valid = valid.bool()
        positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
        mask = self._causal_mask(valid)
        return F.embedding(ids, self.embed) if embeds is None else embeds, self._rope(positions), mask[:, None]

    def _causal_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """(rows, tokens, tokens) True = may attend, for left-padded rows. A padding query may see only
        itself (a row of all-False would give NaN); no real token sees it."""
        width = valid.shape[1]
        causal = torch.ones(width, width, dtype=torch.bool, device=self.device).tril()
        return (causal & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=self.device)

    def _with_prefix(self, ids: torch.Tensor, valid: torch.Tensor,
                     prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, valid, input embeddings) of left-padded rows with ``prefix`` (virtual tokens, (V, d))
        placed between each row's padding and its first real token, so that the virtual tokens take
        positions 0..V-1 and the prompt V.. (as peft's prompt tuning computes an unpadded row)."""
        rows, width = ids.shape
        virtual = prefix.shape[0]
        pads = (~valid).sum(-1, keepdim=True)  # left padding per row
        j = torch.arange(width + virtual, device=self.device)[None, :]
        # Source column in cat([prefix, embed(ids)]): pads first, then the prefix, then the prompt.
        source = torch.where(j < pads, virtual + j, torch.where(j < pads + virtual, j - pads, j))
        table = torch.cat([prefix.to(self.dtype).expand(rows, virtual, -1), F.embedding(ids, self.embed)], dim=1)
        embeds = table.gather(1, source[..., None].expand(rows, width + virtual, table.shape[-1]))
        ext_ids = torch.cat([ids.new_zeros(rows, virtual), ids], dim=1).gather(1, source)
        ext_valid = torch.cat([valid.new_ones(rows, virtual), valid], dim=1).gather(1, source)
        return ext_ids, ext_valid, embeds

    def _prefill_with_shared_prefix(self, ids: torch.Tensor, valid: torch.Tensor, shared: int,
                                    virtual: torch.Tensor | None = None):
        """Prefill left-padded prompts whose first ``shared`` real tokens are the same: that opening
        (after prompt tuning's ``virtual`` tokens, if any) once, in one row, then each prompt's rest on
        top of it. Returns (cache, last logits, ids, valid) in the layout the decode steps use: the
        opening in the first slots of every row, then the rests, left-padded; each token keeps the
        position it has in its own prompt."""
        prompts = ids.shape[0]
        starts = (~valid).sum(-1)
        text = ids[:1, int(starts[0]):int(starts[0]) + shared]
        embeds = F.embedding(text, self.embed)
        if virtual is not None:  # virtual tokens first, at positions 0..V-1, as peft computes a row
            embeds = torch.cat([virtual.to(self.dtype)[None], embeds], dim=1)
        opening = embeds.shape[1]
        opening_ids = torch.cat([text.new_zeros(1, opening - shared), text], dim=1)
        prefix_cache = self._new_cache(1, opening)
        hidden, rope, mask = self._prefill_inputs(opening_ids, torch.ones_like(opening_ids, dtype=torch.bool), embeds)
        self._forward(hidden, rope, prefix_cache, 0, mask)
        rests = [ids[i, int(starts[i]) + shared:] for i in range(prompts)]
        rest_width = max(len(r) for r in rests)
        rest_ids = ids.new_zeros(prompts, rest_width)
        rest_valid = torch.zeros(prompts, rest_width, dtype=torch.bool, device=self.device)
        for i, r in enumerate(rests):
            rest_ids[i, rest_width - len(r):] = r
            rest_valid[i, rest_width - len(r):] = True
        width = opening + rest_width
        cache = self._new_cache(prompts, width)
        for (k, v), (pk, pv) in zip(cache, prefix_cache):
            k[:, :, :opening] = pk
            v[:, :, :opening] = pv
        positions = opening + (rest_valid.long().cumsum(-1) - 1).clamp(min=0)
        own = self._causal_mask(rest_valid)
        mask = torch.cat([own.new_ones(prompts, rest_width, opening), own], dim=-1)[:, None]
        hidden = F.embedding(rest_ids, self.embed)
        last = self._logits(self._forward(hidden, self._rope(positions), cache, opening, mask)[:, -1])
        full_valid = torch.cat([valid.new_ones(prompts, opening), rest_valid], dim=-1)
        return cache, last, torch.cat([opening_ids.expand(prompts, -1), rest_ids], dim=-1), full_valid

    # ---- sampling ----------------------------------------------------------------------------
    @torch.inference_mode()
    def sample(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, *, generations: int, max_new_tokens: int,
               temperature: float, eos_ids: set[int], pad_id: int, generator: torch.Generator,
               greedy: bool = False, prefix: torch.Tensor | None = None,
               stop: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> Samples:
        """Sample ``generations`` continuations of each left-padded prompt row (rows grouped by prompt).

        ``greedy`` takes the arg-max instead of sampling (evaluation, and tests against
        ``generate``); the recorded log-probs are then those of the arg-max token. ``prefix``
        (V, d) are input embeddings put before every prompt (prompt tuning's virtual tokens).
        ``stop(rows, tokens)`` is called after each step with the output rows still running and their
        tokens so far, and returns which of them end there (e.g. on a stop string), like an end token.
        Every tensor passed in, ``generator`` included, must be on the decoder's device (the model's).
        """
        ids, valid, virtual = prompt_ids, prompt_mask.bool(), prefix
        prompts = ids.shape[0]
        n = prompts * generations
        eos = torch.tensor(sorted(eos_ids), device=self.device)

        # Prefill each distinct prompt once, then give each of its rows a copy of its KV. Prompts
        # that open alike (system prompt and chat template) share that prefix's KV, computed once.
        shared = shared_prefix_length(ids, valid)
        if shared >= MIN_SHARED_PREFIX:
            prefill_cache, last, ids, valid = self._prefill_with_shared_prefix(ids, valid, shared, virtual)
            width = ids.shape[1]
            opening = shared + (0 if virtual is None else virtual.shape[0])
            positions_computed = opening + prompts * (width - opening)
        else:
            embeds = None
            if virtual is not None:
                ids, valid, embeds = self._with_prefix(ids, valid, virtual)
            width = ids.shape[1]
            prefill_cache = self._new_cache(prompts, width)
            hidden, rope, mask = self._prefill_inputs(ids, valid, embeds)
            last = self._logits(self._forward(hidden, rope, prefill_cache, 0, mask)[:, -1])
            positions_computed = prompts * width
        slots = width + max_new_tokens
        cache = self._new_cache(n, slots)
        for (k, v), (pk, pv) in zip(cache, prefill_cache):
            k[:, :, :width] = pk.repeat_interleave(generations, dim=0)
            v[:, :, :width] = pv.repeat_interleave(generations, dim=0)
        del prefill_cache
        logits = last.repeat_interleave(generations, dim=0)
        key_valid = torch.zeros(n, slots, dtype=torch.bool, device=self.device)
        key_valid[:, :width] = valid.repeat_interleave(generations, dim=0)
        next_position = valid.sum(-1).repeat_interleave(generations, dim=0)  # per row: its prompt length

        tokens = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=self.device)
        logprobs = torch.zeros((n, max_new_tokens), dtype=torch.float32, device=self.device)
        lengths = torch.zeros(n, dtype=torch.long, device=self.device)
        rows = torch.arange(n, device=self.device)  # batch position -> output row
        alive = torch.ones(n, dtype=torch.bool, device=self.device)  # batch position has not ended
        for step in range(max_new_tokens):
            chosen, chosen_logprobs = pick_tokens(logits, temperature, generator, greedy)
            live = rows[alive]
            tokens[live, step] = chosen[alive]
            logprobs[live, step] = chosen_logprobs[alive]
            lengths[live] = step + 1
            alive = alive & ~torch.isin(chosen, eos)
            if stop is not None and bool(alive.any()):
                running = alive.nonzero().squeeze(-1)
                alive[running[stop(rows[running], tokens[rows[running], : step + 1])]] = False
            if step == max_new_tokens - 1 or not bool(alive.any()):
                break
            if int((~alive).sum()) >= max(2, COMPACT_SHARE * len(rows)):  # drop ended rows from the batch
                keep = alive.nonzero().squeeze(-1)
                cache = [[k.index_select(0, keep), v.index_select(0, keep)] for k, v in cache]
                rows, chosen, alive = rows[keep], chosen[keep], alive[keep]
                key_valid, next_position = key_valid[keep], next_position[keep]
            # An ended row still in the batch runs on (its outputs are never read) until compacted.
            slot = width + step
            key_valid[:, slot] = True
            hidden = F.embedding(chosen[:, None], self.embed)
            rope = self._rope(next_position[:, None])
            next_position = next_position + 1
            mask = torch.zeros(key_valid.shape[0], 1, 1, slot + 1, dtype=self.dtype, device=self.device)
            mask.masked_fill_(~key_valid[:, None, None, : slot + 1], float("-inf"))
            logits = self._logits(self._forward(hidden, rope, cache, slot, mask)[:, -1])
            positions_computed += len(rows)

        steps = torch.arange(max_new_tokens, device=self.device)
        out_mask = (steps[None, :] < lengths[:, None]).long()
        tokens = tokens.masked_fill(out_mask == 0, pad_id)
        width_used = int(lengths.max())
        return Samples(tokens[:, :width_used].cpu(), out_mask[:, :width_used].cpu(),
                       logprobs[:, :width_used].cpu(), positions_computed)

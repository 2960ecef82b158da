"""Rollout backends: sample ``generations`` completions per prompt with the sampler's log-probs, in the
layout GRPO's log-prob pass uses; built in ``hf``, ``fused`` and (lazily) ``vllm``, and ``auto`` takes
``fused`` where it serves the model and method, else ``hf`` (docs/trainers.md)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from pefthub.errors import ConfigError


@dataclass
class Rollouts:
    """``N = prompts × generations`` sampled rows, grouped by prompt."""

    prompt_ids: torch.Tensor  # (N, P) left-padded
    prompt_mask: torch.Tensor  # (N, P) 1 on real prompt tokens
    completion_ids: torch.Tensor  # (N, C) right-padded
    completion_mask: torch.Tensor  # (N, C) 1 on sampled tokens up to and including the end-of-turn token
    logprobs: torch.Tensor | None  # (N, C) sampler log-probs of the sampled tokens (0 where masked), or None
    texts: list[str]  # decoded completions, special tokens removed
    #: Positions the engine computed (prefill + decode steps, padding included), for the FLOP estimate.
    positions_computed: int = 0

    @property
    def size(self) -> int:
        return self.completion_ids.shape[0]

    def take(self, rows: torch.Tensor) -> "Rollouts":
        """These rollouts restricted to ``rows`` (indices), padding kept as sampled; the positions
        the engine computed stay with the whole rollout, so the subset reports none."""
        rows = torch.as_tensor(rows, dtype=torch.long, device=self.completion_ids.device)
        return Rollouts(prompt_ids=self.prompt_ids[rows], prompt_mask=self.prompt_mask[rows],
                        completion_ids=self.completion_ids[rows], completion_mask=self.completion_mask[rows],
                        logprobs=None if self.logprobs is None else self.logprobs[rows],
                        texts=[self.texts[i] for i in rows.tolist()], positions_computed=0)


class RolloutBackend:
    """Base class of a rollout engine (see the module docstring)."""

    name: ClassVar[str]
    #: Its log-probs come from the same forward computation as training (so no importance-sampling
    #: correction is needed by default). Merged weights differ only by float rounding.
    exact: ClassVar[bool] = False

    def __init__(self, model: nn.Module, tokenizer: Any, method: Any):
        self.model = model
        self.tokenizer = tokenizer
        self.method = method

    def generate(self, prompts: list[list[int]], *, generations: int, max_new_tokens: int,
                 temperature: float, seed: int) -> Rollouts:
        raise NotImplementedError

    def sync(self) -> None:
        """Called after every optimizer step; engines with their own weight copy refresh it here."""

    def close(self) -> None:
        """Release the engine's resources."""


class _SampledLogprobs:
    """A logits processor that records the log-probability of each sampled token while keeping
    only one step's distribution in memory.

    transformers runs custom processors *before* its sampling warpers, so the temperature is
    applied here; the sampler uses no other warper (top-k/top-p are off), so this is exactly the
    distribution each token was drawn from.

    At step ``t`` the processor sees the tokens sampled up to step ``t-1``, so it scores the
    previous step's choice from the previous step's log-softmax; :meth:`finish` scores the last one.
    """

    def __init__(self, prompt_width: int, temperature: float):
        self.prompt_width = prompt_width
        self.temperature = temperature
        self.previous: torch.Tensor | None = None
        self.columns: list[torch.Tensor] = []

    def _score_previous(self, input_ids: torch.Tensor) -> None:
        if self.previous is not None:
            chosen = input_ids[:, -1:]
            self.columns.append(self.previous.gather(-1, chosen).squeeze(-1))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._score_previous(input_ids)
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        steps = sequences.shape[1] - self.prompt_width
        if len(self.columns) < steps:
            self._score_previous(sequences[:, : self.prompt_width + len(self.columns) + 1])
        self.previous = None
        if not self.columns:
            return torch.zeros(sequences.shape[0], 0, device=sequences.device)
        return torch.stack(self.columns[:steps], dim=1)


def left_pad(rows: list[list[int]], pad_id: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (ids, mask) of token rows on ``device``, built on the host and copied once."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device="cpu")
    mask = torch.zeros((len(rows), width), dtype=torch.long, device="cpu")
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long, device="cpu")
            mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def completion_mask(completion_ids: torch.Tensor, eos_ids: set[int]) -> torch.Tensor:
    """1 on every token up to and including the first end token of each row, 0 after it."""
    is_end = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_ids:
        is_end |= completion_ids == e
    ended_before = (is_end.long().cumsum(dim=1) - is_end.long()) > 0
    return (~ended_before).long()


def pad_token_id(tokenizer: Any) -> int:
    """The id rollouts pad with: the tokenizer's pad token, else its end-of-sequence token."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def eos_token_ids(tokenizer: Any, model: nn.Module) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if not ids:
        raise ConfigError("the tokenizer defines no end-of-sequence token; rollouts could never stop")
    return ids


class HFGenerateBackend(RolloutBackend):
    """Transformers ``generate`` on merged weights: the default, and the reference, on CPU."""

    name = "hf"
    exact = True

    def generate(self, prompts: list[list[int]], *, generations: int, max_new_tokens: int,
                 temperature: float, seed: int) -> Rollouts:
        from transformers import GenerationConfig, LogitsProcessorList

        tok = self.tokenizer
        pad_id = pad_token_id(tok)
        eos = eos_token_ids(tok, self.model)
        rows = [p for p in prompts for _ in range(generations)]
        device = next(self.model.parameters()).device
        prompt_ids, prompt_mask = left_pad(rows, pad_id, device)
        # Explicit sampling settings: the model's own generation_config (top_k=50, repetition
        # penalties, ...) must not silently change the policy being optimised.
        config = GenerationConfig(do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                  max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                  eos_token_id=sorted(eos), use_cache=True)
        recorder = _SampledLogprobs(prompt_ids.shape[1], temperature)
        was_training = self.model.training
        self.model.eval()
        torch.manual_seed(seed)  # rollouts depend only on (seed, step), not on what ran before
        try:
            with self.method.merged(self.model) as merged, torch.inference_mode():
                sequences = merged.generate(input_ids=prompt_ids, attention_mask=prompt_mask,
                                            generation_config=config,
                                            logits_processor=LogitsProcessorList([recorder]))
                logprobs = recorder.finish(sequences)
        finally:
            self.model.train(was_training)
        # Leave inference mode: these tensors feed an autograd forward next (on the model's device).
        completion_ids = sequences[:, prompt_ids.shape[1]:].clone()
        logprobs = logprobs.clone()
        mask = completion_mask(completion_ids, eos)
        logprobs = logprobs[:, : completion_ids.shape[1]].masked_fill(mask == 0, 0.0)
        texts = tok.batch_decode(completion_ids.masked_fill(mask == 0, pad_id), skip_special_tokens=True)
        positions = len(rows) * (prompt_ids.shape[1] + max(0, completion_ids.shape[1] - 1))
        return Rollouts(prompt_ids, prompt_mask, completion_ids, mask, logprobs, texts, positions)


class FusedRolloutBackend(RolloutBackend):
    """pefthub's own sampler (:mod:`pefthub.generation.decoder`) on merged weights: Llama, Qwen2 and
    Mistral models (speed against ``generate``: docs/performance.md). Its log-probs come
    from the model's own computation, fused differently: they match the training forward to float
    rounding, like merged-weight ``generate``, so no importance-sampling correction is needed."""

    name = "fused"
    exact = True

    def __init__(self, model: nn.Module, tokenizer: Any, method: Any):
        super().__init__(model, tokenizer, method)
        from pefthub.generation.decoder import check_supported

        check_supported(model, method)

    def generate(self, prompts: list[list[int]], *, generations: int, max_new_tokens: int,
                 temperature: float, seed: int) -> Rollouts:
        from pefthub.generation.decoder import FusedDecoder

        tok = self.tokenizer
        pad_id = pad_token_id(tok)
        eos = eos_token_ids(tok, self.model)
        device = next(self.model.parameters()).device
        ids, mask = left_pad(prompts, pad_id, device)  # one row per distinct prompt: prefilled once
        generator = torch.Generator(device=device).manual_seed(seed % 2**63)  # depends only on (seed, step)
        with torch.no_grad(), self.method.merged(self.model) as merged:
            samples = FusedDecoder(merged).sample(ids, mask, generations=generations, max_new_tokens=max_new_tokens,
                                                  temperature=temperature, eos_ids=eos, pad_id=pad_id,
                                                  generator=generator)
        texts = tok.batch_decode(samples.tokens, skip_special_tokens=True)
        return Rollouts(ids.repeat_interleave(generations, dim=0), mask.repeat_interleave(generations, dim=0),
                        samples.tokens, samples.mask, samples.logprobs, texts, samples.positions_computed)


def auto_backend(model: nn.Module, method: Any) -> str:
    """``fused`` where it serves the model and the method merges, else ``hf``."""
    from pefthub.errors import UnsupportedError
    from pefthub.generation.decoder import check_supported

    try:
        check_supported(model, method)
    except UnsupportedError:
        return "hf"
    return "fused"


#: name -> backend class; another engine registers itself here (e.g. ``ROLLOUT_BACKENDS["vllm"] = ...``).
ROLLOUT_BACKENDS: dict[str, type[RolloutBackend]] = {"hf": HFGenerateBackend, "fused": FusedRolloutBackend}
#: name -> module that registers it on import: known by name (so a config naming it validates on a
#: machine without the engine, e.g. `pefthub plan` of a GPU suite), imported only when used.
LAZY_ROLLOUT_BACKENDS: dict[str, str] = {"vllm": "pefthub.generation.rollout_vllm"}


def backend_names() -> list[str]:
    return sorted(set(ROLLOUT_BACKENDS) | set(LAZY_ROLLOUT_BACKENDS))


def rollout_backend(name: str) -> type[RolloutBackend]:
    if name not in ROLLOUT_BACKENDS and name in LAZY_ROLLOUT_BACKENDS:
        importlib.import_module(LAZY_ROLLOUT_BACKENDS[name])
    try:
        return ROLLOUT_BACKENDS[name]
    except KeyError:
        raise ConfigError(f"trainer_options.rollout_backend: unknown backend {name!r} "
                          f"(known: {', '.join(backend_names())})") from None

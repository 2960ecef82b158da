"""GRPO (Shao et al. 2024, "DeepSeekMath"): group-relative policy optimisation, hand-written.

One optimizer step samples ``budget.generations`` completions per prompt on merged weights, scores
them, and takes one clipped-ratio step (+ optional KL) through the real adapter; the algorithm, the
reasons for a hand-written loop and every departure from the papers are in docs/trainers.md.
Options: DAPO's dynamic sampling (``dynamic_sampling``) and an early stop when the rollouts
degenerate (``stop_on_collapse``, :class:`CollapseWatch`), both documented in docs/trainers.md.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from pefthub.errors import ConfigError
from pefthub.trainers import common
from pefthub.trainers.base import Trainer, OptimizerOptions, TrainingFailure, config_field
from pefthub.trainers.budget import (Budget, Spent, forward_flops, forward_params, lr_scheduler,
                                     train_step_flops, trainable_params)
from pefthub.generation.rollout import Rollouts, auto_backend, backend_names, rollout_backend
from pefthub.trainers.sharded import SINGLE, DataShard

LOSS_TYPES = ("dapo", "grpo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")
CORRECTIONS = ("auto", "none", "tis")


@dataclass
class GRPOAlgorithmOptions(OptimizerOptions):
    """The options of the GRPO algorithm and its optimizer, whatever engine runs it (``grpo``,
    ``trl-grpo``)."""

    temperature: float = config_field(1.0, "sampling temperature for rollouts (log-probs use the same)", above=0)
    loss_type: str = config_field(
        "dapo", "aggregation of per-token losses: 'dapo' (token-level: sum over all tokens / number of tokens; "
                "DAPO, Yu et al. 2025; TRL's and VERL's default), 'grpo' (sequence-level: mean over each "
                "completion, then over completions; the original GRPO), 'dr_grpo' (sum / (completions × "
                "max_new_tokens), a constant normaliser; Dr. GRPO, Liu et al. 2025)", choices=LOSS_TYPES)
    scale_rewards: str = config_field(
        "group", "advantage scaling: 'group' (divide by the group's std, original GRPO), 'batch' (by the "
                 "batch's std), 'none' (no scaling; Dr. GRPO argues std scaling biases towards too-easy and "
                 "too-hard questions)", choices=SCALE_REWARDS)
    beta: float = config_field(0.0, "weight of the KL penalty to the reference (the base model); 0 as in the "
                                    "TinyLoRA paper for GSM8K", min=0)
    kl_bias_correction: bool = config_field(
        False, "multiply the per-token KL by the policy ratio, which makes its gradient the unbiased reverse-KL "
               "gradient (DeepSeek-V3.2; TRL's default); False is the original GRPO k3 penalty (VERL, the paper)")
    epsilon_low: float = config_field(0.2, "lower clip range: ratios below 1 − epsilon_low are clipped", min=0,
                                      below=1)
    epsilon_high: float = config_field(0.2, "upper clip range: ratios above 1 + epsilon_high are clipped "
                                            "(DAPO's clip-higher uses 0.28)", min=0)
    reward: str = config_field("", "reward function name from the reward registry; empty: the task's own")
    micro_batch_size: int = config_field(8, "completions per forward/backward chunk (gradients accumulate "
                                            "over chunks; bounds memory, not the result); 0 = all at once",
                                        min=0)


@dataclass
class GRPOOptions(GRPOAlgorithmOptions):
    """The algorithm's options, and the rollout engine's."""

    rollout_backend: str = config_field(
        "auto", "rollout engine: 'auto' ('fused' where it serves the model and the method merges, else 'hf'), "
                + ", ".join(f"'{n}'" for n in backend_names()) + "; the engine used is in each curve point")
    rollout_correction: str = config_field(
        "auto", "'none' (the training forward's log-probs are the old log-probs), 'tis' (also weight each "
                "token by min(exp(train − rollout log-prob), tis_cap)), 'auto' ('none' for engines whose "
                "numerics match training (hf), else 'tis')", choices=CORRECTIONS)
    tis_cap: float = config_field(2.0, "cap C of the truncated importance weight (Yao et al. 2025 use 2)", min=1)
    dynamic_sampling: bool = config_field(
        False, "DAPO's dynamic sampling (Yu et al. 2025): drop prompts whose completions all got the same reward "
               "and roll out fresh batches of prompts until the step holds budget.batch_size informative groups "
               "or max_sampling_rounds rollouts were spent; the step trains on the informative groups only")
    max_sampling_rounds: int = config_field(
        4, "with dynamic_sampling: at most this many rollouts of budget.batch_size prompts per optimizer step "
           "(the per-step sampling cap)", min=1)
    stop_on_collapse: bool = config_field(
        True, "stop early and record 'collapsed' when the run's own rollouts degenerate for collapse_patience "
              "consecutive steps, measured against its first steps (docs/trainers.md)")
    collapse_patience: int = config_field(5, "consecutive degenerate steps before stop_on_collapse stops the run",
                                          min=1)

    gradient_checkpointing: bool = config_field(
        False, "recompute each decoder layer's activations in the backward pass (transformers' gradient "
               "checkpointing, non-reentrant): less memory, about a third more compute; prompts are then "
               "forwarded with their completions, not shared")

    OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("dynamic_sampling", "max_sampling_rounds", "stop_on_collapse",
                                                    "collapse_patience", "gradient_checkpointing")

    def validate(self) -> None:
        super().validate()
        self._require(self.rollout_backend in ("auto", *backend_names()), "rollout_backend",
                      f"must be one of auto, {', '.join(backend_names())}")
        # A setting that changes nothing must not change the run's identity either.
        self._require(self.dynamic_sampling or self.max_sampling_rounds == _default("max_sampling_rounds"),
                      "max_sampling_rounds", "only applies with dynamic_sampling = true")
        self._require(self.stop_on_collapse or self.collapse_patience == _default("collapse_patience"),
                      "collapse_patience", "only applies with stop_on_collapse = true")



def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(GRPOOptions) if f.name == name)


def check_group_budget(trainer_name: str, budget: Budget) -> None:
    """Raise :class:`ConfigError` for a budget no GRPO engine can use: fewer than 2 completions per
    prompt (no group to compare), or no room left for the prompt."""
    if budget.generations < 2:
        raise ConfigError(f"budget.generations: {trainer_name} needs at least 2 completions per prompt to compare "
                          f"(got {budget.generations})")
    if budget.max_new_tokens >= budget.max_seq_len:
        raise ConfigError(f"budget.max_new_tokens ({budget.max_new_tokens}) must be smaller than "
                          f"budget.max_seq_len ({budget.max_seq_len}): nothing would be left for the prompt")


# ---- the algorithm's pure parts (also what the conformance test checks) ---------------------------
def group_advantages(rewards: torch.Tensor, generations: int, scale_rewards: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, zero-std group flags) for rewards grouped consecutively by prompt.

    advantage = reward − group mean, divided by (std + 1e-4) for 'group'/'batch' scaling (unbiased
    std, as TRL). A group whose rewards are all equal gets advantage exactly 0.
    """
    grouped = rewards.view(-1, generations)
    mean = grouped.mean(dim=1, keepdim=True)
    group_std = grouped.std(dim=1, keepdim=True) if generations > 1 else torch.zeros_like(mean)
    advantages = grouped - mean
    if scale_rewards == "group":
        advantages = advantages / (group_std + 1e-4)
    elif scale_rewards == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        advantages = advantages / (batch_std + 1e-4)
    zero = (grouped == grouped[:, :1]).all(dim=1)
    advantages = advantages.masked_fill(zero[:, None], 0.0)
    return advantages.reshape(-1), zero


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              loss_type: str, epsilon_low: float, epsilon_high: float, max_completion_length: int,
              beta: float = 0.0, ref_logps: torch.Tensor | None = None, is_weights: torch.Tensor | None = None,
              kl_bias_correction: bool = False, total_sequences: int | None = None, total_tokens: float | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The GRPO loss of these rows, and the per-token KL (None when beta = 0).

    ``logps``/``old_logps``/``ref_logps``/``is_weights``/``mask``: (rows, tokens); ``advantages``:
    (rows,). ``total_sequences``/``total_tokens`` are the whole batch's counts when these rows are
    one micro-batch of it (the micro-batch losses then sum to the whole batch's loss); by default
    the rows are the whole batch.
    """
    mask = mask.to(logps.dtype)
    total_sequences = logps.shape[0] if total_sequences is None else total_sequences
    total_tokens = float(mask.sum()) if total_tokens is None else float(total_tokens)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    adv = advantages[:, None]
    per_token = -torch.min(ratio * adv, clipped * adv)
    if is_weights is not None:
        per_token = per_token * is_weights
    kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * (kl * ratio if kl_bias_correction else kl)
    if loss_type == "grpo":
        per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        loss = per_seq.sum() / total_sequences
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / max(total_tokens, 1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (total_sequences * max_completion_length)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return loss, kl


def truncated_importance_weights(train_logps: torch.Tensor, rollout_logps: torch.Tensor, cap: float) -> torch.Tensor:
    """min(π_train / π_rollout, cap) per token (detached): truncated importance sampling."""
    return torch.clamp(torch.exp(train_logps.detach() - rollout_logps), max=cap)


# ---- rewards ---------------------------------------------------------------------------------
def resolve_reward(task: Any, name: str) -> tuple[str, Callable[..., list[float]]]:
    """(name, fn) of the reward function: the named one, else the task's registered one, else
    the task's own scorer (``task.score``) wrapped in TRL's reward signature."""
    from pefthub import plugins

    registry = plugins.rewards()
    if name:
        return name, registry.get(name)
    for candidate in (getattr(task, "reward", None), getattr(task, "reward_name", None), task.name):
        if isinstance(candidate, str) and candidate in registry:
            return candidate, registry.get(candidate)
    return f"{task.name}.score", _score_reward(task)


def _score_reward(task: Any) -> Callable[..., list[float]]:
    def reward(completions: list[str], *, example: list[Any], **_: Any) -> list[float]:
        return [float(task.score(c, ex)) for c, ex in zip(completions, example)]

    return reward


def score_completions(reward_name: str, reward_fn: Callable[..., list[float]], texts: list[str], rows: list[Any],
                      step: int, device: torch.device | str) -> torch.Tensor:
    """Rewards of ``texts`` (one per example in ``rows``) as a float tensor on ``device``; a reward
    function that returns the wrong count, a non-number, NaN or inf fails the run with a one-line error."""
    columns = {"answer": [ex.answer for ex in rows], "question": [ex.question for ex in rows],
               "id": [ex.id for ex in rows], "solution": [ex.solution for ex in rows], "example": rows}
    values = reward_fn(completions=texts, **columns)
    if values is None or len(values) != len(texts):
        got = "None" if values is None else f"{len(values)} values"
        raise TrainingFailure(f"reward function '{reward_name}' returned {got} for {len(texts)} completions")
    try:
        rewards = torch.tensor([float(v) for v in values], dtype=torch.float32, device=device)
    except (TypeError, ValueError):
        raise TrainingFailure(f"reward function '{reward_name}' returned a non-number at step {step}") from None
    if not torch.isfinite(rewards).all():
        raise TrainingFailure(f"reward function '{reward_name}' returned NaN or inf at step {step}")
    return rewards


# ---- dynamic sampling and collapse -------------------------------------------------------------
def round_seed(seed: int, step: int, round_index: int) -> int:
    """The sampling seed of one rollout round of a step: round 0 is the step's own seed (so a run
    without dynamic sampling samples exactly as before), later rounds are offset from it."""
    return (common.step_seed(seed, step) + round_index * 104_729) % 2**63


@dataclass
class StepHealth:
    """What one step's rollouts say about the policy (over every group the step sampled)."""

    reward: float  # mean reward
    zero_share: float  # share of groups whose rewards were all equal
    unanswered_share: float  # share of completions with no extractable answer (no extractor: at the token cap)


class CollapseWatch:
    """Detects a policy whose rollouts degenerate, against the run's own first steps.

    The baseline is the mean of the first :attr:`baseline_steps` steps (the policy nearest the
    starting model). The run is collapsed at step k when, averaged over the ``patience`` steps up
    to k (all after the baseline), its completions stop answering (the unanswered share rose by at
    least :attr:`min_rise` and closed at least :attr:`gap_share` of the gap between the baseline
    and 1), (almost) every group teaches nothing (zero-advantage share at least the baseline's and
    at least :attr:`min_zero_share`) and the reward has not risen (at most the baseline's +
    :attr:`reward_tolerance`). A hard task where few groups carry signal from the start does not
    trigger it: its completions keep answering as they did at the start.
    """

    baseline_steps = 2
    gap_share = 0.5
    min_rise = 0.2
    min_zero_share = 0.75
    reward_tolerance = 0.05

    def __init__(self, patience: int):
        self.patience = patience
        self.history: list[StepHealth] = []

    def observe(self, step: int, health: StepHealth) -> dict | None:
        """Record one step; return the ``stopped_early`` record when the run has collapsed."""
        self.history.append(health)
        if len(self.history) < self.baseline_steps + self.patience:
            return None

        def mean(rows: list[StepHealth], name: str) -> float:
            return sum(getattr(r, name) for r in rows) / len(rows)

        first, recent = self.history[:self.baseline_steps], self.history[-self.patience:]
        u0, z0, r0 = (mean(first, n) for n in ("unanswered_share", "zero_share", "reward"))
        u, z, r = (mean(recent, n) for n in ("unanswered_share", "zero_share", "reward"))
        degenerate = (u >= u0 + max(self.min_rise, self.gap_share * (1.0 - u0))
                      and z >= max(z0, self.min_zero_share) and r <= r0 + self.reward_tolerance)
        if not degenerate:
            return None
        detail = (f"steps {step - self.patience + 1}-{step}: {u:.0%} of completions without an answer (first {self.baseline_steps} steps: {u0:.0%}), {z:.0%} of groups at zero advantage "
                  f"({z0:.0%}), mean reward {r:.3f} ({r0:.3f})")
        return {"reason": "collapsed", "step": step, "detail": detail}


# ---- the trainer -----------------------------------------------------------------------------
class _Reference:
    """Log-probs of the reference policy for the KL term: the model with its peft adapter disabled,
    or (other methods: full FT, BitFit, hand-written adapters) a frozen copy taken before training."""

    def __init__(self, model: nn.Module):
        from peft import PeftModel

        self.model = model
        self.copy = None
        if not isinstance(model, PeftModel):
            self.copy = copy.deepcopy(model).eval()
            for p in self.copy.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int) -> torch.Tensor:
        if self.copy is not None:
            return self.copy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                             logits_to_keep=keep).logits
        with self.model.disable_adapter():
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                              logits_to_keep=keep).logits


class GRPOTrainer(Trainer):
    name = "grpo"
    kind = "grpo"
    options_class = GRPOOptions
    summary = "GRPO: group-relative policy optimisation with rollouts on merged weights"
    #: Leave zero-advantage rows out of the forward/backward when beta = 0 (exact: their loss and
    #: gradient are zero). A class attribute, not an option: it cannot change results.
    skip_zero_advantage_rows = True
    #: Forward each group's prompt once for its completions (:func:`common.completion_logits`); the
    #: same log-probs and gradient up to float rounding. A class attribute so benchmarks can compare.
    share_prompt_forward = True
    #: The share of each step's prompts this process rolls out and trains (pefthub.trainers.sharded sets
    #: it per rank). Sharded, each rank takes whole groups, so advantages stay local except the batch
    #: std of scale_rewards 'batch' (from the gathered rewards); the loss keeps the whole step's
    #: normaliser (sequences and completion tokens summed over ranks); every rank runs as many
    #: micro-batches as the busiest one (zero-weight ones where it has no rows left); curves and the
    #: collapse watch see the whole step's numbers.
    shard: DataShard = SINGLE
    #: Spending each rank counts of its own share only: summed over the ranks at the end.
    reports_steps = True
    spent_per_rank = ("train_flops", "prompts", "prompts_trained", "completions", "tokens_generated",
                      "tokens_trained", "zero_advantage_groups")

    def check_budget(self, budget: Budget) -> None:
        check_group_budget(self.name, budget)

    def run_steps(self, *, model, tokenizer, method, task, budget: Budget, learning_rate: float, seed: int,
                  spent: Spent, curves: list[dict], progress) -> dict | None:
        o: GRPOOptions = self.options
        common.seed_everything(seed)
        reward_name, reward_fn = resolve_reward(task, o.reward)
        rounds_cap = o.max_sampling_rounds if o.dynamic_sampling else 1
        examples = task.examples("train", budget.steps * budget.batch_size * rounds_cap)
        stream = common.BatchStream(examples, budget.batch_size, seed)
        engine = auto_backend(model, method) if o.rollout_backend == "auto" else o.rollout_backend
        backend = rollout_backend(engine)(model, tokenizer, method)
        correction = o.rollout_correction
        if correction == "auto":
            correction = "none" if backend.exact else "tis"
        reference = _Reference(model) if o.beta > 0 else None
        params = common.trainable(model)
        optimizer = common.make_optimizer(model, learning_rate, weight_decay=o.weight_decay,
                                          betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps)
        scheduler = lr_scheduler(optimizer, budget)
        n_forward, n_trainable = forward_params(model), trainable_params(model)
        device = next(model.parameters()).device
        max_prompt = budget.max_seq_len - budget.max_new_tokens
        prompt_cache: dict[str, list[int]] = {}
        watch = CollapseWatch(o.collapse_patience) if o.stop_on_collapse else None
        extract = getattr(task, "extract", None)

        def encode_prompts(batch) -> list[list[int]]:
            out = []
            for ex in batch:
                if ex.id not in prompt_cache:
                    prompt_cache[ex.id] = common.encode(tokenizer, common.render_prompt(tokenizer, task.messages(ex)))
                out.append(prompt_cache[ex.id][-max_prompt:])  # keep the end: the question and turn start
            return out

        try:
            for step in range(1, budget.steps + 1):
                started = time.perf_counter()
                # Roll out batches of prompts; without dynamic sampling exactly one, whose groups all
                # train. With it, keep only informative groups (rewards not all equal) and roll out
                # fresh prompts until batch_size of them are kept or the per-step cap is reached.
                parts: list[tuple[Rollouts, list[Any], torch.Tensor]] = []  # (rows kept, their prompts, rewards)
                kept = rounds = sampled_prompts = n_zero = tokens = unanswered = capped = 0
                all_rewards = []
                while True:
                    batch = self.shard.take(next(stream))
                    with spent.timing("generation"), self.shard.full_weights(model):
                        rollouts = backend.generate(encode_prompts(batch), generations=budget.generations,
                                                    max_new_tokens=budget.max_new_tokens, temperature=o.temperature,
                                                    seed=round_seed(seed, step, rounds))
                    rounds += 1
                    if correction == "tis" and rollouts.logprobs is None:
                        raise ConfigError(f"rollout_correction 'tis' needs log-probs from the rollout backend, "
                                          f"and '{engine}' reports none")
                    spent.train_flops += forward_flops(n_forward, rollouts.positions_computed)
                    with spent.timing("train"):
                        rewards = self._rewards(reward_name, reward_fn, rollouts, batch, budget.generations, step)
                    _, zero_groups = group_advantages(rewards, budget.generations, o.scale_rewards)
                    lengths = rollouts.completion_mask.sum(1)
                    at_cap = lengths >= budget.max_new_tokens
                    # No extractable answer; for a task that cannot say, running to the token cap.
                    no_answer = (torch.tensor([extract(t) is None for t in rollouts.texts], dtype=torch.bool,
                                              device=lengths.device) if extract is not None else at_cap)
                    sampled_prompts += len(batch)
                    n_zero += int(zero_groups.sum())
                    tokens += int(lengths.sum())
                    capped += int(at_cap.sum())
                    unanswered += int(no_answer.sum())
                    spent.completions += rollouts.size
                    all_rewards.append(rewards)
                    if not o.dynamic_sampling:
                        parts.append((rollouts, batch, rewards))
                        kept = len(batch)
                        break
                    groups = (~zero_groups).nonzero().flatten()[:budget.batch_size - kept].tolist()
                    if groups:
                        rows = torch.tensor([g * budget.generations + j for g in groups
                                             for j in range(budget.generations)], device=rewards.device)
                        parts.append((rollouts.take(rows), [batch[g] for g in groups], rewards[rows]))
                        kept += len(groups)
                    if kept >= budget.batch_size or rounds >= rounds_cap:
                        break
                with spent.timing("train"):
                    advantages = torch.zeros(0, device=device)
                    if parts:  # sharded: from the whole step's rewards (the batch std), this rank's share kept
                        step_rewards = self.shard.gather(torch.cat([r for _, _, r in parts]))
                        advantages = self.shard.take(group_advantages(step_rewards, budget.generations,
                                                                      o.scale_rewards)[0])
                    row_stats = self._optimise_parts(model, method, reference, parts, advantages, correction,
                                                     budget, n_forward, n_trainable, spent)
                    if row_stats["rows"] == 0:  # every row skipped: zero gradient; AdamW steps as without the skip
                        for p in params:
                            p.grad = torch.zeros_like(p)
                    lr = optimizer.param_groups[0]["lr"]
                    grad_norm = common.grad_norm_and_clip(params, o.max_grad_norm)
                    common.require_finite(row_stats["loss"], "loss", step)
                    common.require_finite(grad_norm, "gradient norm", step)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    backend.sync()
                spent.tokens_generated += tokens
                spent.zero_advantage_groups += n_zero
                rewards = self.shard.gather(torch.cat(all_rewards))
                completions = rewards.numel()
                n_zero, tokens, capped, unanswered = (int(v) for v in self.shard.totals([n_zero, tokens, capped,
                                                                                         unanswered]))
                spent.optimizer_steps += 1
                spent.prompts += sampled_prompts
                spent.prompts_trained += kept
                grouped = rewards.view(-1, budget.generations)
                point = {
                    "step": step, "lr": lr, "loss": row_stats["loss"], "reward": float(rewards.mean()),
                    "reward_std": float(grouped.std(dim=1).mean()), "kl": row_stats["kl"],
                    "entropy": row_stats["entropy"], "logprob_gap": row_stats["logprob_gap"],
                    "grad_norm": grad_norm, "seconds": time.perf_counter() - started,
                    "zero_advantage_groups": n_zero, "trained_completions": row_stats["rows"],
                    "completion_length": tokens / completions,
                    "clip_ratio": row_stats["clip_ratio"], "rollout_backend": engine,
                    "capped_completions": capped, "unanswered_completions": unanswered,
                }
                if o.dynamic_sampling:
                    point.update(sampling_rounds=rounds, prompts_sampled=sampled_prompts, prompts_trained=kept)
                curves.append(point)
                if progress is not None:
                    progress({"phase": "train", "step": step, "steps": budget.steps, "reward": point["reward"],
                              "loss": point["loss"]})
                self.step_done(step)
                if watch is not None:
                    stop = watch.observe(step, StepHealth(reward=point["reward"], zero_share=n_zero / len(grouped),
                                                          unanswered_share=unanswered / completions))
                    if stop is not None:
                        return stop
        finally:
            backend.close()
        return None

    def _optimise_parts(self, model, method, reference, parts, advantages: torch.Tensor, correction: str,
                        budget: Budget, n_forward: int, n_trainable: int, spent: Spent) -> dict[str, Any]:
        """:meth:`_optimise` over rollouts kept from several rounds: each part keeps the padding it
        was sampled with (prompt tuning's output depends on it); the loss is normalised over all parts."""
        if len(parts) == 1:
            return self._optimise(model, method, reference, parts[0][0], advantages, correction, budget,
                                  n_forward, n_trainable, spent)
        total_sequences = sum(ro.size for ro, _, _ in parts)
        total_tokens = float(sum(ro.completion_mask.sum() for ro, _, _ in parts))
        out: dict[str, Any] = {"loss": 0.0, "rows": 0, "tokens": 0.0}
        sums = {"kl": 0.0, "entropy": 0.0, "logprob_gap": 0.0, "clip_ratio": 0.0}
        seen = {name: 0.0 for name in sums}
        offset = 0
        for ro, _, _ in parts:
            stats = self._optimise(model, method, reference, ro, advantages[offset:offset + ro.size], correction,
                                   budget, n_forward, n_trainable, spent, total_sequences=total_sequences,
                                   total_tokens=total_tokens)
            offset += ro.size
            out["loss"] += stats["loss"]
            out["rows"] += stats["rows"]
            out["tokens"] += stats["tokens"]
            for name in sums:
                if stats[name] is not None:
                    sums[name] += stats[name] * stats["tokens"]
                    seen[name] += stats["tokens"]
        for name in sums:
            out[name] = sums[name] / seen[name] if seen[name] else None
        return out

    @staticmethod
    def _rewards(reward_name: str, reward_fn, rollouts: Rollouts, batch, generations: int, step: int) -> torch.Tensor:
        rows = [ex for ex in batch for _ in range(generations)]
        return score_completions(reward_name, reward_fn, rollouts.texts, rows, step, rollouts.completion_ids.device)

    def _optimise(self, model, method, reference, ro: Rollouts, advantages: torch.Tensor, correction: str,
                  budget: Budget, n_forward: int, n_trainable: int, spent: Spent, *,
                  total_sequences: int | None = None, total_tokens: float | None = None) -> dict[str, Any]:
        """Forward/backward over the rows that carry gradient, in micro-batches; gradients accumulate.
        ``total_sequences``/``total_tokens``: the whole step's counts when ``ro`` is a part of it."""
        o: GRPOOptions = self.options
        # Sharded, ``ro`` is this rank's share and every rank's share is as large: the whole step's counts.
        total_sequences = ro.size * self.shard.world_size if total_sequences is None else total_sequences
        total_tokens = self.shard.total(float(ro.completion_mask.sum())) if total_tokens is None else total_tokens
        rows = torch.arange(ro.size, device=ro.completion_ids.device)
        if o.beta == 0.0 and self.skip_zero_advantage_rows:  # zero loss and gradient: skip them
            rows = rows[advantages != 0]
        chunk = o.micro_batch_size or max(1, len(rows))
        loss_total, kl_sum, ent_sum, gap_sum, clip_sum, tokens_seen = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
        model.train()
        # Sharded, every rank runs as many forward/backward passes as the busiest (FSDP's collectives).
        passes = self.shard.maximum(-(-len(rows) // chunk))
        for start in range(0, passes * chunk, chunk):
            idx = rows[start:start + chunk]
            dummy = len(idx) == 0  # this rank has no rows left: a zero-weight pass over its first row
            if dummy:
                idx = torch.zeros(1, dtype=torch.long, device=ro.completion_ids.device)
            c_mask = ro.completion_mask[idx]
            width = int(c_mask.sum(1).max())  # drop all-padding completion columns
            p_mask = ro.prompt_mask[idx]
            # Drop all-padding prompt columns, except for a method that rewrites the input (prompt
            # tuning): peft puts its virtual tokens before the left padding, so the padding's width
            # changes what a row computes, and the rollout was sampled with the whole batch's.
            first = int((p_mask.sum(0) > 0).nonzero()[0]) if common.uses_default_forward(method) else 0
            completion = ro.completion_ids[idx, :width]
            c_mask = c_mask[:, :width]
            prompt_ids, prompt_mask = ro.prompt_ids[idx, first:], p_mask[:, first:]
            logits, positions = common.completion_logits(
                method, model, prompt_ids, prompt_mask, completion, c_mask,
                share=self.share_prompt_forward and not o.gradient_checkpointing)  # see base.gradient_checkpointing
            logps = common.token_logprobs(logits, completion, o.temperature)
            old = logps.detach()
            rollout_logps = ro.logprobs[idx, :width] if ro.logprobs is not None else None
            is_weights = None
            if correction == "tis":  # run_steps checked that the engine reported log-probs
                is_weights = truncated_importance_weights(old, rollout_logps, o.tis_cap)
            ref_logps = None
            if reference is not None:
                input_ids = torch.cat([prompt_ids, completion], dim=1)
                attention = torch.cat([prompt_mask, c_mask], dim=1)
                ref_logits = reference.logits(input_ids, attention, width + 1)[:, :-1]
                ref_logps = common.token_logprobs(ref_logits, completion, o.temperature)
                del ref_logits
                spent.train_flops += forward_flops(n_forward, input_ids.numel())
            loss, kl = grpo_loss(logps, old, advantages[idx], c_mask, loss_type=o.loss_type,
                                 epsilon_low=o.epsilon_low, epsilon_high=o.epsilon_high,
                                 max_completion_length=budget.max_new_tokens, beta=o.beta, ref_logps=ref_logps,
                                 is_weights=is_weights, kl_bias_correction=o.kl_bias_correction,
                                 total_sequences=total_sequences, total_tokens=total_tokens)
            if dummy:
                loss = loss * 0.0
            loss.backward()
            m = c_mask.float()
            if dummy:
                m = torch.zeros_like(m)
            n_tokens = float(m.sum())
            loss_total += float(loss.detach())
            ent_sum += float((common.token_entropy(logits, o.temperature) * m).sum())
            if kl is not None:
                kl_sum += float((kl.detach() * m).sum())
            if rollout_logps is not None:
                gap_sum += float(((old - rollout_logps).abs() * m).sum())
            ratio = torch.exp(logps.detach() - old)  # 1 on-policy; kept for engines that reuse rollouts
            clip_sum += float((((ratio < 1 - o.epsilon_low) | (ratio > 1 + o.epsilon_high)).float() * m).sum())
            tokens_seen += n_tokens
            spent.tokens_trained += int(n_tokens)
            spent.train_flops += train_step_flops(n_forward, n_trainable, positions)
            del logits, logps, loss
        # Sharded: the whole step's sums.
        loss_total, kl_sum, ent_sum, gap_sum, clip_sum, tokens_seen, n_rows = self.shard.totals(
            [loss_total, kl_sum, ent_sum, gap_sum, clip_sum, tokens_seen, len(rows)])
        seen = max(tokens_seen, 1.0)
        return {
            "loss": loss_total, "rows": int(n_rows), "tokens": tokens_seen,
            "kl": (kl_sum / seen if tokens_seen else 0.0) if o.beta > 0 else None,
            "entropy": ent_sum / seen if tokens_seen else None,
            "logprob_gap": gap_sum / seen if tokens_seen and ro.logprobs is not None else None,
            "clip_ratio": clip_sum / seen if tokens_seen else None,
        }

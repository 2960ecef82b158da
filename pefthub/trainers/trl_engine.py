"""TRL-backed trainers, ``trl-sft`` and ``trl-grpo``: the same budgets run through TRL's
``SFTTrainer`` and ``GRPOTrainer`` instead of pefthub's own loops.

What they are for: a cross-check. A result that holds under ``grpo`` and ``trl-grpo`` does not
depend on pefthub's implementation of the algorithm. They take the model already adapted by the
method (TRL never builds the adapter; the same trainable parameters train), the examples in the
order pefthub's seeded :class:`~pefthub.trainers.common.BatchStream` draws them (TRL's own shuffling
off), the budget's steps, batch, generations, token limits and schedule, and the same AdamW
settings. TRL's default gradient checkpointing stays on unless the options turn it off. The
built-in trainers stay the default: they are faster and leaner, measured side by side with these
engines by ``benchmarks/test_train_speed.py`` (figures in docs/performance.md).

What is measured, not taken from TRL's logs alone:

* ``seconds_generation`` is the wall time of TRL's ``_generate`` (tokenise, ``generate``, decode);
  everything else of a step is ``seconds_train``;
* ``tokens_generated`` counts the completion ids ``_generate`` returns; ``tokens_trained`` counts
  the completion tokens inside the loss (GRPO: every completion; SFT: the labels that are not
  masked);
* ``train_flops`` follows :mod:`pefthub.trainers.budget`'s formula over the positions the model
  actually computed, counted by a hook on the transformers model (no-grad positions: 2·N; with
  gradients: 4·N + 2·T);
* a non-finite gradient norm stops the run before the optimizer applies it (``status="failed"``).

Departures from the built-in trainers, because TRL 1.16 works this way (docs/trainers.md):

* GRPO samples with transformers' ``generate`` through the *unmerged* adapter, so a rollout costs
  the adapter's extra compute; there is no rollout-engine choice and no truncated importance
  sampling (the sampler and the training forward are the same computation);
* TRL cannot cut prompts, so a prompt longer than ``max_seq_len − max_new_tokens`` is refused
  before training rather than cut from the left;
* SFT cuts an over-long example from the end (TRL's ``keep_start``) where ``sft`` cuts the prompt
  from the left and the target from the right; examples that fit are encoded identically;
* the logged learning rate is the one the optimizer step used (read before the step), as ``sft``
  and ``grpo`` log it; TRL's own log shows the next step's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from pefthub.errors import ConfigError
from pefthub.models import base_model
from pefthub.trainers import common
from pefthub.trainers.base import Trainer, TrainingFailure, config_field
from pefthub.trainers.budget import Budget, Spent, forward_flops, forward_params, train_step_flops, trainable_params
from pefthub.trainers.grpo import GRPOAlgorithmOptions, check_group_budget, resolve_reward, score_completions
from pefthub.trainers.sft import SFTOptions, sft_target

#: Budget schedules as transformers' scheduler names (the built-in trainers use the same ones).
SCHEDULER_NAMES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def import_trl(*names: str) -> tuple[Any, ...]:
    """``trl``'s ``names``, imported without its warnings about the installed vLLM's version: TRL's
    vLLM paths are never used by these engines (pefthub's own ``vllm`` rollout backend talks to
    vLLM). TRL imports lazily, so the names are resolved inside the filter too."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM versions")
        import trl

        return tuple(getattr(trl, name) for name in names)


GRADIENT_CHECKPOINTING_HELP = ("recompute activations during the backward pass, as TRL does by default: less memory, "
                                "more time, the same results")


@dataclass
class TRLSFTOptions(SFTOptions):
    """``sft``'s options, and TRL's gradient checkpointing."""

    gradient_checkpointing: bool = config_field(True, GRADIENT_CHECKPOINTING_HELP)


@dataclass
class TRLGRPOOptions(GRPOAlgorithmOptions):
    """The options of ``grpo`` that TRL's GRPOTrainer can honour (all but the rollout engine's), with
    the same names and meaning, and TRL's gradient checkpointing. ``micro_batch_size`` becomes TRL's
    per-device batch, so it must divide the step's batch_size × generations."""

    gradient_checkpointing: bool = config_field(True, GRADIENT_CHECKPOINTING_HELP)


# ---- accounting shared by both engines --------------------------------------------------------
class PositionCounter:
    """Counts the positions the transformers model computes, with and without gradients, through a
    forward pre-hook (``input_ids`` or ``inputs_embeds``; a cached decode step is one position)."""

    def __init__(self, model: torch.nn.Module):
        self.no_grad = 0
        self.with_grad = 0
        self._handle = base_model(model).register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        if x is None:
            return
        positions = int(x.shape[0]) * int(x.shape[1]) if x.dim() >= 2 else int(x.numel())
        if torch.is_grad_enabled():
            self.with_grad += positions
        else:
            self.no_grad += positions

    def close(self) -> None:
        self._handle.remove()


def _step_callback(budget: Budget, spent: Spent, curves: list[dict], progress, engine: str):
    """A transformers ``TrainerCallback`` turning TRL's steps and logs into pefthub's curves and
    spending, and refusing a non-finite gradient before the optimizer applies it."""
    from transformers import TrainerCallback

    class StepAccounting(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.lr: float | None = None
            self.seconds = 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            self.started = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kw):
            norm = common.grad_norm_and_clip(common.trainable(model), 0.0)  # 0: measure, do not clip again
            common.require_finite(norm, "gradient norm", state.global_step + 1)
            self.lr = float(optimizer.param_groups[0]["lr"])

        def on_step_end(self, args, state, control, **kw):
            spent.optimizer_steps += 1
            self.seconds = time.perf_counter() - self.started

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            if "loss" not in logs:  # the end-of-training summary
                return
            step = state.global_step
            loss = float(logs["loss"])
            common.require_finite(loss, "loss", step)
            point = {"step": step, "lr": self.lr, "loss": loss, "grad_norm": _number(logs.get("grad_norm")),
                     "seconds": self.seconds}
            if engine == "trl-grpo":
                frac_zero = _number(logs.get("frac_reward_zero_std"))
                zero_groups = round(frac_zero * budget.batch_size) if frac_zero is not None else 0
                spent.zero_advantage_groups += zero_groups
                point.update({
                    "reward": _number(logs.get("reward")), "reward_std": _number(logs.get("reward_std")),
                    "kl": _number(logs.get("kl")), "entropy": _number(logs.get("entropy")),
                    "logprob_gap": None, "zero_advantage_groups": zero_groups,
                    "trained_completions": budget.batch_size * budget.generations,
                    "completion_length": _number(logs.get("completions/mean_length")),
                    "clip_ratio": _number(logs.get("clip_ratio/region_mean")), "rollout_backend": "trl-generate",
                })
            curves.append(point)
            if progress is not None:
                event = {"phase": "train", "step": step, "steps": budget.steps, "loss": loss}
                if "reward" in point:
                    event["reward"] = point["reward"]
                progress(event)

    return StepAccounting()


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _args(budget: Budget, learning_rate: float, seed: int, options, model, out_dir: str, per_device: int,
          accumulation: int) -> dict[str, Any]:
    """The transformers ``TrainingArguments`` both engines share; mixed precision as the run's (the
    runner trains under autocast in its compute dtype; the fp32 trainable parameters do not tell it)."""
    device = next(model.parameters()).device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else torch.float32
    return dict(
        output_dir=out_dir, max_steps=budget.steps, per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation, learning_rate=learning_rate,
        lr_scheduler_type=SCHEDULER_NAMES[budget.schedule], warmup_steps=budget.warmup_steps,
        max_grad_norm=options.max_grad_norm, weight_decay=options.weight_decay, adam_beta1=options.adam_beta1,
        adam_beta2=options.adam_beta2, adam_epsilon=options.adam_eps, optim="adamw_torch", seed=seed,
        data_seed=seed, shuffle_dataset=False, train_sampling_strategy="sequential", report_to=[],
        save_strategy="no", logging_steps=1, logging_nan_inf_filter=False, disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=device.type == "cpu", bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16, gradient_checkpointing=options.gradient_checkpointing, log_level="error")


def _split(total: int, micro: int, field_name: str, trainer: str) -> tuple[int, int]:
    """(per-device batch, accumulation steps) for ``total`` rows per optimizer step in chunks of ``micro``."""
    micro = min(micro or total, total)
    if total % micro:
        raise ConfigError(f"trainer_options.micro_batch_size: {trainer} needs it to divide {field_name} "
                          f"({total}); got {micro}")
    return micro, total // micro


class _TRLTrainer(Trainer):
    """What both TRL engines share: a scratch output directory and the position counter."""

    def _run(self, build, model, spent: Spent, n_forward: int, n_trainable: int, steps: int) -> None:
        out_dir = tempfile.mkdtemp(prefix=f"pefthub-{self.name}-")
        counter = PositionCounter(model)
        try:
            from transformers.trainer_callback import PrinterCallback, ProgressCallback

            with _quiet_datasets():  # TRL's dataset preparation draws progress bars of its own
                trainer = build(out_dir)
            for printer in (PrinterCallback, ProgressCallback):  # pefthub reports progress itself
                trainer.remove_callback(printer)
            trainer.train()
            if spent.optimizer_steps != steps:  # a budget not honoured is a failed run, never a silent success
                raise TrainingFailure(f"{self.name} ran {spent.optimizer_steps} of the budget's {steps} optimizer "
                                      "steps (TRL ended training early)")
        finally:
            counter.close()
            shutil.rmtree(out_dir, ignore_errors=True)
            if self.options.gradient_checkpointing:  # leave the model as it came: no checkpointing hooks
                inner = base_model(model)
                inner.gradient_checkpointing_disable()
                inner.disable_input_require_grads()
            spent.train_flops += (forward_flops(n_forward, counter.no_grad)
                                  + train_step_flops(n_forward, n_trainable, counter.with_grad))


class TRLSFTTrainer(_TRLTrainer):
    name = "trl-sft"
    kind = "sft"
    options_class = TRLSFTOptions
    summary = "SFT through TRL's SFTTrainer (cross-check engine; same budget, examples and options as sft)"

    def run_steps(self, *, model, tokenizer, method, task, budget: Budget, learning_rate: float, seed: int,
                  spent: Spent, curves: list[dict], progress) -> None:
        from datasets import Dataset
        SFTConfig, SFTTrainer = import_trl("SFTConfig", "SFTTrainer")

        o: TRLSFTOptions = self.options
        per_device, accumulation = _split(budget.batch_size, o.micro_batch_size, "batch_size", self.name)
        common.seed_everything(seed)
        rows = [{"prompt": task.messages(ex), "completion": [{"role": "assistant", "content": sft_target(task, ex)}]}
                for ex in common.examples_in_order(task, budget.steps, budget.batch_size, seed)]

        class CountingSFTTrainer(SFTTrainer):
            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                spent.tokens_trained += int((inputs["labels"][:, 1:] != -100).sum())
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)

        callback = _step_callback(budget, spent, curves, progress, self.name)

        def build(out_dir: str):
            args = SFTConfig(max_length=budget.max_seq_len, packing=False, completion_only_loss=True,
                             **_args(budget, learning_rate, seed, o, model, out_dir, per_device, accumulation))
            return CountingSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                      processing_class=tokenizer, callbacks=[callback])

        with spent.timing("train"):
            self._run(build, model, spent, forward_params(model), trainable_params(model), budget.steps)
        spent.examples += budget.batch_size * spent.optimizer_steps


class TRLGRPOTrainer(_TRLTrainer):
    name = "trl-grpo"
    kind = "grpo"
    options_class = TRLGRPOOptions
    summary = "GRPO through TRL's GRPOTrainer (cross-check engine; rollouts by generate on the unmerged adapter)"

    def check_budget(self, budget: Budget) -> None:
        check_group_budget(self.name, budget)

    def run_steps(self, *, model, tokenizer, method, task, budget: Budget, learning_rate: float, seed: int,
                  spent: Spent, curves: list[dict], progress) -> None:
        from datasets import Dataset
        from peft import PeftModel
        GRPOConfig, GRPOTrainer = import_trl("GRPOConfig", "GRPOTrainer")

        o: TRLGRPOOptions = self.options
        if o.beta > 0 and not isinstance(model, PeftModel):
            path = getattr(base_model(model).config, "_name_or_path", "")
            if not os.path.isdir(path):
                raise ConfigError(f"{self.name}: beta > 0 with method '{method.name}' makes TRL load a reference "
                                  f"copy of the model from its path, and {path!r} is not a local directory; "
                                  f"use trainer 'grpo'")
        rows_per_step = budget.batch_size * budget.generations
        per_device, accumulation = _split(rows_per_step, o.micro_batch_size, "batch_size × generations", self.name)
        common.seed_everything(seed)
        examples = common.examples_in_order(task, budget.steps, budget.batch_size, seed)
        max_prompt = budget.max_seq_len - budget.max_new_tokens
        for ex in examples:
            length = len(common.encode(tokenizer, common.render_prompt(tokenizer, task.messages(ex))))
            if length > max_prompt:
                raise ConfigError(f"{self.name} cannot cut prompts: example {ex.id} has {length} prompt tokens, more "
                                  f"than budget.max_seq_len − budget.max_new_tokens = {max_prompt}")
        reward_name, reward_fn = resolve_reward(task, o.reward)

        def reward(completions, row, **_):
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            scores = score_completions(reward_name, reward_fn, texts, [examples[i] for i in row],
                                       spent.optimizer_steps + 1, "cpu")  # TRL takes a list
            return scores.tolist()

        reward.__name__ = reward_name

        class MeteredGRPOTrainer(GRPOTrainer):
            def _generate(self, prompts):
                with spent.timing("generation"):
                    out = super()._generate(prompts)
                completion_ids = out[1]
                spent.completions += len(completion_ids)
                spent.tokens_generated += sum(len(c) for c in completion_ids)
                spent.tokens_trained += sum(len(c) for c in completion_ids)
                return out

        callback = _step_callback(budget, spent, curves, progress, self.name)

        def build(out_dir: str):
            args = GRPOConfig(
                num_generations=budget.generations, max_completion_length=budget.max_new_tokens,
                temperature=o.temperature, top_p=1.0, top_k=0, loss_type=o.loss_type,
                scale_rewards=o.scale_rewards, beta=o.beta, use_bias_correction_kl=o.kl_bias_correction,
                epsilon=o.epsilon_low, epsilon_high=o.epsilon_high, num_iterations=1,
                steps_per_generation=accumulation, mask_truncated_completions=False,
                **_args(budget, learning_rate, seed, o, model, out_dir, per_device, accumulation))
            data = Dataset.from_list([{"prompt": task.messages(ex), "row": i} for i, ex in enumerate(examples)])
            return MeteredGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                                      processing_class=tokenizer, callbacks=[callback])

        started = time.perf_counter()
        generation_before = spent.seconds_generation
        try:
            self._run(build, model, spent, forward_params(model), trainable_params(model), budget.steps)
        finally:
            spent.seconds_train += time.perf_counter() - started - (spent.seconds_generation - generation_before)
            spent.prompts += budget.batch_size * spent.optimizer_steps
            spent.prompts_trained += budget.batch_size * spent.optimizer_steps


__all__ = ["TRLSFTTrainer", "TRLSFTOptions", "TRLGRPOTrainer", "TRLGRPOOptions", "PositionCounter"]

"""Supervised fine-tuning on the task's worked solutions: a lean, hand-written loop.

Each optimizer step trains ``budget.batch_size`` examples with next-token cross-entropy on the
target tokens only; the step and why it is hand-written rather than TRL's are in docs/trainers.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from pefthub.devices import model_device
from pefthub.errors import ConfigError
from pefthub.trainers import common
from pefthub.trainers.base import Trainer, OptimizerOptions, config_field
from pefthub.trainers.budget import Budget, Spent, forward_params, lr_scheduler, train_step_flops, \
    trainable_params
from pefthub.trainers.sharded import SINGLE, DataShard

IGNORE = -100


@dataclass
class SFTOptions(OptimizerOptions):
    micro_batch_size: int = config_field(8, "examples per forward/backward chunk (gradients accumulate over "
                                            "chunks; bounds memory, not the result); 0 = all at once",
                                        min=0)
    gradient_checkpointing: bool = config_field(
        False, "recompute each decoder layer's activations in the backward pass (transformers' gradient "
               "checkpointing, non-reentrant): less memory, about a third more compute; the shared opening is "
               "then forwarded with every row")

    OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("gradient_checkpointing",)


def sft_target(task, example) -> str:
    """The worked solution SFT trains on; a task without one for ``example`` is a one-line error."""
    target = task.target(example)
    if not target:
        raise ConfigError(f"task '{task.name}' gives no SFT target for example {example.id}")
    return target


def encode_example(tokenizer, task, example, max_seq_len: int) -> tuple[list[int], list[int]]:
    """(prompt ids, target ids) of one example, cut to ``max_seq_len`` (prompt from the left,
    target from the right; at least one target token survives)."""
    target = sft_target(task, example)
    prompt_text, completion_text = common.render_completion(tokenizer, task.messages(example), target)
    prompt = common.encode(tokenizer, prompt_text)
    completion = common.encode(tokenizer, completion_text)
    room_for_prompt = max(1, max_seq_len - len(completion))
    prompt = prompt[-room_for_prompt:]
    completion = completion[: max(1, max_seq_len - len(prompt))]
    return prompt, completion


def pad_batch(pairs: list[tuple[list[int], list[int]]], pad_id: int,
              device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, attention_mask, labels) on ``device``; labels are -100 on prompt and
    padding. Built on the host and copied once (one transfer, not one per row)."""
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long, device="cpu")
    attention = torch.zeros((len(pairs), width), dtype=torch.long, device="cpu")
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long, device="cpu")
    for i, (p, c) in enumerate(pairs):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c, dtype=torch.long, device="cpu")
        attention[i, :n] = 1
        labels[i, len(p):n] = torch.tensor(c, dtype=torch.long, device="cpu")
    return ids.to(device), attention.to(device), labels.to(device)


class SFTTrainer(Trainer):
    name = "sft"
    kind = "sft"
    options_class = SFTOptions
    summary = "Supervised fine-tuning on the task's worked solutions (completion-only loss)"
    #: Forward the opening every row shares once (:func:`common.prefix_shared_tail_logits`); the same
    #: loss and gradient up to float rounding. A class attribute so benchmarks can compare.
    share_prefix_forward = True
    #: The share of each batch this process trains (pefthub.trainers.sharded sets it per rank).
    shard: DataShard = SINGLE
    reports_steps = True

    def run_steps(self, *, model, tokenizer, method, task, budget: Budget, learning_rate: float, seed: int,
                  spent: Spent, curves: list[dict], progress) -> None:
        o: SFTOptions = self.options
        common.seed_everything(seed)
        examples = task.examples("train", budget.steps * budget.batch_size)
        stream = common.BatchStream(examples, budget.batch_size, seed)
        params = common.trainable(model)
        optimizer = common.make_optimizer(model, learning_rate, weight_decay=o.weight_decay,
                                          betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps)
        scheduler = lr_scheduler(optimizer, budget)
        n_forward, n_trainable = forward_params(model), trainable_params(model)
        device = model_device(model)
        share = self.share_prefix_forward and not o.gradient_checkpointing  # see base.gradient_checkpointing
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        encoded: dict[str, tuple[list[int], list[int]]] = {}
        model.train()
        for step in range(1, budget.steps + 1):
            started = time.perf_counter()
            with spent.timing("train"):
                batch = next(stream)
                pairs = []
                for ex in batch:
                    if ex.id not in encoded:
                        encoded[ex.id] = encode_example(tokenizer, task, ex, budget.max_seq_len)
                    pairs.append(encoded[ex.id])
                total_targets = sum(len(c) for _, c in pairs)  # the whole batch's, on every rank
                pairs = self.shard.take(pairs)
                chunk = o.micro_batch_size or len(pairs)
                loss_total = 0.0
                for start in range(0, len(pairs), chunk):
                    part = pairs[start:start + chunk]
                    ids, attention, labels = pad_batch(part, pad_id, device)
                    # Positions before the first target token of the chunk predict nothing: skip their LM head.
                    first_target = min(len(p) for p, _ in part)
                    keep = ids.shape[1] - first_target + 1
                    logits, positions = common.prefix_shared_tail_logits(method, model, ids, attention, keep,
                                                                         share=share)
                    logits = logits[:, :-1]
                    targets = labels[:, ids.shape[1] - keep + 1:]
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                           ignore_index=IGNORE, reduction="sum") / total_targets
                    loss.backward()
                    loss_total += float(loss.detach())
                    spent.train_flops += train_step_flops(n_forward, n_trainable, positions)
                    del logits, loss
                lr = optimizer.param_groups[0]["lr"]
                grad_norm = common.grad_norm_and_clip(params, o.max_grad_norm)
                loss_total = self.shard.total(loss_total)
                common.require_finite(loss_total, "loss", step)
                common.require_finite(grad_norm, "gradient norm", step)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            spent.optimizer_steps += 1
            spent.examples += len(batch)
            spent.tokens_trained += total_targets
            point = {"step": step, "lr": lr, "loss": loss_total, "grad_norm": grad_norm,
                     "tokens": total_targets, "seconds": time.perf_counter() - started}
            curves.append(point)
            if progress is not None:
                progress({"phase": "train", "step": step, "steps": budget.steps, "loss": loss_total})
            self.step_done(step)


__all__ = ["SFTTrainer", "SFTOptions"]

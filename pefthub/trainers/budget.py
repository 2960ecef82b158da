"""Matched budgets: what every method gets (:class:`Budget`) and what a run actually used (:class:`Spent`).

Methods compared under one budget differ only in their own parameters and their learning rate:
same optimizer steps, same prompts (or examples) per step, same generations per prompt, same
token limits and the same learning-rate schedule shape.

FLOP estimate (``Spent.train_flops``; attention FLOPs, norms and the softmax are ignored):

* ``N`` = parameters that take part in a forward matmul: every parameter of the model except the
  input-embedding table (a lookup is free), but including the LM head even when it is tied to it.
* Forward pass without gradients (rollout prefill and decode, reference or old-log-prob passes):
  ``2·N`` per position computed.
* Forward + backward: ``2·N`` (forward) + ``2·N`` (gradients with respect to activations, needed
  through every layer because every method has parameters in the first layer) + ``2·T`` (gradients
  with respect to the ``T`` trainable parameters) per position. Full fine-tuning gives the familiar
  ``6·N``; an adapter with few parameters costs about ``4·N``, because the frozen weights need no
  weight gradient.
* Positions are counted as computed, padding included: that is the work the machine did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from pefthub.errors import ConfigError

SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class Budget:
    """What every method gets in a comparison (the ``budget`` object of a result's config)."""

    steps: int = field(default=20, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=8, metadata={
        "help": "per optimizer step: prompts (RL; each sampled `generations` times) or training examples (SFT)"})
    generations: int = field(default=4, metadata={"help": "completions sampled per prompt (RL)"})
    max_new_tokens: int = field(default=64, metadata={"help": "longest completion sampled per rollout (RL)"})
    max_seq_len: int = field(default=384, metadata={
        "help": "longest prompt + completion in tokens; longer prompts are cut from the left, longer SFT "
                "targets from the right"})
    schedule: str = field(default="constant", metadata={
        "help": "learning-rate shape after warmup: constant, cosine (to 0) or linear (to 0)"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "share of steps with linear warmup from 0, in [0, 1)"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "generations", "max_new_tokens", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"budget.{name}: must be a positive integer (got {value!r})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"budget.schedule: must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if (not isinstance(self.warmup_ratio, (int, float)) or isinstance(self.warmup_ratio, bool)
                or not 0.0 <= self.warmup_ratio < 1.0):
            raise ConfigError(f"budget.warmup_ratio: must be a number in [0, 1) (got {self.warmup_ratio!r})")
        self.warmup_ratio = float(self.warmup_ratio)

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_ratio * self.steps))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Budget":
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"budget: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**data)

    @classmethod
    def field_help(cls) -> list[tuple[str, str, Any]]:
        return [(f.name, f.metadata.get("help", ""), f.default) for f in dataclasses.fields(cls)]


def lr_scheduler(optimizer, budget: Budget):
    """The budget's schedule as a torch LR scheduler (transformers' standard warmup schedules)."""
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}[budget.schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=budget.warmup_steps, num_training_steps=budget.steps)


@dataclass
class Spent:
    """What a run actually used (``budget.spent`` in a result file). Every figure is measured."""

    optimizer_steps: int = 0
    examples: int = 0
    prompts: int = 0
    prompts_trained: int = 0
    completions: int = 0
    tokens_generated: int = 0
    tokens_trained: int = 0
    seconds_total: float = 0.0
    seconds_generation: float = 0.0
    seconds_train: float = 0.0
    seconds_eval: float = 0.0
    peak_rss_bytes: int | None = None
    peak_accelerator_bytes: int | None = None
    train_flops: float = 0.0
    zero_advantage_groups: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        """Add the block's wall seconds to ``seconds_<phase>`` (generation, train or eval)."""
        attr = f"seconds_{phase}"
        if not hasattr(self, attr):
            raise ValueError(f"unknown phase {phase!r}")
        start = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, attr, getattr(self, attr) + time.perf_counter() - start)


class MemoryMeter:
    """Peak resident memory (and peak accelerator memory) over one run.

    On Linux the kernel's high-water mark (``VmHWM``) is reset at :meth:`start` by writing ``5`` to
    ``/proc/self/clear_refs``, so a run in a long-lived process (a suite worker) reports its own
    peak, not the process's lifetime peak. Elsewhere, ``ru_maxrss`` (lifetime peak) is the fallback.
    """

    def __init__(self) -> None:
        self._hwm_reset = False

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def peak_rss_bytes(self) -> int:
        if self._hwm_reset:
            try:
                with open("/proc/self/status") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) * 1024
            except OSError:
                pass
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB on Linux

    @staticmethod
    def peak_accelerator_bytes() -> int | None:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
        return None

    def record(self, spent: Spent) -> None:
        spent.peak_rss_bytes = self.peak_rss_bytes()
        spent.peak_accelerator_bytes = self.peak_accelerator_bytes()


def forward_params(model) -> int:
    """``N`` of the FLOP formula: parameters used in forward matmuls (see the module docstring)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if inp is not None:
        total -= inp.weight.numel()
        if out is not None and out.weight is inp.weight:  # tied: the LM head matmul still costs
            total += out.weight.numel()
    return total


def trainable_params(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops(n_forward: int, positions: int) -> float:
    return 2.0 * n_forward * positions


def train_step_flops(n_forward: int, n_trainable: int, positions: int) -> float:
    return (4.0 * n_forward + 2.0 * n_trainable) * positions

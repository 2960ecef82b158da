"""What a run spends: the matched :class:`Budget` (defined in :mod:`pefthub.schema`), the measured
:class:`Spent`, peak memory and the FLOP estimate (its formula is in docs/trainers.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator

from pefthub.schema import SCHEDULES, Budget  # noqa: F401  (re-exported: trainers import the budget from here)


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
    seconds_checkpoint_eval: float = 0.0  # the validation scored at eval.checkpoints inside training
    peak_rss_bytes: int | None = None
    peak_accelerator_bytes: int | None = None
    train_flops: float = 0.0
    zero_advantage_groups: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @contextlib.contextmanager
    def timing(self, phase: str) -> Iterator[None]:
        """Add the block's wall seconds to ``seconds_<phase>`` (generation, train, eval or checkpoint_eval)."""
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

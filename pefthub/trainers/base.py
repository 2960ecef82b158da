"""The trainer contract every trainer (built-in or third-party) implements.

A trainer takes a model already adapted by a method (only the method's parameters require grad),
a task, a :class:`~pefthub.trainers.budget.Budget` and a learning rate, trains for exactly the
budget's optimizer steps and returns a :class:`TrainOutcome`: what it spent, its per-step curves,
and whether it honoured the budget. A run that cannot honour it (NaN/inf loss, out of memory)
returns ``status="failed"`` with a one-line error instead of a silent partial result.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from pefthub.errors import ConfigError
from pefthub.settings import Settings, defaults, setting
from pefthub.trainers.budget import Budget, Spent

__all__ = ["Trainer", "TrainerOptions", "TrainOutcome", "TrainingFailure", "config_field"]

#: A trainer option is a :func:`pefthub.settings.setting` (default, help, bounds); the name trainers import.
config_field = setting

#: ``progress`` callbacks receive dicts like {"phase": "train", "step": 3, "steps": 20, "loss": 0.4}.
Progress = Callable[[dict], None]


class TrainingFailure(Exception):
    """The run cannot honour its budget (NaN/inf loss or gradient, out of memory); one-line message."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the host or an accelerator running out of memory (recorded as a failed run)."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


@dataclass
class TrainerOptions(Settings):
    """Base class of a trainer's options: fields declared with :func:`pefthub.settings.setting`,
    validated in ``__post_init__``; errors name ``trainer_options.<field>``."""

    #: Options added after results were published: a resolved config carries them only when they
    #: differ from their default, so the run ids of runs that do not use them stay what they were.
    OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def where(cls) -> str:
        return "trainer_options"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        declared = defaults(type(self))
        for name in self.OMIT_WHEN_DEFAULT:
            if out[name] == declared[name]:
                del out[name]
        return out


@dataclass
class OptimizerOptions(TrainerOptions):
    """The AdamW and gradient-clipping options every built-in trainer shares, declared once."""

    max_grad_norm: float = config_field(1.0, "clip the gradient's global norm to this (0 = no clipping)", min=0)
    weight_decay: float = config_field(0.0, "AdamW weight decay", min=0)
    adam_beta1: float = config_field(0.9, "AdamW beta1", min=0, below=1)
    adam_beta2: float = config_field(0.999, "AdamW beta2", min=0, below=1)
    adam_eps: float = config_field(1e-8, "AdamW epsilon", above=0)


@dataclass
class TrainOutcome:
    """What a training run produced: status, spent budget and per-optimizer-step curves."""

    status: str  # "success" | "failed"
    spent: Spent
    curves: list[dict] = field(default_factory=list)
    error: str | None = None
    #: Set when the trainer ended before ``budget.steps`` by its own rule, e.g.
    #: ``{"reason": "collapsed", "step": 12, "detail": "..."}``; the run still succeeded.
    stopped_early: dict | None = None


@contextlib.contextmanager
def gradient_checkpointing(model: nn.Module, enabled: bool):
    """Transformers' gradient checkpointing (non-reentrant) on ``model``'s decoder layers for the
    block. Under it transformers drops ``past_key_values`` in training, so trainers must not share
    a prompt's key/value cache across rows while it is on."""
    if not enabled:
        yield
        return
    from pefthub.models import base_model

    base = base_model(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ConfigError(f"trainer_options.gradient_checkpointing: {type(base).__name__} does not support it")
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        yield
    finally:
        base.gradient_checkpointing_disable()


class Trainer:
    """Base class of a trainer. Subclasses set ``name``, ``options_class``, ``summary`` and
    implement :meth:`train`."""

    name: ClassVar[str]
    #: The algorithm the trainer runs ("sft", "grpo"): what a method's ``supported_trainers`` lists,
    #: so another engine of the same algorithm (``trl-grpo``) serves the same methods. Default: ``name``.
    kind: ClassVar[str] = ""
    options_class: ClassVar[type[TrainerOptions]] = TrainerOptions
    summary: ClassVar[str] = ""
    #: Whether :meth:`run_steps` calls :meth:`step_done` after every optimizer step, so a run can score
    #: the model at ``eval.checkpoints`` inside training (the built-in loops do; other trainers refuse it).
    reports_steps: ClassVar[bool] = False
    _after_step: Callable[[int], None] | None = None

    @classmethod
    def algorithm(cls) -> str:
        return cls.kind or cls.name

    def __init__(self, options: TrainerOptions | None = None):
        self.options = options if options is not None else self.options_class()
        if not isinstance(self.options, self.options_class):
            raise ConfigError(f"trainer '{self.name}' takes {self.options_class.__name__}, "
                              f"got {type(self.options).__name__}")

    def check_budget(self, budget: Budget) -> None:
        """Raise :class:`ConfigError` when ``budget`` cannot work with this trainer (called before any work)."""

    def train(self, *, model: nn.Module, tokenizer: Any, method: Any, task: Any, budget: Budget,
              learning_rate: float, seed: int, spent: Spent | None = None,
              progress: Progress | None = None, after_step: Callable[[int], None] | None = None) -> TrainOutcome:
        """Train ``model`` (already adapted by ``method``) in place for ``budget.steps`` optimizer steps.

        ``spent`` (created if None) accumulates what the run uses; the runner passes its own so the
        evaluation time and peak memory land in the same record. A :class:`TrainingFailure` or an
        out-of-memory error inside :meth:`run_steps` becomes ``status="failed"`` with a one-line
        error and the curves and spending recorded up to that point; other exceptions propagate.
        ``after_step(step)`` runs after each optimizer step (trainers with :attr:`reports_steps` only).
        """
        from pefthub.trainers.budget import MemoryMeter

        self.check_budget(budget)
        if after_step is not None and not self.reports_steps:
            raise ConfigError(f"trainer '{self.name}' cannot run work between its optimizer steps "
                              "(eval.checkpoints needs the built-in sft or grpo trainer)")
        spent = spent if spent is not None else Spent()
        curves: list[dict] = []
        meter = None
        stopped_early = None
        if spent.peak_rss_bytes is None:  # standalone use (no runner measuring): measure our own peak
            meter = MemoryMeter()
            meter.start()
        self._after_step = after_step
        try:
            with gradient_checkpointing(model, bool(getattr(self.options, "gradient_checkpointing", False))):
                stopped_early = self.run_steps(model=model, tokenizer=tokenizer, method=method, task=task,
                                               budget=budget, learning_rate=learning_rate, seed=seed, spent=spent,
                                               curves=curves, progress=progress)
            status, error = "success", None
        except TrainingFailure as exc:
            status, error = "failed", str(exc)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            status, error = "failed", f"out of memory at step {spent.optimizer_steps + 1}: {exc}".splitlines()[0]
        finally:
            self._after_step = None
            model.eval()
            if meter is not None:
                meter.record(spent)
        return TrainOutcome(status=status, spent=spent, curves=curves, error=error,
                            stopped_early=stopped_early if status == "success" else None)

    def step_done(self, step: int) -> None:
        """What :meth:`run_steps` calls once optimizer step ``step`` is taken and recorded (its timers
        closed): runs the ``after_step`` hook :meth:`train` was given, if any."""
        if self._after_step is not None:
            self._after_step(step)

    def run_steps(self, *, model: nn.Module, tokenizer: Any, method: Any, task: Any, budget: Budget,
                  learning_rate: float, seed: int, spent: Spent, curves: list[dict],
                  progress: Progress | None) -> dict | None:
        """The training loop: update ``spent`` and append one dict per optimizer step to ``curves``;
        raise :class:`TrainingFailure` when the budget cannot be honoured. Return None, or the
        ``stopped_early`` record when the loop ended early by its own rule."""
        raise NotImplementedError

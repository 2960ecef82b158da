"""The trainer contract every trainer (built-in or third-party) implements.

A trainer takes a model already adapted by a method (only the method's parameters require grad),
a task, a :class:`~pefthub.trainers.budget.Budget` and a learning rate, trains for exactly the
budget's optimizer steps and returns a :class:`TrainOutcome`: what it spent, its per-step curves,
and whether it honoured the budget. A run that cannot honour it (NaN/inf loss, out of memory)
returns ``status="failed"`` with a one-line error instead of a silent partial result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from torch import nn

from pefthub.errors import ConfigError
from pefthub.methods.base import config_field
from pefthub.trainers.budget import Budget, Spent

__all__ = ["Trainer", "TrainerOptions", "TrainOutcome", "TrainingFailure", "config_field"]

#: ``progress`` callbacks receive dicts like {"phase": "train", "step": 3, "steps": 20, "loss": 0.4}.
Progress = Callable[[dict], None]


class TrainingFailure(Exception):
    """The run cannot honour its budget (NaN/inf loss or gradient, out of memory); one-line message."""


@dataclass
class TrainerOptions:
    """Base class of a trainer's options: a dataclass with ``metadata={"help": ...}`` fields,
    validated in ``__post_init__`` (errors name the field)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value is invalid."""

    def _require(self, condition: bool, field_name: str, message: str) -> None:
        if not condition:
            raise ConfigError(f"trainer_options.{field_name}: {message} (got {getattr(self, field_name)!r})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "TrainerOptions":
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"trainer_options: unknown field(s) {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(names)) or 'none'})")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"trainer_options: {exc}") from None

    @classmethod
    def field_help(cls) -> list[tuple[str, str, Any]]:
        """(name, help, default) for each field, for CLI listings and generated docs."""
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out.append((f.name, f.metadata.get("help", ""), default))
        return out


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


class Trainer:
    """Base class of a trainer. Subclasses set ``name``, ``options_class``, ``summary`` and
    implement :meth:`train`."""

    name: ClassVar[str]
    #: The algorithm the trainer runs ("sft", "grpo"): what a method's ``supported_trainers`` lists,
    #: so another engine of the same algorithm (``trl-grpo``) serves the same methods. Default: ``name``.
    kind: ClassVar[str] = ""
    options_class: ClassVar[type[TrainerOptions]] = TrainerOptions
    summary: ClassVar[str] = ""

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
              progress: Progress | None = None) -> TrainOutcome:
        """Train ``model`` (already adapted by ``method``) in place for ``budget.steps`` optimizer steps.

        ``spent`` (created if None) accumulates what the run uses; the runner passes its own so the
        evaluation time and peak memory land in the same record. A :class:`TrainingFailure` or an
        out-of-memory error inside :meth:`run_steps` becomes ``status="failed"`` with a one-line
        error and the curves and spending recorded up to that point; other exceptions propagate.
        """
        from pefthub.trainers.budget import MemoryMeter
        from pefthub.trainers.common import is_out_of_memory

        self.check_budget(budget)
        spent = spent if spent is not None else Spent()
        curves: list[dict] = []
        meter = None
        stopped_early = None
        if spent.peak_rss_bytes is None:  # standalone use (no runner measuring): measure our own peak
            meter = MemoryMeter()
            meter.start()
        try:
            stopped_early = self.run_steps(model=model, tokenizer=tokenizer, method=method, task=task, budget=budget,
                                           learning_rate=learning_rate, seed=seed, spent=spent, curves=curves,
                                           progress=progress)
            status, error = "success", None
        except TrainingFailure as exc:
            status, error = "failed", str(exc)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            status, error = "failed", f"out of memory at step {spent.optimizer_steps + 1}: {exc}".splitlines()[0]
        finally:
            model.eval()
            if meter is not None:
                meter.record(spent)
        return TrainOutcome(status=status, spent=spent, curves=curves, error=error,
                            stopped_early=stopped_early if status == "success" else None)

    def run_steps(self, *, model: nn.Module, tokenizer: Any, method: Any, task: Any, budget: Budget,
                  learning_rate: float, seed: int, spent: Spent, curves: list[dict],
                  progress: Progress | None) -> dict | None:
        """The training loop: update ``spent`` and append one dict per optimizer step to ``curves``;
        raise :class:`TrainingFailure` when the budget cannot be honoured. Return None, or the
        ``stopped_early`` record when the loop ended early by its own rule."""
        raise NotImplementedError

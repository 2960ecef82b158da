"""The experiment config's schema: the budget and evaluation settings with their defaults, bounds and
help, declared with :mod:`pefthub.settings` (the one mechanism every config dataclass uses).
Suites, the runner and the CLI read these defaults and bounds from here only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pefthub.errors import ConfigError

# Re-exported: the config dataclasses' base and helpers live in pefthub.settings.
from pefthub.settings import (Settings, build, check, check_known, default_of, defaults,  # noqa: F401
                              field_help, setting)

SCHEDULES = ("constant", "cosine", "linear")
EVAL_SPLITS = ("test", "validation")
#: ``auto`` takes ``fused`` (pefthub's decoder) where it serves the model, else ``hf``; ``vllm`` is lm-eval's vLLM model.
EVAL_BACKENDS = ("auto", "fused", "hf", "vllm")
#: ``eval.max_new_tokens = "task"``: the cap is sized from the task's worked solutions at run time.
TASK_SIZED = "task"


def learning_rate(value: Any, where: str) -> float:
    """A learning rate: a finite number > 0."""
    return check(value, where, float, above=0)


@dataclass
class Budget(Settings):
    """What every method gets in a comparison (the ``budget`` object of a result's config)."""

    steps: int = setting(20, "optimizer steps", min=1)
    batch_size: int = setting(8, "per optimizer step: prompts (RL; each sampled `generations` times) or "
                                 "training examples (SFT)", min=1)
    generations: int = setting(4, "completions sampled per prompt (RL)", min=1)
    max_new_tokens: int = setting(64, "longest completion sampled per rollout (RL)", min=1)
    max_seq_len: int = setting(384, "longest prompt + completion in tokens; longer prompts are cut from the "
                                    "left, longer SFT targets from the right", min=1)
    schedule: str = setting("constant", "learning-rate shape after warmup: constant, cosine (to 0) or linear (to 0)",
                            choices=SCHEDULES)
    warmup_ratio: float = setting(0.0, "share of steps with linear warmup from 0, in [0, 1)", min=0.0, below=1.0)

    @classmethod
    def where(cls) -> str:
        return "budget"

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_ratio * self.steps))


@dataclass
class Evaluation(Settings):
    """How a run is scored (the ``eval`` object of a result's config)."""

    split: str = setting("test", "the split whose accuracy is the run's result", choices=EVAL_SPLITS)
    limit: int | None = setting(100, "examples of that split to score (None: all)", min=1)
    validation_limit: int = setting(0, "validation examples scored too, for learning-rate selection (0: none)",
                                    min=0)
    max_new_tokens: int | str = setting(256, "longest evaluation answer; \"task\": sized from the task's worked "
                                             "solutions", min=1, also=(TASK_SIZED,))
    backend: str = setting("auto", "evaluation engine", choices=EVAL_BACKENDS)
    checkpoints: list[int] = setting([], "optimizer steps after which the validation split is scored too, inside "
                                         "the run (accuracy vs budget from one run); strictly increasing, each "
                                         "<= budget.steps; in a config only when set")

    @classmethod
    def where(cls) -> str:
        return "eval"

    def validate(self) -> None:
        super().validate()
        self.checkpoints = check_checkpoints(self.checkpoints, None, f"{self.where()}.checkpoints")
        if self.checkpoints and self.split != "validation" and self.validation_limit == 0:
            raise ConfigError(f"{self.where()}.checkpoints: score the validation split, so set "
                              f"{self.where()}.validation_limit > 0")
        if self.checkpoints and self.backend == "vllm":
            raise ConfigError(f"{self.where()}.checkpoints: not with backend 'vllm' (its engine would start "
                              "beside training); use 'auto', 'fused' or 'hf'")

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if not out["checkpoints"]:  # added after results were published: absent unless set (run ids unchanged)
            del out["checkpoints"]
        return out

    @property
    def checkpoint_limit(self) -> int | None:
        """Examples of the validation split scored at each checkpoint: those of the run's own validation
        evaluation (``limit`` when the run's split is validation, else ``validation_limit``)."""
        return self.limit if self.split == "validation" else self.validation_limit


def check_checkpoints(value: Any, steps: int | None, where: str = "eval.checkpoints") -> list[int]:
    """``value`` as a list of checkpoint steps: positive integers, strictly increasing, each at most
    ``steps`` (when given); else one :class:`ConfigError` line naming the offending value."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: must be a list of optimizer steps (got {value!r})")
    previous = 0
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item < 1:
            raise ConfigError(f"{where}: {item!r} is not a positive integer")
        if item <= previous:
            raise ConfigError(f"{where}: must be strictly increasing ({item} after {previous})")
        if steps is not None and item > steps:
            raise ConfigError(f"{where}: {item} is beyond budget.steps ({steps})")
        previous = item
    return list(value)

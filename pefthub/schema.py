"""The experiment config's schema: the budget and evaluation settings with their defaults, bounds and
help, and the field checks every config dataclass (method configs, trainer options, task
parameters) shares. Suites, the runner and the CLI read defaults and bounds from here only."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pefthub.errors import ConfigError

SCHEDULES = ("constant", "cosine", "linear")
EVAL_SPLITS = ("test", "validation")
#: ``auto`` takes ``fused`` (pefthub's decoder) where it serves the model, else ``hf``; ``vllm`` is lm-eval's vLLM model.
EVAL_BACKENDS = ("auto", "fused", "hf", "vllm")
#: ``eval.max_new_tokens = "task"``: the cap is sized from the task's worked solutions at run time.
TASK_SIZED = "task"


def setting(default: Any, help: str, *, minimum: float | None = None, below: float | None = None,
            choices: tuple[str, ...] | None = None, also: tuple[Any, ...] = ()) -> Any:
    """A schema field: its default, help text and bounds (``minimum`` inclusive, ``below`` exclusive)
    or ``choices``, and ``also`` the special values accepted besides, checked by :func:`check_bounds`."""
    return field(default=default, metadata={"help": help, "minimum": minimum, "below": below, "choices": choices,
                                            "also": also})


def default_of(f: dataclasses.Field) -> Any:
    """A field's default (``default_factory`` called), None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a config dataclass, read from the schema at call time."""
    return {f.name: default_of(f) for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) for each field, for CLI listings and generated docs."""
    return [(f.name, f.metadata.get("help", ""), default_of(f)) for f in dataclasses.fields(cls)]


def check_known(cls: type, data: dict[str, Any], where: str, noun: str = "field") -> None:
    """Raise :class:`ConfigError` naming ``where`` when ``data`` has keys that ``cls`` has no field for."""
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown {noun}(s) {', '.join(unknown)} (known: {', '.join(names) or 'none'})")


def build(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """``cls`` from a plain dict: unknown keys refused, defaults filled in from the schema, a wrong
    argument turned into one :class:`ConfigError` line."""
    data = dict(data or {})
    check_known(cls, data, where)
    try:
        return cls(**{**defaults(cls), **data})
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _allows_none(annotation: Any) -> bool:
    return (typing.get_origin(annotation) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(annotation))


def _bound_text(minimum: float | None, below: float | None) -> str:
    if minimum is not None and below is not None:
        return f"in [{minimum:g}, {below:g})"
    if minimum is not None:
        return f">= {minimum:g}"
    return f"< {below:g}"


def check_bounds(obj: Any, where: str) -> None:
    """Check every :func:`setting` field of ``obj`` against its type, bounds and choices; floats
    given as integers become floats (1 and 1.0 are one setting, one config hash)."""
    checked = [f for f in dataclasses.fields(obj) if "minimum" in f.metadata]
    hints = typing.get_type_hints(type(obj)) if checked else {}
    for f in checked:
        value, annotation = getattr(obj, f.name), hints[f.name]
        if (value is None and _allows_none(annotation)) or value in f.metadata["also"]:
            continue
        kind = next(t for t in (int, float, str) if t is annotation or t in typing.get_args(annotation))
        minimum, below, choices = f.metadata["minimum"], f.metadata["below"], f.metadata["choices"]
        if kind is str:
            if not isinstance(value, str) or (choices and value not in choices):
                raise ConfigError(f"{where}.{f.name}: must be one of {', '.join(choices)} (got {value!r})")
            continue
        if kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            what = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, "an integer")
            bound = "" if minimum in (0, 1) and below is None else f" {_bound_text(minimum, below)}"
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            what, bound = "a number", f" {_bound_text(minimum, below)}" if (minimum, below) != (None, None) else ""
        if ok and ((minimum is not None and value < minimum) or (below is not None and value >= below)):
            ok = False
        if not ok:
            raise ConfigError(f"{where}.{f.name}: must be {what}{bound} (got {value!r})")
        if kind is float:
            setattr(obj, f.name, float(value))


def learning_rate(value: Any, where: str) -> float:
    """A learning rate: a finite number > 0."""
    if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
            or value <= 0):
        raise ConfigError(f"{where}: must be a number > 0 (got {value!r})")
    return float(value)


@dataclass
class Settings:
    """Base of a config dataclass (method configs, trainer options, budget, evaluation): fields with
    ``help`` metadata, validated on construction, read from and written to plain dicts."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value is invalid (default: the
        :func:`setting` bounds)."""
        check_bounds(self, self.where())

    @classmethod
    def where(cls) -> str:
        """How errors name this object (``<where>.<field>: ...``)."""
        return cls.__name__

    def _require(self, condition: bool, field_name: str, message: str) -> None:
        if not condition:
            raise ConfigError(f"{self.where()}.{field_name}: {message} (got {getattr(self, field_name)!r})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Any:
        return build(cls, data, cls.where())

    @classmethod
    def field_help(cls) -> list[tuple[str, str, Any]]:
        """(name, help, default) for each field, for CLI listings and generated docs."""
        return field_help(cls)


@dataclass
class Budget(Settings):
    """What every method gets in a comparison (the ``budget`` object of a result's config)."""

    steps: int = setting(20, "optimizer steps", minimum=1)
    batch_size: int = setting(8, "per optimizer step: prompts (RL; each sampled `generations` times) or "
                                 "training examples (SFT)", minimum=1)
    generations: int = setting(4, "completions sampled per prompt (RL)", minimum=1)
    max_new_tokens: int = setting(64, "longest completion sampled per rollout (RL)", minimum=1)
    max_seq_len: int = setting(384, "longest prompt + completion in tokens; longer prompts are cut from the "
                                    "left, longer SFT targets from the right", minimum=1)
    schedule: str = setting("constant", "learning-rate shape after warmup: constant, cosine (to 0) or linear (to 0)",
                            choices=SCHEDULES)
    warmup_ratio: float = setting(0.0, "share of steps with linear warmup from 0, in [0, 1)", minimum=0.0, below=1.0)

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
    limit: int | None = setting(100, "examples of that split to score (None: all)", minimum=1)
    validation_limit: int = setting(0, "validation examples scored too, for learning-rate selection (0: none)",
                                    minimum=0)
    max_new_tokens: int | str = setting(256, "longest evaluation answer; \"task\": sized from the task's worked "
                                             "solutions", minimum=1, also=(TASK_SIZED,))
    backend: str = setting("auto", "evaluation engine", choices=EVAL_BACKENDS)

    @classmethod
    def where(cls) -> str:
        return "eval"

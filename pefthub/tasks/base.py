"""The task contract: examples with gold answers, a prompt format, an answer extractor, a scorer.

One extractor serves both the RL reward and the lm-eval metric, so training and evaluation can
never disagree about what counts as correct: a task delegates prompting instructions, extraction
and comparison to its :class:`~pefthub.tasks.answers.AnswerFormat`, and the registered reward
functions (``pefthub.rewards``) call the very same object.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pefthub import settings
from pefthub.errors import ConfigError
from pefthub.settings import Rule, setting

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    #: Canonical gold answer as a string (e.g. "42", "\\frac{1}{2}").
    answer: str
    #: Worked solution ending with the answer in the task's answer format; the SFT target.
    solution: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def param(default: Any, help: str, **rule: Any) -> Any:
    """A task parameter: a :func:`pefthub.settings.setting` (default, help `pefthub tasks` shows, and
    bounds or choices such as ``min=1``)."""
    return setting(default, help, **rule)


@dataclass
class TaskParams:
    """Base class of a task's parameters: a dataclass whose values are checked against their
    declarations (:mod:`pefthub.settings`: type, bounds, choices) and then by :meth:`validate`
    (rules between parameters)."""

    #: Parameters added after results were published: a task's config carries them only when they
    #: differ from their default, so the run ids of runs that do not use them stay what they were.
    OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # an integer given for a float becomes a float: one setting, one hash
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, f.metadata.get("rule", Rule()).check(value, f"parameter {f.name}",
                                                                                 hints[f.name]))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the parameter when a value is invalid (the task adds
        its own name in front)."""

    def require(self, condition: bool, name: str, message: str) -> None:
        if not condition:
            raise ConfigError(f"parameter {name}={getattr(self, name)!r} {message}")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as plain values, without the :attr:`OMIT_WHEN_DEFAULT` ones left at their default."""
        out = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        if self.OMIT_WHEN_DEFAULT:
            defaults = {name: default for name, _, default in self.field_help()}
            for name in self.OMIT_WHEN_DEFAULT:
                if out[name] == defaults[name]:
                    del out[name]
        return out

    @classmethod
    def field_help(cls) -> list[tuple[str, str, Any]]:
        """(name, help, default) per parameter, for `pefthub tasks` and docs/tasks.md."""
        return [(name, help, _plain(default)) for name, help, default in settings.field_help(cls)]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


class Task:
    """Base class; subclasses set ``name``/``description``/``params_class``/``answer_format`` and
    implement :meth:`load_split`. Instances are built with ``TaskClass(**params)`` (or through
    :func:`pefthub.tasks.get_task`)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    params_class: ClassVar[type[TaskParams]] = TaskParams
    #: The answer format (prompt instruction, extractor, comparison); see pefthub.tasks.answers.
    answer_format: ClassVar[Any] = None
    #: Name of the registered reward that computes exactly :meth:`score` from TRL-style columns.
    reward: ClassVar[str] = "exact_match"
    #: Name of the registered format reward for this task's answer format (off unless asked for).
    format_reward: ClassVar[str] = "format_answer"

    def __init__(self, params: TaskParams | None = None, **kwargs: Any):
        if params is not None and kwargs:
            raise TypeError("pass either a params object or keyword parameters, not both")
        if params is None:
            params = self.params_from_dict(kwargs)
        elif not isinstance(params, self.params_class):
            raise ConfigError(f"task '{self.name}' takes {self.params_class.__name__}, got {type(params).__name__}")
        self.params = params
        self._splits: dict[str, list[Example]] = {}

    @classmethod
    def params_from_dict(cls, data: dict[str, Any]) -> TaskParams:
        settings.check_known(cls.params_class, data, f"task '{cls.name}'", noun="parameter")
        try:
            return cls.params_class(**data)
        except ConfigError as exc:
            raise ConfigError(f"task '{cls.name}': {exc}") from None

    # ---- data ------------------------------------------------------------------------------
    def load_split(self, split: str, n: int | None) -> list[Example]:
        """At least the first ``n`` examples of ``split`` (all if None), in a fixed order."""
        raise NotImplementedError

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        """The first ``n`` examples of ``split`` (all if None), deterministic for a given task config.
        Splits are disjoint by question text. An empty split is a :class:`ConfigError`."""
        if split not in SPLITS:
            raise ConfigError(f"task '{self.name}': unknown split '{split}' (known: {', '.join(SPLITS)})")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ConfigError(f"task '{self.name}': number of examples must be a non-negative integer (got {n!r})")
        out = self.load_split(split, n)
        if not out and n != 0:
            raise ConfigError(f"task '{self.name}': the {split} split is empty{self.empty_split_hint(split)}")
        return out if n is None else out[:n]

    def empty_split_hint(self, split: str) -> str:
        """Appended to the empty-split error: why it is empty and what to change."""
        return ""

    def stratum(self, example: Example) -> str | None:
        """The difficulty stratum of ``example`` (e.g. "2 terms"), for per-stratum reports and split
        checks; None when the task defines none."""
        return None

    # ---- prompting ---------------------------------------------------------------------------
    def system_prompt(self) -> str:
        return self.answer_format.instruction

    def user_prompt(self, example: Example) -> str:
        return example.question

    def messages(self, example: Example) -> list[dict[str, str]]:
        """Chat messages (system/user) that prompt for ``example`` in the task's answer format."""
        return [{"role": "system", "content": self.system_prompt()},
                {"role": "user", "content": self.user_prompt(example)}]

    def target(self, example: Example) -> str:
        """The assistant completion SFT trains on (worked solution plus final answer line)."""
        if example.solution is None:
            raise ConfigError(f"task '{self.name}': example {example.id} has no worked solution to train on")
        return example.solution

    # ---- scoring (shared with rewards and the lm-eval metric) -----------------------------------
    def extract(self, completion: Any) -> str | None:
        """The answer a completion gives (the answer line, else the format's fallback), or None."""
        return self.answer_format.extract(completion)

    def extract_strict(self, completion: Any) -> str | None:
        """The answer only when stated in the requested format (e.g. "The answer is 42."), else None."""
        return self.answer_format.extract_strict(completion)

    def is_correct(self, extracted: str | None, gold: str) -> bool:
        return self.answer_format.equal(extracted, gold)

    def score(self, completion: Any, example: Example) -> float:
        """1.0 if the completion's extracted answer matches the gold answer, else 0.0."""
        return 1.0 if self.is_correct(self.extract(completion), example.answer) else 0.0

    def config(self) -> dict[str, Any]:
        """Everything that determines the examples (for result files and config hashes)."""
        return {"name": self.name, **self.params.to_dict()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.to_dict().items())
        return f"{type(self).__name__}({args})"

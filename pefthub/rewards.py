"""Reward functions with TRL's signature: ``fn(completions, **dataset_columns) -> list[float]``.

They are thin wrappers around the answer formats in :mod:`pefthub.tasks.answers`, the same objects
every task's :meth:`~pefthub.tasks.Task.score` and the lm-eval metric use, so a reward of 1.0
means exactly "counted correct by the evaluation". Completions may be plain strings or TRL's
conversational form (a list of messages). The built-in plugin ``plugins/rewards.py`` registers them.

* ``exact_match`` (default of numeric tasks): the extracted number equals the ``answer`` column
  (relative tolerance 1e-6).
* ``math_verify`` (default of LaTeX tasks): math-verify equivalence of the extracted answer.
* ``format_answer`` / ``format_boxed``: 1.0 when the completion states an answer in the requested
  format, whatever the answer. Separate, and used only when asked for.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from pefthub.errors import ConfigError
from pefthub.tasks.answers import BOXED_LATEX, NUMERIC, AnswerFormat

RewardFn = Callable[..., list[float]]


def _answers(name: str, completions: Sequence[Any], answer: Sequence[Any] | None) -> list[str]:
    if answer is None:
        raise ConfigError(f"reward '{name}' needs an 'answer' column with the gold answers")
    if len(answer) != len(completions):
        raise ConfigError(f"reward '{name}': {len(completions)} completions but {len(answer)} answers")
    return [str(a) for a in answer]


def correctness_reward(fmt: AnswerFormat, name: str) -> RewardFn:
    """A TRL reward: 1.0 when ``fmt`` extracts an answer from the completion equal to ``answer``."""

    def reward(completions: Sequence[Any], answer: Sequence[Any] | None = None, **_: Any) -> list[float]:
        gold = _answers(name, completions, answer)
        return [fmt.score(c, g) for c, g in zip(completions, gold)]

    reward.__name__ = name
    reward.__doc__ = f"1.0 when the completion's answer ({fmt.name} format) equals the gold answer, else 0.0."
    return reward


def format_reward(fmt: AnswerFormat, name: str) -> RewardFn:
    """A TRL reward: 1.0 when the completion states an answer in ``fmt``'s requested form."""

    def reward(completions: Sequence[Any], **_: Any) -> list[float]:
        return [fmt.format_score(c) for c in completions]

    reward.__name__ = name
    reward.__doc__ = f"1.0 when the completion gives its answer in the {fmt.name} format, else 0.0."
    return reward


exact_match = correctness_reward(NUMERIC, "exact_match")
math_verify = correctness_reward(BOXED_LATEX, "math_verify")
format_answer = format_reward(NUMERIC, "format_answer")
format_boxed = format_reward(BOXED_LATEX, "format_boxed")

BUILTIN_REWARDS: dict[str, RewardFn] = {
    "exact_match": exact_match,
    "math_verify": math_verify,
    "format_answer": format_answer,
    "format_boxed": format_boxed,
}


def reward_for_task(task: Any, *, with_format: bool = False) -> list[tuple[str, RewardFn]]:
    """The registered reward(s) a task scores with: its correctness reward, plus its format reward
    when ``with_format`` (off by default)."""
    from pefthub import plugins

    registry = plugins.rewards()
    names = [task.reward] + ([task.format_reward] if with_format else [])
    return [(n, registry.get(n)) for n in names]

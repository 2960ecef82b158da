"""The task contract: examples with gold answers, a prompt format, an answer extractor, a scorer.

One extractor serves both the RL reward and the lm-eval metric, so training and evaluation can
never disagree about what counts as correct.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

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


class Task:
    """Base class; subclasses set ``name``/``description`` and implement the methods below."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def examples(self, split: str, n: int | None = None) -> list[Example]:
        """The first ``n`` examples of ``split`` (all if None), deterministic for a given task config.
        Splits are disjoint by question text."""
        raise NotImplementedError

    def messages(self, example: Example) -> list[dict[str, str]]:
        """Chat messages (system/user) that prompt for ``example`` in the task's answer format."""
        raise NotImplementedError

    def target(self, example: Example) -> str:
        """The assistant completion SFT trains on (worked solution plus final answer line)."""
        raise NotImplementedError

    def extract(self, completion: str) -> str | None:
        """The answer a completion gives, or None when it gives none."""
        raise NotImplementedError

    def score(self, completion: str, example: Example) -> float:
        """1.0 if the completion's extracted answer matches the gold answer, else 0.0."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Everything that determines the examples (for result files and config hashes)."""
        return {"name": self.name}

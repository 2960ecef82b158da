"""Tasks generated offline by reasoning-gym's procedural generators.

Every split comes from one deterministic stream: reasoning-gym item ``i`` of the dataset seeded
with ``seed`` is a pure function of ``(seed, i)``. Walking ``i = 0, 1, 2, ...`` and keeping each
question the first time it appears (by its text, or for arithmetic by its expression, so a
reworded expression cannot sit in two splits) gives a list of distinct questions. Items without a
correct worked solution are skipped (see :meth:`ProceduralTask.make_example`), deterministically.
The parameter ``split_rule`` deals those questions to the splits, disjoint by construction:

- ``"stream"`` (the default, which every committed result used): the first ``test_size`` distinct
  questions are the test split, the next ``validation_size`` the validation split, and the rest (up
  to ``train_size``) the train split. A small sub-space (two-term sums among three-term ones) is
  frequent early in the stream and exhausted soon, so test and validation get most of it and the
  train split is harder than they are.
- ``"hash"``: the walk stops at one stream position for all three splits, where the stream has
  produced ``test_size + validation_size + train_size`` distinct questions (or at its end); those
  questions are ordered by a stable hash of ``(seed, key)`` and dealt in that order, the first
  ``test_size`` to test, the next ``validation_size`` to validation, the rest to train. Each split
  is therefore a uniform random subset of the same set, so all three have one difficulty mix up
  to sampling noise, and so does every prefix (``examples(split, n)``).

Why one common stop and no repeats: distinct questions drawn first-come are a depth-dependent
sample (a split that walks further has exhausted more of the small sub-space), so splits cut at
different stream positions differ in mix even when hashed into separate buckets, while a common
cut makes them thinnings of one set. Sampling with the generator's frequencies (repeats allowed)
would match the generator instead, but it would repeat test questions and, with few distinct
questions in a small sub-space, give each split a mix that differs by more than item-level noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from pefthub.errors import ConfigError
from pefthub.tasks.base import Example, Task, TaskParams, param

# Stop walking the stream after this many consecutive repeated/skipped items: the generator's
# question space is exhausted for these parameters (a bounded walk keeps bad settings fast).
MAX_CONSECUTIVE_MISSES = 2000
_COMMON = ("seed", "test_size", "validation_size", "train_size", "split_rule")
#: How distinct questions are dealt to the splits (see the module docstring).
SPLIT_RULES = ("stream", "hash")


@dataclass
class ProceduralParams(TaskParams):
    OMIT_WHEN_DEFAULT: ClassVar[tuple[str, ...]] = ("split_rule",)

    seed: int = param(0, "seed of the generator; every split follows from it", min=0)
    test_size: int = param(500, "distinct questions in the test split", min=1)
    validation_size: int = param(100, "distinct questions in the validation split", min=0)
    train_size: int = param(20000, "maximum distinct questions in the train split (generated on demand)", min=0)
    split_rule: str = param("stream", "how distinct questions are dealt to splits: 'stream' (test first, then "
                                      "validation, then train, in stream order: a small sub-space lands mostly in "
                                      "test) or 'hash' (a hash-ordered partition of the first test+validation+train "
                                      "distinct questions: every split has the same difficulty mix)",
                        choices=SPLIT_RULES)

    def generator_kwargs(self) -> dict[str, Any]:
        """The parameters passed to the reasoning-gym generator (everything but the split sizes)."""
        return {k: v for k, v in self.to_dict().items() if k not in _COMMON}


def _question_key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class ProceduralTask(Task):
    """Base of reasoning-gym tasks; subclasses set ``dataset_name`` and implement :meth:`make_example`."""

    params_class: ClassVar[type[TaskParams]] = ProceduralParams
    #: The reasoning-gym dataset name.
    dataset_name: ClassVar[str]

    def __init__(self, params: TaskParams | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        p = self.params
        self._bounds = {"test": (0, p.test_size),
                        "validation": (p.test_size, p.test_size + p.validation_size),
                        "train": (p.test_size + p.validation_size,
                                  p.test_size + p.validation_size + p.train_size)}
        self._dataset = self._make_dataset(size=1)  # fails here, with one line, on bad parameters
        self._stream: list[Example] = []
        self._seen: set[str] = set()
        self._next_index = 0
        self._exhausted = False
        self._dealt: list[Example] | None = None  # the hash rule's ordered questions

    # ---- generator --------------------------------------------------------------------------
    def _make_dataset(self, size: int):
        import reasoning_gym

        kwargs = self.params.generator_kwargs()
        try:
            return reasoning_gym.create_dataset(self.dataset_name, seed=self.params.seed, size=size, **kwargs)
        except (AssertionError, TypeError, ValueError, KeyError) as exc:
            detail = str(exc) or type(exc).__name__
            raise ConfigError(f"task '{self.name}': invalid generator parameters for reasoning-gym "
                              f"'{self.dataset_name}' ({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}): "
                              f"{detail}") from None

    def make_example(self, item: dict[str, Any], index: int) -> Example | None:
        """Turn reasoning-gym item ``index`` into an Example with a correct worked solution, or
        None to skip it (no verifiable solution)."""
        raise NotImplementedError

    def dedupe_key(self, example: Example) -> str:
        """What makes two items "the same question" (at most one of them is kept): the question
        text by default; tasks whose wording varies around the same problem override it."""
        return _question_key(example.question)

    def _extend(self, count: int) -> None:
        if len(self._stream) >= count or self._exhausted:
            return
        total = self._bounds["train"][1]
        # Size the virtual dataset generously once (gsm_symbolic draws one template per index
        # up front, so its cost grows with size; the draw is prefix-stable, so growing is safe).
        needed_size = max(4 * total + 10_000, self._next_index + 1)
        if len(self._dataset) < needed_size:
            self._dataset = self._make_dataset(size=needed_size)
        misses = 0
        while len(self._stream) < count:
            if self._next_index >= len(self._dataset) or misses >= MAX_CONSECUTIVE_MISSES:
                self._exhausted = True
                return
            index = self._next_index
            self._next_index += 1
            example = self.make_example(self._dataset[index], index)
            key = self.dedupe_key(example) if example is not None else None
            if example is None or key in self._seen:
                misses += 1
                continue
            misses = 0
            self._seen.add(key)
            self._stream.append(example)

    def _hash_order(self) -> list[Example]:
        """The hash rule's deal: the stream's first ``test + validation + train`` distinct questions,
        ordered by a stable hash of ``(seed, key)`` (the key breaks a tie)."""
        if self._dealt is None:
            self._extend(self._bounds["train"][1])
            seed = str(self.params.seed).encode()

            def rank(example: Example) -> tuple[bytes, str]:
                key = self.dedupe_key(example)
                return hashlib.blake2b(key.encode(), digest_size=8, key=seed).digest(), key

            self._dealt = sorted(self._stream, key=rank)
        return self._dealt

    def load_split(self, split: str, n: int | None) -> list[Example]:
        start, end = self._bounds[split]
        stop = end if n is None else min(end, start + n)
        if self.params.split_rule == "hash":
            chosen = self._hash_order()[start:stop]
        else:
            self._extend(stop)
            chosen = self._stream[start:stop]
        return [dataclasses.replace(ex, id=f"{self.name}-{split}-{i}") for i, ex in enumerate(chosen)]

    def empty_split_hint(self, split: str) -> str:
        if self._exhausted:
            return (f": these parameters give only {len(self._stream)} distinct questions, and the splits before it "
                    f"take {self._bounds[split][0]} (test_size={self.params.test_size}, "
                    f"validation_size={self.params.validation_size}); widen the difficulty ranges or lower the sizes")
        return f" ({split}_size is 0)"

    def distinct_questions_available(self) -> int:
        """How many distinct questions the stream has produced so far (for messages and tests)."""
        return len(self._stream)

"""The constant-answer floor: the one answer that, given to every test item, scores highest on those items.

On a task with few distinct answers (reasoning-gym ``aiw``: 2, 3 or 4) a model that only learns to answer
the most common value beats a base model that often answers nothing, without learning the task. A row has
shown it learned more than its answers' distribution only if it also beats this floor on the same items.
The answer is chosen on the test items themselves, so the floor is, if anything, too high.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from pefthub.report import stats
from pefthub.report.records import Items, RunRecord


@dataclass(frozen=True)
class Floor:
    """Always answering ``answer``, scored as a row of one seed on the base row's test items."""

    answer: str
    distinct: int                        # distinct gold answers among the items
    scores: stats.ItemScores

    @property
    def label(self) -> str:
        return f'always "{self.answer}"'

    @property
    def accuracy(self) -> float:
        return float(self.scores.scores.mean())

    @property
    def n_items(self) -> int:
        return self.scores.n

    def words(self) -> str:
        """``always answering "2", the most common of the 3 distinct answers among the 400 test items, scores 36.0%``."""
        return (f"always answering \"{self.answer}\", the most common of the {self.distinct} distinct answers among the "
                f"{self.n_items} test items, scores {stats.fmt_pct(self.accuracy)}%")

    def versus(self, row) -> stats.Comparison | None:
        """``row`` (:class:`pefthub.report.rows.Row`) against the floor on the same items; ``None`` when its
        items do not pair with the base row's."""
        scores = stats.pairable_scores(row, self.scores)
        return None if scores is None else stats.compare(scores, self.scores)


def above(c: stats.Comparison | None) -> bool:
    """THE floor rule: a comparison with the floor shows a row above it when its 95% interval lies above 0."""
    return c is not None and c.low > 0


def constant_answer(base) -> Floor | None:
    """The floor: the most common gold answer of the base row's test items (ties: the first in natural
    order), scored on them; ``None`` without a base row, paired items or gold answers."""
    if base is None:
        return None
    try:
        reference = stats.item_scores(base)
    except stats.PairingError:
        return None
    first = reference.items[0]
    position = first.position()
    gold = [first.gold[position[item]] for item in reference.ids]
    if not gold or any(g is None for g in gold):
        return None
    gold = [str(g) for g in gold]
    counts = Counter(gold)
    answer = min(counts, key=lambda g: (-counts[g], stats._natural(g)))
    correct = np.array([g == answer for g in gold], dtype=bool)
    items = Items(tuple(reference.ids), correct, np.zeros(len(gold), dtype=np.int64), (answer,) * len(gold),
                  tuple(gold), len(gold), 0, 0)
    scores = stats.ItemScores(f'always "{answer}"', list(reference.ids), correct[:, None].astype(float), [None],
                              reference.task, reference.protocol, [items])
    return Floor(answer, len(counts), scores)


# ---- a run that is itself a constant answer -----------------------------------------------------------
#: The share of a split's items one extracted answer must reach, while no gold answer is that common,
#: for a run to count as answering one value whatever the question (health's ``one_answer_share``).
ONE_ANSWER_SHARE = 0.9


@dataclass(frozen=True)
class OneAnswer:
    """A run's most common extracted answer on one split, how many of its ``n`` items got it, and how many
    items the most common gold answer covers."""

    answer: str
    count: int
    gold_top: int
    n: int

    def holds(self, share: float = ONE_ANSWER_SHARE) -> bool:
        """THE one-answer rule: at least ``share`` of the items got this answer and no gold answer is that common."""
        return self.count >= share * self.n and self.gold_top < share * self.n


def one_answer(items: Items | None) -> OneAnswer | None:
    """:class:`OneAnswer` of a split's items; ``None`` without items or without any extracted answer."""
    if items is None or not items.ids:
        return None
    answers = Counter(a for a in items.extracted if a is not None)
    if not answers:
        return None
    answer, count = answers.most_common(1)[0]
    gold = Counter(g for g in items.gold if g is not None)
    return OneAnswer(str(answer), count, max(gold.values(), default=0), items.n)


def one_answer_runs(records: Iterable[RunRecord], split: str = "validation") -> set[str]:
    """Run ids whose ``split`` items hold the one-answer rule: the rates
    :func:`pefthub.report.stats.select_learning_rate` passes over."""
    out = set()
    for record in records:
        one = one_answer(record.items.get(split))
        if one is not None and one.holds():
            out.add(record.doc.get("run_id"))
    return out

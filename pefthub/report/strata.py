"""Accuracy by the task's strata: each row against the base model on the items of each stratum
(:meth:`pefthub.tasks.Task.stratum`, e.g. "2 terms" and "3 terms"), so a gain confined to the easy
items, or a change of answer format, shows as such on the findings pages.

The strata come from :func:`pefthub.tasks.strata_of` (the task regenerates its split), passed in by
`pefthub findings`; this module only splits the paired item scores by them and compares each part
(:func:`pefthub.report.stats.compare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from pefthub.errors import PefthubError
from pefthub.report import stats

#: ``strata_of(task config, split, item ids) -> {item id: stratum or None}``.
StrataOf = Callable[[object, str, Sequence[str]], dict]


@dataclass(frozen=True)
class Stratum:
    """One row against base on one stratum's items (seeds averaged per item)."""

    name: str
    n_items: int
    comparison: stats.Comparison


def _subset(scores: stats.ItemScores, keep: list[int], label: str) -> stats.ItemScores:
    return stats.ItemScores(label, [scores.ids[i] for i in keep], scores.scores[keep], scores.seeds, scores.task,
                            scores.protocol, scores.items)


def by_stratum(rows: Sequence, base, strata_of: StrataOf) -> tuple[list[str], dict[str, list[Stratum]]]:
    """(the strata in order, each paired row's :class:`Stratum` results by label). Empty when there is no
    base row, its items cannot be read, or the task has no strata (every item's stratum is ``None``).
    ``strata_of`` is :func:`pefthub.tasks.strata_of`, passed by the caller: building a task loads the
    plugins (and torch), which the site never does."""
    if base is None:
        return [], {}
    try:
        reference = stats.item_scores(base)
        mapping = strata_of(base.config.get("task"), "test", reference.ids)
    except (stats.PairingError, PefthubError):
        return [], {}
    names = sorted({s for s in mapping.values() if s is not None}, key=stats._natural)
    if not names:
        return [], {}
    groups = {name: [i for i, item in enumerate(reference.ids) if mapping.get(item) == name] for name in names}
    out: dict[str, list[Stratum]] = {}
    for row in rows:
        if row.is_base or row.accuracy is None:
            continue
        scores = stats.pairable_scores(row, reference)
        if scores is None:
            continue
        out[row.label] = [Stratum(name, len(keep), stats.compare(_subset(scores, keep, row.label),
                                                                 _subset(reference, keep, base.label)))
                          for name, keep in groups.items() if keep]
    return names, out

"""Budget curves: a row's validation accuracy at each checkpoint step (``eval.checkpoints``), across its
seeds, with the budget spent to reach it; what each method buys along the budget axis from one run.

A curve point averages the row's runs that scored that step: validation accuracy with its 95% interval
by the row's own rule (:func:`pefthub.report.stats.seed_interval`: t over seeds, at least the runs'
recorded interval; one run, its Wilson interval), the mean tokens spent (trained + generated) and the
mean training wall seconds (checkpoint scoring excluded). The base model's validation accuracy, by the
same rule, is the reference. Rows are :func:`pefthub.report.rows.build_rows`' (one learning rate each).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pefthub.evaluation.core import wilson_interval
from pefthub.report import stats

#: The split checkpoints score (the one learning rates are chosen on).
SPLIT = "validation"


@dataclass(frozen=True)
class CurvePoint:
    """One checkpoint step of a row, averaged over the seeds that reached it."""

    step: int
    seeds: int                  # runs of the row with this step scored
    accuracy: float             # mean validation accuracy
    low: float | None           # 95% interval
    high: float | None
    interval: str | None        # how the interval was computed ("wilson", "t over 3 seeds", ...)
    n: int | None               # validation items scored (the most common count over the seeds)
    tokens: float | None        # mean tokens trained + generated up to the step
    seconds: float | None       # mean training wall seconds up to the step


@dataclass(frozen=True)
class Curve:
    """A row's checkpoints, in step order."""

    label: str                  # the row's label (``lora/sft``, ``tinylora@13/grpo``)
    name: str                   # variant or method: the site's colour
    trainer: str                # the site's marker and dash
    params_target: int | None
    points: tuple[CurvePoint, ...]


@dataclass(frozen=True)
class Reference:
    """The base model's validation accuracy with its interval (``seeds`` runs)."""

    label: str
    accuracy: float
    ci_low: float | None
    ci_high: float | None
    interval: str | None
    seeds: int


@dataclass(frozen=True)
class BudgetCurves:
    curves: tuple[Curve, ...]
    base: Reference | None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _as_scored(block: dict) -> dict:
    """A split's score dressed as a result document, for :func:`stats.seed_interval` (which reads test)."""
    return {"evaluation": {"test": {"ci_method": "wilson", **block}}}


def _interval(blocks: Sequence[dict]) -> stats.Interval:
    return stats.seed_interval([_as_scored(b) for b in blocks])


def _mean(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if stats.is_number(v)]
    return statistics.fmean(numbers) if numbers else None


def _tokens(point: dict) -> float | None:
    parts = [point.get("tokens_trained"), point.get("tokens_generated")]
    if not any(stats.is_number(p) for p in parts):
        return None
    return float(sum(p for p in parts if stats.is_number(p)))


def checkpoints_of(doc: dict) -> list[dict]:
    """A result's validation checkpoints with a usable step and accuracy, in step order."""
    points = doc.get("checkpoints")
    if not isinstance(points, list):
        return []
    usable = [p for p in points if isinstance(p, dict) and p.get("split", SPLIT) == SPLIT
              and isinstance(p.get("step"), int) and stats.is_number(p.get("accuracy"))]
    return sorted(usable, key=lambda p: p["step"])


def row_curve(label: str, docs: Sequence[dict]) -> Curve | None:
    """The budget curve of one row from its runs' result documents (its seeds); ``None`` without checkpoints."""
    by_step: dict[int, list[dict]] = {}
    for doc in docs:
        for point in checkpoints_of(doc):
            by_step.setdefault(point["step"], []).append(point)
    if not by_step:
        return None
    points = []
    for step in sorted(by_step):
        scored = by_step[step]
        interval = _interval(scored)
        counts = Counter(p["n"] for p in scored if isinstance(p.get("n"), int))
        points.append(CurvePoint(
            step=step, seeds=len(scored), accuracy=interval.mean, low=interval.low, high=interval.high,
            interval=interval.method, n=counts.most_common(1)[0][0] if counts else None,
            tokens=_mean(_tokens(p) for p in scored), seconds=_mean(p.get("seconds_train_so_far") for p in scored)))
    config = _dict(docs[0].get("config"))
    return Curve(label=label, name=config.get("variant") or config.get("method"), trainer=config.get("trainer"),
                 params_target=config.get("params_target"), points=tuple(points))


def base_reference(base: Any) -> Reference | None:
    """The base row's validation accuracy (interval by the row rule), or ``None`` without a validation score."""
    if base is None:
        return None
    blocks = [_dict(_dict(run.doc.get("evaluation")).get(SPLIT)) for run in base.runs]
    blocks = [b for b in blocks if stats.is_number(b.get("accuracy"))]
    if not blocks:
        return None
    interval = _interval(blocks)
    return Reference(label=base.label, accuracy=interval.mean, ci_low=interval.low, ci_high=interval.high,
                     interval=interval.method, seeds=interval.seeds)


def budget_curves(rows: Iterable[Any], base: Any = None) -> BudgetCurves | None:
    """The budget curves of a suite's rows (each with ``label``, ``is_base`` and ``runs`` whose ``doc`` is
    a result document), in row order, and the ``base`` row's validation reference; ``None`` when no
    row's runs recorded checkpoints."""
    curves = []
    for row in rows:
        if row.is_base:
            continue
        curve = row_curve(row.label, [run.doc for run in row.runs])
        if curve is not None:
            curves.append(curve)
    if not curves:
        return None
    return BudgetCurves(curves=tuple(curves), base=base_reference(base))


# ---- where validation stops improving ------------------------------------------------------------
#: Verdicts of a row's last checkpoint segment.
IMPROVING, FALLING, FLAT = "still improving", "falling", "no detectable change"


@dataclass(frozen=True)
class Segment:
    """Validation accuracy at ``end`` minus at ``start`` (same row, same validation items), with its 95%
    interval: Newcombe's hybrid score interval on the counts pooled over seeds (no item vectors are kept
    at checkpoints, so it is unpaired, hence conservative), widened to the t interval over the seeds'
    own differences when there are several."""

    start: int
    end: int
    delta: float
    low: float
    high: float
    seeds: int

    @property
    def verdict(self) -> str:
        return IMPROVING if self.low > 0 else FALLING if self.high < 0 else FLAT

    def text(self) -> str:
        return (f"{stats.fmt_pct(self.delta, sign=True)} [{stats.fmt_pct(self.low, sign=True)}, "
                f"{stats.fmt_pct(self.high, sign=True)}]")


def change(docs: Sequence[dict], start: int, end: int) -> Segment | None:
    """:class:`Segment` from checkpoint ``start`` to ``end`` over the runs (``docs``) that scored both
    with counts; ``None`` when none did."""
    pairs = []
    for doc in docs:
        by_step = {p["step"]: p for p in checkpoints_of(doc)}
        a, b = by_step.get(start), by_step.get(end)
        if a and b and all(isinstance(p.get(k), int) and p["n"] > 0 for p in (a, b) for k in ("correct", "n")):
            pairs.append((a, b))
    if not pairs:
        return None
    ka, na = sum(a["correct"] for a, _ in pairs), sum(a["n"] for a, _ in pairs)
    kb, nb = sum(b["correct"] for _, b in pairs), sum(b["n"] for _, b in pairs)
    pa, pb = ka / na, kb / nb
    (la, ua), (lb, ub) = wilson_interval(ka, na, stats.LEVEL), wilson_interval(kb, nb, stats.LEVEL)
    delta = pb - pa
    low, high = delta - ((pb - lb) ** 2 + (ua - pa) ** 2) ** 0.5, delta + ((ub - pb) ** 2 + (pa - la) ** 2) ** 0.5
    if len(pairs) > 1:
        diffs = [b["correct"] / b["n"] - a["correct"] / a["n"] for a, b in pairs]
        half = stats.t_quantile(len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
        low, high = min(low, statistics.fmean(diffs) - half), max(high, statistics.fmean(diffs) + half)
        low, high = stats.within_one(low, high)  # whatever t says
    return Segment(start, end, delta, low, high, len(pairs))


@dataclass(frozen=True)
class Plateau:
    """Where a row's validation stands at its last checkpoint: ``recent`` is the last segment, ``overall``
    first to last checkpoint, ``from_peak`` best to last (``None`` when the last is best)."""

    label: str
    curve: Curve
    recent: Segment | None
    overall: Segment | None
    peak: CurvePoint
    from_peak: Segment | None

    @property
    def past_peak(self) -> bool:
        """The last checkpoint is detectably below the best one: the budget overshoots this row."""
        return self.from_peak is not None and self.from_peak.high < 0

    @property
    def stopped(self) -> bool:
        """At or past where validation stops improving: the last segment does not detectably rise, and the
        row is not at its best at the last checkpoint after a detectable rise over the run."""
        improving = self.recent is not None and self.recent.verdict == IMPROVING
        rising = self.from_peak is None and self.overall is not None and self.overall.low > 0
        return not improving and not rising

    def verdict(self) -> str:
        """``"still improving"``, ``"rose over the run, highest at the last checkpoint"``, ``"past its
        peak"``, ``"rose over the run, then no detectable change"``, ``"falling"`` or ``"no detectable
        change"``."""
        if not self.stopped:
            return IMPROVING if self.recent is not None and self.recent.verdict == IMPROVING else RISING
        if self.past_peak:
            return PAST_PEAK
        last = self.recent.verdict if self.recent is not None else FLAT
        return ROSE_THEN_FLAT if last == FLAT and self.overall is not None and self.overall.low > 0 else last


RISING, PAST_PEAK = "rose over the run, highest at the last checkpoint", "past its peak"
ROSE_THEN_FLAT = "rose over the run, then no detectable change"


def plateau(label: str, docs: Sequence[dict]) -> Plateau | None:
    """THE budget rule for one row (its runs' result documents): ``None`` with fewer than two checkpoints."""
    curve = row_curve(label, docs)
    if curve is None or len(curve.points) < 2:
        return None
    first, previous, last = curve.points[0], curve.points[-2], curve.points[-1]
    peak = max(curve.points, key=lambda p: (p.accuracy, -p.step))
    return Plateau(label, curve, change(docs, previous.step, last.step), change(docs, first.step, last.step), peak,
                   change(docs, peak.step, last.step) if peak.step != last.step else None)


def plateaus(rows: Iterable[Any]) -> list[Plateau]:
    """:func:`plateau` of every trained row (``label``, ``is_base``, ``runs``) with two checkpoints or more,
    less rows at a rate not chosen (``lr_selection`` unselected)."""
    found = (plateau(row.label, [run.doc for run in row.runs]) for row in rows
             if not row.is_base and getattr(row, "lr_selection", None) != stats.LR_UNSELECTED)
    return [p for p in found if p is not None]

"""From a suite's runs to leaderboard rows: seeds averaged, learning rates selected, fronts found.

Rules (also in docs/site.md):
- A *point* is a config with its seed and learning rate removed. Seeds of the same point and
  learning rate are averaged: mean test accuracy and a 95% interval (see :func:`seed_interval`).
- Per point, the learning rate with the best mean *validation* accuracy is shown (ties go to the
  smaller rate). Test accuracy never selects anything. When several rates were run and any of
  them lacks a validation score, nothing is selected: every rate is shown, marked "unselected".
- The base model (method ``base``) is the reference row; Δ vs base is measured against it.
- Failed and cancelled runs never enter a row; they are listed apart.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pefthub import health as run_health
from pefthub.results import ResultFileError, read_samples
from pefthub.site.load import Run, Suite
from pefthub.site.metrics import is_number

LR_SELECTED = "validation"
LR_SINGLE = "single"
LR_UNSELECTED = "unselected"


@dataclass
class Row:
    """One leaderboard row: a point at one learning rate, its seeds averaged."""

    name: str                       # the variant name, or the method
    method: str
    trainer: str
    runs: list[Run]
    learning_rate: float | None
    lr_selection: str
    lr_candidates: list[float]
    trainable_params: int | None
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None
    validation_accuracy: float | None
    adapter_bytes: float | None
    saved_adapter_bytes: float | None
    train_seconds: float | None
    peak_memory_bytes: float | None
    delta_vs_base: float | None = None
    is_base: bool = False
    flags: list[str] = field(default_factory=list)   # run-health flags, shown when present
    flag_details: list[run_health.Flag] = field(default_factory=list)   # the same with severity and detail

    @property
    def seeds(self) -> int:
        return len(self.runs)

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    @property
    def method_config(self) -> dict:
        value = self.runs[0].config.get("method_config")
        return value if isinstance(value, dict) else {}

    def as_record(self) -> dict:
        """Raw numbers for the CSV/JSON downloads."""
        return {
            "name": self.name, "method": self.method, "trainer": self.trainer, "trainable_params": self.trainable_params,
            "adapter_bytes": self.adapter_bytes, "saved_adapter_bytes": self.saved_adapter_bytes,
            "accuracy": self.accuracy, "ci_low": self.ci_low, "ci_high": self.ci_high, "ci_method": self.ci_method,
            "delta_vs_base": self.delta_vs_base, "train_seconds": self.train_seconds,
            "peak_memory_bytes": self.peak_memory_bytes, "learning_rate": self.learning_rate,
            "lr_selection": self.lr_selection, "validation_accuracy": self.validation_accuracy,
            "seeds": self.seeds, "run_ids": self.run_ids, "reference": self.is_base,
            "method_config": self.method_config,
            "flags": list(self.flags),
        }


@dataclass
class SuiteView:
    """Everything the index shows for one suite."""

    suite: Suite
    rows: list[Row]                 # ranked candidates, base row included (flagged is_base)
    base: Row | None
    successes: list[Run]
    failures: list[Run]
    models: list[str] = field(default_factory=list)
    tasks: list[Any] = field(default_factory=list)
    budgets: list[tuple[Any, int]] = field(default_factory=list)   # (declared budget, runs using it)
    evals: list[tuple[Any, int]] = field(default_factory=list)
    first_started: str | None = None
    last_finished: str | None = None
    health: dict[str, run_health.Health] = field(default_factory=dict)   # run id -> flags and measures

    @property
    def ranked(self) -> list[Row]:
        return [r for r in self.rows if not r.is_base]


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def t_quantile(df: int, level: float = 0.95) -> float:
    """Two-sided Student t critical value (scipy, imported lazily: only multi-seed rows need it)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def seed_interval(runs: list[Run]) -> tuple[float | None, float | None, float | None, str | None]:
    """(mean, low, high, method) of test accuracy over the runs (one per seed).

    One run: its own interval as recorded (Wilson, from the evaluation). Several: the Student t
    95% interval of the seed means, widened to at least the runs' mean recorded interval, because
    every seed is scored on the same test problems and more seeds do not shrink that part of the
    uncertainty (a t interval of identical seeds would otherwise have zero width).
    """
    scored = [r for r in runs if r.evaluation("test")]
    if not scored:
        return None, None, None, None
    accs = [r.accuracy("test") for r in scored]
    blocks = [r.evaluation("test") for r in scored]
    lows = [b.get("ci_low") for b in blocks if is_number(b.get("ci_low"))]
    highs = [b.get("ci_high") for b in blocks if is_number(b.get("ci_high"))]
    mean = statistics.fmean(accs)
    if len(scored) == 1:
        method = blocks[0].get("ci_method") if isinstance(blocks[0].get("ci_method"), str) else None
        return mean, (lows[0] if lows else None), (highs[0] if highs else None), method
    half = t_quantile(len(accs) - 1) * statistics.stdev(accs) / math.sqrt(len(accs))
    low, high = max(0.0, mean - half), min(1.0, mean + half)
    method = f"t over {len(accs)} seeds"
    if len(lows) == len(scored) and len(highs) == len(scored):
        eval_low, eval_high = statistics.fmean(lows), statistics.fmean(highs)
        if eval_low < low or eval_high > high:
            low, high = min(low, eval_low), max(high, eval_high)
            method += ", widened to the per-run interval"
    return mean, low, high, method


def point_key(run: Run) -> str:
    """A run's config without seed and learning rate: seeds and rates of one point share it."""
    config = {k: v for k, v in run.config.items() if k not in ("seed", "learning_rate")}
    return json.dumps(config, sort_keys=True, default=str)


def _row(runs: list[Run], selection: str, candidates: list[float]) -> Row:
    mean, low, high, ci_method = seed_interval(runs)
    params = Counter(r.trainable_params for r in runs).most_common(1)[0][0]
    return Row(
        name=runs[0].name, method=runs[0].method, trainer=runs[0].trainer, runs=sorted(runs, key=lambda r: str(r.seed)),
        learning_rate=runs[0].learning_rate, lr_selection=selection, lr_candidates=candidates,
        trainable_params=params, accuracy=mean, ci_low=low, ci_high=high, ci_method=ci_method,
        validation_accuracy=_mean(r.accuracy("validation") for r in runs),
        adapter_bytes=_mean(r.adapter_bytes for r in runs),
        saved_adapter_bytes=_mean(r.saved_adapter_bytes for r in runs),
        train_seconds=_mean(r.train_seconds for r in runs),
        peak_memory_bytes=_mean(r.peak_memory_bytes for r in runs),
        is_base=runs[0].is_base,
    )


def select_rows(runs: list[Run]) -> list[Row]:
    """Group successful runs into points, average seeds, select each point's learning rate."""
    points: dict[str, dict[float | None, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        points[point_key(run)][run.learning_rate].append(run)
    rows = []
    for by_lr in points.values():
        candidates = sorted(lr for lr in by_lr if lr is not None)
        if len(by_lr) == 1:
            (group,) = by_lr.values()
            rows.append(_row(group, LR_SINGLE, candidates))
            continue
        val = {lr: _mean(r.accuracy("validation") for r in group) for lr, group in by_lr.items()}
        if all(v is not None for v in val.values()):
            best = max(by_lr, key=lambda lr: (val[lr], -(lr if lr is not None else math.inf)))
            rows.append(_row(by_lr[best], LR_SELECTED, candidates))
        else:
            rows.extend(_row(group, LR_UNSELECTED, candidates) for group in by_lr.values())
    return rows


def _most_common(values: Iterable[Any]) -> list[tuple[Any, int]]:
    counts = Counter(json.dumps(v, sort_keys=True, default=str) for v in values)
    return [(json.loads(text), n) for text, n in counts.most_common()]


def sort_key(row: Row) -> tuple:
    """Default order: accuracy high to low, unscored rows last, then fewer parameters first."""
    return (row.accuracy is None, -(row.accuracy or 0.0), row.trainable_params or 0, row.name, row.trainer)


def view_suite(suite: Suite) -> SuiteView:
    successes = [r for r in suite.runs if r.status == "success"]
    failures = sorted((r for r in suite.runs if r.status != "success"),
                      key=lambda r: (r.doc.get("finished_at") or r.doc.get("started_at") or "", r.run_id))
    rows = sorted(select_rows(successes), key=sort_key)
    base_rows = [r for r in rows if r.is_base and r.accuracy is not None]
    # Several base points (e.g. evaluated with two protocols) cannot all be "the" reference:
    # the one with most seeds, then the most recent, is used; all stay in the table.
    base = max(base_rows, key=lambda r: (r.seeds, max(x.doc.get("finished_at") or "" for x in r.runs)), default=None)
    for row in rows:
        if base is not None and row.accuracy is not None:
            row.delta_vs_base = row.accuracy - base.accuracy
    healths = suite_health(successes)
    for row in rows:
        row.flag_details = run_health.row_flags(healths.get(r.run_id) for r in row.runs)
        row.flags = [f.name for f in row.flag_details]
    trained = [r for r in suite.runs if not r.is_base] or suite.runs
    started = [r.doc.get("started_at") for r in suite.runs if isinstance(r.doc.get("started_at"), str)]
    finished = [r.doc.get("finished_at") for r in suite.runs if isinstance(r.doc.get("finished_at"), str)]
    return SuiteView(
        suite=suite, rows=rows, base=base, successes=successes, failures=failures,
        models=sorted({r.config["model"] for r in suite.runs}),
        tasks=[t for t, _ in _most_common(r.config.get("task") for r in suite.runs)],
        budgets=_most_common(r.config.get("budget") for r in trained),
        evals=_most_common(r.config.get("eval") for r in suite.runs),
        first_started=min(started, default=None), last_finished=max(finished, default=None), health=healths,
    )


def _run_samples(run: Run) -> list[dict] | None:
    path = run.samples_file()
    if path is None:
        return None
    try:
        return [r for r in read_samples(path) if isinstance(r, dict)]
    except ResultFileError:
        return None  # the build reports the unreadable file when it copies the samples


def suite_health(runs: list[Run]) -> dict[str, run_health.Health]:
    """Run-health flags of every successful trained run, against the suite's base-model run."""
    by_id = {r.run_id: r for r in runs}
    return run_health.assess_all([r.doc for r in runs], lambda doc: _run_samples(by_id[doc["run_id"]]))


def pareto_front(rows: list[Row], cost: Callable[[Row], float | None]) -> list[Row]:
    """Rows no other row beats on both axes (lower cost, higher accuracy), by increasing cost."""
    candidates = sorted((r for r in rows if cost(r) is not None and r.accuracy is not None),
                        key=lambda r: (cost(r), -r.accuracy))
    front, best = [], -math.inf
    for row in candidates:
        if row.accuracy > best:
            front.append(row)
            best = row.accuracy
    return front

"""From a suite's runs to leaderboard rows: seeds averaged, learning rates selected, fronts found.

The rules are :mod:`pefthub.report.stats`' (also used by `pefthub bench`; docs/site.md, docs/benchmarks.md):
seeds averaged with a 95% interval, learning rate chosen on validation (every rate shown, marked
"unselected", when that is impossible), each row compared item by item with the base row (paired Δ,
Holm verdict), rows differing only in trainer compared with each other. Failed and cancelled runs
never enter a row; they are listed apart.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pefthub.report import stats
from pefthub.report import health as run_health
from pefthub.results import ResultFileError, read_samples
from pefthub.site.load import Run, Suite

LR_SELECTED, LR_SINGLE, LR_UNSELECTED = stats.LR_SELECTED, stats.LR_SINGLE, stats.LR_UNSELECTED


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
    vs_base: stats.Comparison | None = None    # paired Δ against the base row, Holm verdict
    vs_base_note: str | None = None            # why there is no paired comparison
    flags: list[str] = field(default_factory=list)   # run-health flags, shown when present
    flag_details: list[run_health.Flag] = field(default_factory=list)   # the same with severity and detail
    lr_at_edge: str | None = None              # stats.LR_EDGE_LOW | LR_EDGE_HIGH: chosen rate at its grid's edge

    @property
    def label(self) -> str:
        """``tinylora@13/grpo`` (as on the command line); unselected rates add ``/lr=…``."""
        text = stats.row_label(self.runs[0].config)
        if self.lr_selection == LR_UNSELECTED and self.learning_rate is not None:
            text += f"/lr={self.learning_rate:g}"
        return text

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
            "lr_selection": self.lr_selection, "lr_at_edge": self.lr_at_edge,
            "validation_accuracy": self.validation_accuracy,
            "seeds": self.seeds, "run_ids": self.run_ids, "reference": self.is_base,
            "method_config": self.method_config,
            "delta_low": self.vs_base.low if self.vs_base else None,
            "delta_high": self.vs_base.high if self.vs_base else None,
            "delta_p": self.vs_base.p_value if self.vs_base else None,
            "delta_test": self.vs_base.test if self.vs_base else None,
            "delta_interval": self.vs_base.interval if self.vs_base else None,
            "delta_p_holm": self.vs_base.p_holm if self.vs_base else None,
            "verdict": self.vs_base.verdict if self.vs_base else None,
            "paired_items": self.vs_base.n_items if self.vs_base else None,
            "vs_base_note": self.vs_base_note, "flags": list(self.flags),
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
    trainer_pairs: list[stats.Comparison | tuple[str, str, str]] = field(default_factory=list)
    health: dict[str, run_health.Health] = field(default_factory=dict)   # run id -> flags and measures

    @property
    def ranked(self) -> list[Row]:
        return [r for r in self.rows if not r.is_base]


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _row(runs: list[Run], selection: str, candidates: list[float], at_edge: str | None = None) -> Row:
    interval = stats.seed_interval([r.doc for r in runs])
    params = Counter(r.trainable_params for r in runs).most_common(1)[0][0]
    return Row(
        name=runs[0].name, method=runs[0].method, trainer=runs[0].trainer, runs=sorted(runs, key=lambda r: str(r.seed)),
        learning_rate=runs[0].learning_rate, lr_selection=selection, lr_candidates=candidates,
        trainable_params=params, accuracy=interval.mean, ci_low=interval.low, ci_high=interval.high,
        ci_method=interval.method,
        validation_accuracy=_mean(r.accuracy("validation") for r in runs),
        adapter_bytes=_mean(r.adapter_bytes for r in runs),
        saved_adapter_bytes=_mean(r.saved_adapter_bytes for r in runs),
        train_seconds=_mean(r.train_seconds for r in runs),
        peak_memory_bytes=_mean(r.peak_memory_bytes for r in runs),
        is_base=runs[0].is_base, lr_at_edge=at_edge,
    )


def select_rows(runs: list[Run], attempted: list[Run] | None = None) -> list[Row]:
    """Group successful runs into points, average seeds, select each point's learning rate (stats' rule;
    ``attempted``: every run of the suite, failed ones included)."""
    points: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        points[stats.point_key(run.config)].append(run)
    tried: dict[str, list[dict]] = defaultdict(list)
    for run in attempted if attempted is not None else runs:
        tried[stats.point_key(run.config)].append(run.doc)
    rows = []
    for key, members in points.items():
        by_doc = {id(r.doc): r for r in members}
        selection = stats.select_learning_rate((r.doc for r in members), tried[key])
        candidates = [lr for lr in selection.candidates if lr is not None]
        for docs in selection.chosen.values():
            rows.append(_row([by_doc[id(d)] for d in docs], selection.rule, candidates, selection.at_edge))
    return rows


def stat_row(row: Row) -> stats.StatRow:
    """The row as :mod:`pefthub.report.stats` compares it (its runs and their samples files)."""
    label = row.label
    return stats.StatRow(label, row.runs[0].config, [r.doc for r in row.runs], [r.samples_file() for r in row.runs])


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
    rows = sorted(select_rows(successes, suite.runs), key=sort_key)
    base_rows = [r for r in rows if r.is_base and r.accuracy is not None]
    # Several base points (e.g. evaluated with two protocols) cannot all be "the" reference:
    # the one with most seeds, then the most recent, is used; all stay in the table.
    base = max(base_rows, key=lambda r: (r.seeds, max(x.doc.get("finished_at") or "" for x in r.runs)), default=None)
    for row in rows:
        if base is not None and row.accuracy is not None:
            row.delta_vs_base = row.accuracy - base.accuracy
    scored = [r for r in rows if r.accuracy is not None]
    as_stat = {id(r): stat_row(r) for r in scored}
    outcomes = stats.versus_base([as_stat[id(r)] for r in scored], as_stat.get(id(base)))
    for row in scored:
        outcome = outcomes.get(as_stat[id(row)].label)
        if isinstance(outcome, stats.Comparison):
            row.vs_base = outcome
        elif outcome is not None:
            row.vs_base_note = outcome
    pairs: list[stats.Comparison | tuple[str, str, str]] = []
    for a, b in stats.trainer_pairs([as_stat[id(r)] for r in scored]):
        try:
            pairs.append(stats.compare_rows(a, b))
        except stats.PairingError as exc:
            pairs.append((a.label, b.label, str(exc)))
    healths = suite_health(successes)
    for row in rows:
        row.flag_details = run_health.row_flags((healths.get(r.run_id) for r in row.runs),
                                                [r.doc for r in row.runs if r.doc.get("status") == "success"])
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
        trainer_pairs=pairs,
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

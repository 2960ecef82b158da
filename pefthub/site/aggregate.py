"""What the site shows of one suite: the report layer's table (:func:`pefthub.report.table.suite_table`,
the same rows `pefthub bench` prints), sorted for display, plus the suite-level facts the index
prints (models, tasks, budgets, dates) and the Pareto fronts of its plots.

Rows, the base-run rule, health flags and comparisons are :mod:`pefthub.report`'s; this module only
presents them (docs/site.md, docs/architecture.md "Where each rule lives").
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pefthub.report import health as run_health
from pefthub.report import stats
from pefthub.report.control import Control, declared_control
from pefthub.report.records import RunRecord, read_records
from pefthub.report.rows import Row
from pefthub.report.table import suite_table, trainer_pairs
from pefthub.site.load import Run, Suite

LR_SELECTED, LR_SINGLE, LR_UNSELECTED = stats.LR_SELECTED, stats.LR_SINGLE, stats.LR_UNSELECTED

__all__ = ["LR_SELECTED", "LR_SINGLE", "LR_UNSELECTED", "Row", "SuiteView", "pareto_front", "sort_key", "suite_rows",
           "view_suite"]


@dataclass
class SuiteView:
    """Everything the index shows for one suite."""

    suite: Suite
    rows: list[Row]                 # display order (:func:`sort_key`), base row included (``is_base``)
    base: Row | None                # the reference row (:func:`pefthub.report.rows.base_row`)
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
    control: Control | None = None  # the suite's declared positive control, as the table gated on it

    @property
    def ranked(self) -> list[Row]:
        return [r for r in self.rows if not r.is_base]


def sort_key(row: Row) -> tuple:
    """Default order: accuracy high to low, unscored rows last, then fewer parameters first."""
    return (row.accuracy is None, -(row.accuracy or 0.0), row.trainable_params or 0, row.name, row.trainer)


def suite_rows(records: Sequence[RunRecord]) -> list[Row]:
    """The rows of a suite from its records, in display order: the report's rows (the one row builder),
    health flags and comparisons with base included."""
    return sorted(suite_table(records).rows, key=sort_key)


def _most_common(values: Iterable[Any]) -> list[tuple[Any, int]]:
    counts = Counter(json.dumps(v, sort_keys=True, default=str) for v in values)
    return [(json.loads(text), n) for text, n in counts.most_common()]


def view_suite(suite: Suite, records: Sequence[RunRecord] | None = None) -> SuiteView:
    """The index's view of ``suite``; ``records`` are its runs as :func:`pefthub.report.records.read_records`
    reads them (read from ``suite.results_dir`` when not given)."""
    records = read_records(suite.results_dir) if records is None else list(records)
    table = suite_table(records, declared_control(suite.name))
    rows = sorted(table.rows, key=sort_key)
    successes = [r for r in suite.runs if r.status == "success"]
    failures = sorted((r for r in suite.runs if r.status != "success"),
                      key=lambda r: (r.doc.get("finished_at") or r.doc.get("started_at") or "", r.run_id))
    trained = [r for r in suite.runs if not r.is_base] or suite.runs
    started = [r.doc.get("started_at") for r in suite.runs if isinstance(r.doc.get("started_at"), str)]
    finished = [r.doc.get("finished_at") for r in suite.runs if isinstance(r.doc.get("finished_at"), str)]
    return SuiteView(
        suite=suite, rows=rows, base=table.base, successes=successes, failures=failures,
        models=sorted({r.config["model"] for r in suite.runs}),
        tasks=[t for t, _ in _most_common(r.config.get("task") for r in suite.runs)],
        budgets=_most_common(r.config.get("budget") for r in trained),
        evals=_most_common(r.config.get("eval") for r in suite.runs),
        first_started=min(started, default=None), last_finished=max(finished, default=None), health=table.health,
        trainer_pairs=trainer_pairs(table.rows), control=table.control,
    )


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

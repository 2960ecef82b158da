"""The one leaderboard row builder and the one base-run rule.

A row is a point (every config key but seed and learning rate) at its chosen learning rate
(:func:`pefthub.report.stats.select_learning_rate`), its seeds averaged with a 95% interval; a point
whose rate cannot be chosen gives one row per rate, labelled ``/lr=…``. Failed and cancelled runs
never enter a row (they are counted on it and listed apart). `pefthub bench`, `findings`,
`compare`, `plan` and the site all get their rows from :func:`build_rows`, and the reference row
from :func:`base_row`.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from pefthub.report import stats
from pefthub.report.floor import one_answer_runs
from pefthub.report.records import RunRecord

#: The lm-eval metric that scores only answers in the exact format the prompt asks for.
STRICT_METRIC = "exact_match,strict-match"


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if stats.is_number(value) else None


# ---- what one run contributes to a row -------------------------------------------------------------
def trainable_params(doc: dict) -> int | None:
    value = _dict(doc.get("method")).get("trainable_params")
    if stats.is_number(value):
        return int(value)
    return 0 if _dict(doc.get("config")).get("method") == stats.BASE_METHOD else None


def adapter_bytes(doc: dict, key: str = "trainable_fp32") -> float | None:
    """Bytes of the run's trained values (``trainable_fp32``) or of its saved adapter (``saved_fp32``)."""
    value = _dict(doc.get("method")).get("adapter_bytes")
    if isinstance(value, dict):
        value = value.get(key)
    elif key != "trainable_fp32":
        value = None
    return _number(value)


def spent(doc: dict, key: str) -> float | None:
    return _number(_dict(_dict(doc.get("budget")).get("spent")).get(key))


def train_seconds(doc: dict) -> float | None:
    """Training wall time, rollouts included, evaluation excluded (see site/metrics.toml)."""
    if _dict(doc.get("config")).get("method") == stats.BASE_METHOD:
        return None
    parts = [spent(doc, "seconds_generation"), spent(doc, "seconds_train")]
    if any(p is not None for p in parts):
        return sum(p for p in parts if p is not None)
    total, evaluation = spent(doc, "seconds_total"), spent(doc, "seconds_eval")
    return None if total is None else total - (evaluation or 0.0)


def peak_memory_bytes(doc: dict) -> float | None:
    accelerator = spent(doc, "peak_accelerator_bytes")
    return accelerator if accelerator is not None else spent(doc, "peak_rss_bytes")


def strict_accuracy(doc: dict) -> float | None:
    """The run's strict-match test score (``exact_match,strict-match``), if recorded."""
    metrics = _dict(_dict(_dict(doc.get("evaluation")).get("test")).get("metrics"))
    return _number(metrics.get(STRICT_METRIC))


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


# ---- the row --------------------------------------------------------------------------------------
@dataclass
class Row:
    """One leaderboard row: a point at one learning rate, its seeds (``records``, by seed) averaged.

    ``vs_base``/``vs_base_note``/``untested``/``vs_floor`` and ``flags`` are filled by :func:`pefthub.report.table.suite_table`.
    """

    label: str                      # ``tinylora@13/grpo``; an unselected rate adds ``/lr=…``
    config: dict                    # the first run's config (seed and rate aside, shared)
    records: list[RunRecord]
    learning_rate: float | None
    lr_selection: str               # stats.LR_SELECTED | LR_SINGLE | LR_UNSELECTED
    lr_candidates: list[float]
    lr_at_edge: str | None          # stats.LR_EDGE_LOW | LR_EDGE_HIGH: chosen rate at its grid's edge
    lr_one_answer: list[float]      # rates passed over: a run gave one answer to its validation items (floor.one_answer_runs)
    accuracy: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None
    validation_accuracy: float | None
    strict_accuracy: float | None
    trainable_params: int | None
    adapter_bytes: float | None
    saved_adapter_bytes: float | None
    train_seconds: float | None
    peak_memory_bytes: float | None
    attempted: int                  # runs of the point, every rate and status
    failed: int
    errors: list[str]
    delta_vs_base: float | None = None
    vs_base: stats.Comparison | None = None     # paired Δ against the base row (Holm verdict when tested)
    vs_base_note: str | None = None             # why there is no paired comparison
    untested: str = ""                          # why ``vs_base`` has no verdict though the row trained (control)
    vs_floor: stats.Comparison | None = None    # paired Δ against the constant-answer floor (pefthub.report.floor)
    flags: list = field(default_factory=list)   # pefthub.report.health.RowFlag over the row's seeds

    @property
    def is_base(self) -> bool:
        return self.config.get("method") == stats.BASE_METHOD

    @property
    def method(self) -> str:
        return self.config.get("method")

    @property
    def variant(self) -> str | None:
        return self.config.get("variant") or None

    @property
    def name(self) -> str:
        """The variant name, or the method."""
        return self.variant or self.method

    @property
    def trainer(self) -> str:
        return self.config.get("trainer")

    @property
    def params_target(self) -> int | None:
        return self.config.get("params_target")

    @property
    def method_config(self) -> dict:
        return _dict(self.config.get("method_config"))

    @property
    def seeds(self) -> int:
        return len(self.records)

    @property
    def runs(self) -> list[RunRecord]:
        return self.records

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.records]

    @property
    def docs(self) -> list[dict]:
        return [r.doc for r in self.records]

    @property
    def flag_names(self) -> list[str]:
        return [f.name for f in self.flags]

    def seed_row(self, record: RunRecord) -> "Row":
        """This row restricted to one of its runs (a per-seed comparison)."""
        return one_run_row(record, self.label)

    def as_record(self) -> dict:
        """Raw numbers for the CSV/JSON downloads."""
        c = self.vs_base
        return {
            "label": self.label, "name": self.name, "method": self.method, "trainer": self.trainer,
            "trainable_params": self.trainable_params, "adapter_bytes": self.adapter_bytes,
            "saved_adapter_bytes": self.saved_adapter_bytes, "accuracy": self.accuracy, "ci_low": self.ci_low,
            "ci_high": self.ci_high, "ci_method": self.ci_method, "strict_accuracy": self.strict_accuracy,
            "delta_vs_base": self.delta_vs_base, "train_seconds": self.train_seconds,
            "peak_memory_bytes": self.peak_memory_bytes, "learning_rate": self.learning_rate,
            "lr_selection": self.lr_selection, "lr_at_edge": self.lr_at_edge, "lr_one_answer": self.lr_one_answer,
            "validation_accuracy": self.validation_accuracy, "seeds": self.seeds, "run_ids": self.run_ids,
            "reference": self.is_base, "method_config": self.method_config,
            "delta_low": c.low if c else None, "delta_high": c.high if c else None,
            "delta_p": c.p_value if c else None, "delta_test": c.test if c else None,
            "delta_interval": c.interval if c else None, "delta_p_holm": c.p_holm if c else None,
            "verdict": c.verdict if c else None, "paired_items": c.n_items if c else None,
            "vs_base_note": self.vs_base_note, "flags": self.flag_names,
            "delta_vs_floor": self.vs_floor.delta if self.vs_floor else None,
            "delta_vs_floor_low": self.vs_floor.low if self.vs_floor else None,
            "delta_vs_floor_high": self.vs_floor.high if self.vs_floor else None,
        }


def _row(label: str, records: list[RunRecord], selection: stats.Selection | None, members: Sequence[RunRecord]
         ) -> Row:
    docs = [r.doc for r in records]
    interval = stats.seed_interval(docs)
    params = Counter(trainable_params(d) for d in docs).most_common(1)[0][0] if docs else None
    rule = selection.rule if selection else stats.LR_SINGLE
    return Row(
        label=label, config=records[0].config, records=records,
        learning_rate=_number(records[0].config.get("learning_rate")), lr_selection=rule,
        lr_candidates=[lr for lr in (selection.candidates if selection else []) if lr is not None],
        lr_at_edge=selection.at_edge if selection else None,
        lr_one_answer=[lr for lr in (selection.one_answer if selection else []) if lr is not None],
        accuracy=interval.mean, ci_low=interval.low, ci_high=interval.high, ci_method=interval.method,
        validation_accuracy=_mean(stats.accuracy(d, "validation") for d in docs),
        strict_accuracy=_mean(strict_accuracy(d) for d in docs), trainable_params=params,
        adapter_bytes=_mean(adapter_bytes(d) for d in docs),
        saved_adapter_bytes=_mean(adapter_bytes(d, "saved_fp32") for d in docs),
        train_seconds=_mean(train_seconds(d) for d in docs), peak_memory_bytes=_mean(peak_memory_bytes(d) for d in docs),
        attempted=len(members), failed=sum(m.status == "failed" for m in members),
        errors=sorted({m.doc["error"] for m in members if m.status != "success" and m.doc.get("error")}),
    )


def build_rows(records: Iterable[RunRecord]) -> list[Row]:
    """THE row builder: the rows of a suite's runs, in order of each point's first run."""
    points: dict[str, list[RunRecord]] = {}
    for record in records:
        points.setdefault(stats.point_key(record.config), []).append(record)
    rows = []
    for members in points.values():
        successes = [m for m in members if m.status == "success"]
        selection = stats.select_learning_rate((m.doc for m in successes), [m.doc for m in members],
                                               one_answer_runs(successes))
        if selection is None:
            continue
        by_doc = {id(m.doc): m for m in successes}
        for lr, docs in selection.chosen.items():
            chosen = sorted((by_doc[id(d)] for d in docs), key=lambda r: str(r.seed))
            label = stats.row_label(chosen[0].config)
            if selection.rule == stats.LR_UNSELECTED:
                label += f"/lr={lr:g}" if stats.is_number(lr) else f"/lr={lr}"
            rows.append(_row(label, chosen, selection, members))
    return rows


def one_run_row(record: RunRecord, label: str | None = None) -> Row:
    """A row of a single run (``pefthub compare`` by run id, per-seed comparisons)."""
    return _row(label or stats.row_label(record.config), [record], None, [record])


# ---- the base run --------------------------------------------------------------------------------
def comparable(doc: dict, base: dict) -> bool:
    """Same model, task and test protocol (the test limit may differ: items are matched by id)."""
    a, b = _dict(doc.get("config")), _dict(base.get("config"))
    ignore = ("limit", "validation_limit")
    eval_a = {k: v for k, v in _dict(a.get("eval")).items() if k not in ignore}
    eval_b = {k: v for k, v in _dict(b.get("eval")).items() if k not in ignore}
    return a.get("model") == b.get("model") and a.get("task") == b.get("task") and eval_a == eval_b


def _finished(row: Row) -> str:
    return max(str(r.doc.get("finished_at") or "") for r in row.records)


def base_row(rows: Iterable[Row], like: dict | None = None) -> Row | None:
    """THE base-run rule: the reference row is the base-model row with a test score (comparable to the
    result document ``like``, when given) that has the most seeds, then finished last. Several base
    points (e.g. evaluated with two protocols) all stay in the table; one is the reference. Health
    compares a run with the first run (by seed) of its base row."""
    candidates = [r for r in rows if r.is_base and r.accuracy is not None
                  and (like is None or comparable(like, r.records[0].doc))]
    return max(candidates, key=lambda r: (r.seeds, _finished(r), r.label), default=None)

"""A suite's wall time estimated from runs already measured on the machine that will run it.

Each planned run costs ``steps`` optimizer steps at the measured seconds per step of its method and
trainer, plus every item it evaluates (test, validation, and validation at each checkpoint) at the
measured seconds per item, plus the measured fixed cost of a run (loading, merging, writing). Only
reference runs with the same budget shape (batch, generations, new tokens) and evaluation length are
used: seconds per step and per item depend on them more than on anything else.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pefthub.results import read_results

#: Budget keys a reference run must share with the planned run for its seconds per step to apply.
SHAPE_KEYS = ("batch_size", "generations", "max_new_tokens", "max_seq_len")


@dataclass
class Measured:
    """Per-run costs read off one successful result document."""

    method: str
    trainer: str
    shape: tuple
    eval_tokens: int | None
    step_seconds: float | None        # training + generation seconds per optimizer step
    item_seconds: float | None        # evaluation seconds per item evaluated (final and checkpoints)
    fixed_seconds: float              # seconds_total minus training, generation and evaluation
    load_average: float | None        # mean 1-minute load at the run's start and end


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def measured(doc: dict) -> Measured | None:
    """The costs of a successful run, or None when it did not finish or recorded no seconds."""
    spent = (doc.get("budget") or {}).get("spent") or {}
    total = _number(spent.get("seconds_total"))
    if doc.get("status") != "success" or total is None:
        return None
    config = doc.get("config") or {}
    budget = config.get("budget") or {}
    steps = _number(spent.get("optimizer_steps")) or 0
    train = sum(_number(spent.get(k)) or 0.0 for k in ("seconds_train", "seconds_generation"))
    evaluated = sum(_number(block.get("n")) or 0 for block in (doc.get("evaluation") or {}).values()
                    if isinstance(block, dict))
    evaluated += sum(_number(c.get("n")) or 0 for c in doc.get("checkpoints") or [] if isinstance(c, dict))
    eval_seconds = sum(_number(spent.get(k)) or 0.0 for k in ("seconds_eval", "seconds_checkpoint_eval"))
    load = ((doc.get("environment") or {}).get("load_average") or {})
    loads = [v[0] for v in (load.get("start"), load.get("end")) if isinstance(v, list) and v]
    return Measured(method=str(config.get("variant") or config.get("method")), trainer=str(config.get("trainer")),
                    shape=tuple(budget.get(k) for k in SHAPE_KEYS),
                    eval_tokens=(config.get("eval") or {}).get("max_new_tokens"),
                    step_seconds=train / steps if steps else None,
                    item_seconds=eval_seconds / evaluated if evaluated else None,
                    fixed_seconds=max(0.0, total - train - eval_seconds),
                    load_average=statistics.fmean(loads) if loads else None)


def read_measurements(results_dirs: Iterable[str | Path]) -> list[Measured]:
    """The measured costs of every successful run in the given results directories."""
    out = []
    for directory in results_dirs:
        for _, doc in read_results(directory):
            found = measured(doc)
            if found is not None:
                out.append(found)
    return out


@dataclass
class RowTime:
    row: str
    runs: int
    seconds_per_run: float | None
    source: str                       # which reference runs the estimate rests on, in words

    @property
    def hours(self) -> float | None:
        return None if self.seconds_per_run is None else self.runs * self.seconds_per_run / 3600


@dataclass
class TimePlan:
    rows: list[RowTime]
    references: int
    load_average: float | None
    missing: list[str] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return sum(r.hours or 0.0 for r in self.rows)

    def to_dict(self) -> dict:
        return {"hours": self.hours, "references": self.references, "load_average": self.load_average,
                "missing": self.missing,
                "rows": [{"row": r.row, "runs": r.runs, "seconds_per_run": r.seconds_per_run, "hours": r.hours,
                          "source": r.source} for r in self.rows]}


def _median(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def plan_time(experiment_config: dict, row: str, runs: int, references: list[Measured]) -> RowTime:
    """The wall time of ``runs`` runs shaped like ``experiment_config`` (one of the row's runs)."""
    budget, evaluation = experiment_config.get("budget") or {}, experiment_config.get("eval") or {}
    method = str(experiment_config.get("variant") or experiment_config.get("method"))
    trainer = str(experiment_config.get("trainer"))
    steps = int(budget.get("steps") or 0)
    items = int(evaluation.get("limit") or 0) + int(evaluation.get("validation_limit") or 0)
    checkpoints = [c for c in evaluation.get("checkpoints") or [] if c != steps]
    items += len(checkpoints) * int(evaluation.get("validation_limit") or 0)
    shape = tuple(budget.get(k) for k in SHAPE_KEYS)
    same_eval = [m for m in references if m.eval_tokens == evaluation.get("max_new_tokens")]
    own = [m for m in same_eval if m.method == method and m.trainer == trainer and (not steps or m.shape == shape)]
    if steps:
        peers = [m for m in same_eval if m.trainer == trainer and m.shape == shape]
        step_seconds = _median(m.step_seconds for m in own) or _median(m.step_seconds for m in peers)
        if step_seconds is None:
            return RowTime(row, runs, None, f"no measured {trainer} run with this budget shape")
        source = f"{len(own)} {method}/{trainer} run(s)" if own else f"{len(peers)} other {trainer} run(s)"
    else:
        step_seconds, source = 0.0, f"{len(own)} {method} run(s)" if own else "all runs"
    pool = own or same_eval
    item_seconds, fixed = _median(m.item_seconds for m in pool), _median(m.fixed_seconds for m in pool)
    if item_seconds is None:
        return RowTime(row, runs, None, "no measured evaluation at this answer length")
    return RowTime(row, runs, steps * step_seconds + items * item_seconds + (fixed or 0.0), source)


def suite_time_plan(rows: list[tuple[str, dict, int]], references: list[Measured]) -> TimePlan:
    """``rows``: (row label, one planned run's config, planned runs) for every row of a suite."""
    planned = [plan_time(config, row, runs, references) for row, config, runs in rows]
    loads = [m.load_average for m in references if m.load_average is not None]
    return TimePlan(planned, len(references), statistics.fmean(loads) if loads else None,
                    [r.row for r in planned if r.seconds_per_run is None])

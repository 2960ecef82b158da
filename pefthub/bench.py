"""`pefthub bench`: run a suite's grid into its results store, resume, select, aggregate.

Resume policy (what a rerun does with each run of the grid, found by its config hash):

* ``success``: kept, never redone (change anything in its config and it is a different run).
* missing, ``cancelled`` (Ctrl-C, a cancelled Ray task) or an unreadable file: run.
* ``failed``: kept by default -- a divergence or an unsupported combination is a result, and
  rerunning it would usually fail the same way; ``--retry-failed`` reruns failed runs.

Selection and aggregation (pure functions of result documents, shared with the site):

* Rows are (method [variant], params budget, trainer): all of a config except learning rate
  and seed.
* The learning rate of a row is chosen on the **validation** split, never on test: the highest
  mean validation accuracy over the successful seeds, ties to the smaller learning rate. With one
  learning rate there is nothing to choose; when several were run and one lacks validation scores,
  nothing is selected.
* The test score of a row is the mean over seeds at that learning rate with a 95% Student-t
  interval over seeds, widened to the runs' mean per-run (Wilson) interval when that is wider:
  every seed is scored on the same test problems, so more seeds do not shrink that part of the
  uncertainty. With a single seed, the run's own Wilson interval over test problems.

These are the rules the leaderboard site applies too (``pefthub/site/aggregate.py``, docs/site.md);
a test checks that both give the same rows.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pefthub.results import ResultFileError, canonical_json, clean_temp_files, read_result, result_path
from pefthub.suites import BASE_METHOD, Experiment, label_of, method_label

DEFAULT_RESULTS_ROOT = Path("leaderboards")


def results_dir_for(suite_name: str, root: str | Path = DEFAULT_RESULTS_ROOT) -> Path:
    """``leaderboards/<suite>/results``: where a suite's result files live."""
    return Path(root) / suite_name / "results"


# ---- filtering ---------------------------------------------------------------------------------
def _fields(experiment: Experiment) -> list[str]:
    c = experiment.config
    name = c.get("variant") or c["method"]
    return [experiment.label, experiment.run_id, name, c["method"], c["trainer"],
            method_label(name, c.get("params_target")), experiment.group_label]


def matches(experiment: Experiment, pattern: str) -> bool:
    """A glob matched against the run's label (``tinylora@13/grpo/lr=0.001/seed=0``), its run id,
    its method, its trainer or its row (``tinylora@13/grpo``). ``lora`` matches LoRA but not
    LoRA-XS; ``lora*`` matches both."""
    return any(fnmatch.fnmatchcase(f, pattern) for f in _fields(experiment))


def select(experiments: list[Experiment], only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[Experiment]:
    only, skip = list(only), list(skip)
    out = []
    for e in experiments:
        if only and not any(matches(e, p) for p in only):
            continue
        if any(matches(e, p) for p in skip):
            continue
        out.append(e)
    return out


# ---- the store -------------------------------------------------------------------------------
@dataclass
class StoreState:
    """What the store holds for each run of the grid."""

    docs: dict[str, dict] = field(default_factory=dict)          # run_id -> readable result
    corrupt: dict[str, str] = field(default_factory=dict)        # run_id -> reason

    def status(self, run_id: str) -> str:
        if run_id in self.corrupt:
            return "corrupt"
        doc = self.docs.get(run_id)
        return doc["status"] if doc else "missing"


def scan(experiments: list[Experiment], results_dir: Path) -> StoreState:
    state = StoreState()
    for e in experiments:
        path = result_path(results_dir, e.run_id)
        if not path.exists():
            continue
        try:
            state.docs[e.run_id] = read_result(path)
        except ResultFileError as exc:
            state.corrupt[e.run_id] = exc.reason
    return state


def needs_run(status: str, retry_failed: bool) -> bool:
    if status == "success":
        return False
    if status == "failed":
        return retry_failed
    return True  # missing, cancelled, corrupt


def prepare_store(results_dir: Path) -> list[Path]:
    """Create the directory and remove temp files a killed writer left behind."""
    results_dir.mkdir(parents=True, exist_ok=True)
    return clean_temp_files(results_dir)


# ---- aggregation -------------------------------------------------------------------------------
@dataclass
class LearningRateScore:
    learning_rate: float | None
    runs: int = 0
    successes: int = 0
    validation: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)

    @property
    def validation_mean(self) -> float | None:
        return statistics.fmean(self.validation) if self.validation else None


@dataclass
class RowResult:
    """One leaderboard row: a (method, params, trainer) with its selected learning rate."""

    label: str
    method: str
    variant: str | None
    params_target: int | None
    trainer: str
    trainable_params: int | None
    adapter_bytes: dict[str, int] | None
    learning_rates: list[LearningRateScore]
    best_lr: float | None
    selection: str                  # "validation" | "single" | "no-validation" | "none"
    seeds: int                      # successful runs behind the test score
    test_mean: float | None
    ci_low: float | None
    ci_high: float | None
    ci_method: str | None           # "t-over-seeds" | "wilson" | None
    run_ids: list[str]              # the runs behind the test score
    runs: int
    failed: int
    errors: list[str]
    flags: list[str] = field(default_factory=list)   # run-health flags, shown when present

    @property
    def name(self) -> str:
        return self.variant or self.method


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean over seeds, clipped to [0, 1] (accuracies)."""
    from scipy.stats import t

    n = len(values)
    mean = statistics.fmean(values)
    half = t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def _accuracy(doc: dict, split: str) -> float | None:
    block = (doc.get("evaluation") or {}).get(split)
    return block.get("accuracy") if isinstance(block, dict) else None


def _row_key(config: dict) -> str:
    return canonical_json({k: v for k, v in config.items() if k not in ("learning_rate", "seed")})


def summarize(docs: Iterable[dict]) -> list[RowResult]:
    """Rows in order of first appearance (pass documents in grid order); see the module docstring."""
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        groups.setdefault(_row_key(doc["config"]), []).append(doc)
    return [_summarize_row(group) for group in groups.values()]


def _summarize_row(docs: list[dict]) -> RowResult:
    config = docs[0]["config"]
    by_lr: dict[Any, LearningRateScore] = {}
    for doc in docs:
        lr = doc["config"].get("learning_rate")
        score = by_lr.setdefault(lr, LearningRateScore(lr))
        score.runs += 1
        if doc["status"] == "success":
            score.successes += 1
            val, test = _accuracy(doc, "validation"), _accuracy(doc, "test")
            if val is not None:
                score.validation.append(val)
            if test is not None:
                score.test.append(test)
    scores = list(by_lr.values())
    usable = [s for s in scores if s.successes]
    best: LearningRateScore | None = None
    if len(scores) == 1:
        best, selection = (usable[0], "single") if usable else (None, "none")
    elif all(s.validation for s in usable) and usable:
        best = max(usable, key=lambda s: (s.validation_mean, -(s.learning_rate or 0.0)))
        selection = "validation"
    else:
        selection = "no-validation" if usable else "none"
    chosen = [d for d in docs if best is not None and d["config"].get("learning_rate") == best.learning_rate
              and d["status"] == "success" and _accuracy(d, "test") is not None]
    test_values = [_accuracy(d, "test") for d in chosen]
    mean = low = high = method = None
    if len(test_values) >= 2:
        mean = statistics.fmean(test_values)
        low, high = t_interval(test_values)
        method = "t-over-seeds"
        blocks = [d["evaluation"]["test"] for d in chosen]
        run_lows = [b.get("ci_low") for b in blocks]
        run_highs = [b.get("ci_high") for b in blocks]
        if all(isinstance(x, (int, float)) for x in run_lows + run_highs):
            eval_low, eval_high = statistics.fmean(run_lows), statistics.fmean(run_highs)
            if eval_low < low or eval_high > high:
                low, high = min(low, eval_low), max(high, eval_high)
                method = "t-over-seeds, widened to the per-run interval"
    elif len(test_values) == 1:
        block = chosen[0]["evaluation"]["test"]
        mean, low, high = test_values[0], block.get("ci_low"), block.get("ci_high")
        method = block.get("ci_method") or "wilson"
    successes = [d for d in docs if d["status"] == "success"]
    info = (chosen or successes or [{}])[0].get("method") or {}
    name = config.get("variant") or config.get("method")
    label = (f"{BASE_METHOD}" if config.get("method") == BASE_METHOD
             else f"{method_label(name, config.get('params_target'))}/{config.get('trainer')}")
    return RowResult(
        label=label, method=config.get("method"), variant=config.get("variant"),
        params_target=config.get("params_target"), trainer=config.get("trainer"),
        trainable_params=info.get("trainable_params"), adapter_bytes=info.get("adapter_bytes"),
        learning_rates=sorted(scores, key=lambda s: s.learning_rate or 0.0),
        best_lr=best.learning_rate if best else None, selection=selection, seeds=len(test_values),
        test_mean=mean, ci_low=low, ci_high=high, ci_method=method, run_ids=[d["run_id"] for d in chosen],
        runs=len(docs), failed=sum(d["status"] == "failed" for d in docs),
        errors=sorted({d["error"] for d in docs if d["status"] != "success" and d.get("error")}),
    )


def grid_documents(experiments: list[Experiment], results_dir: Path) -> list[dict]:
    """The readable results of a grid's runs, in grid order (missing and corrupt ones left out)."""
    state = scan(experiments, results_dir)
    return [state.docs[e.run_id] for e in experiments if e.run_id in state.docs]


__all__ = ["DEFAULT_RESULTS_ROOT", "LearningRateScore", "RowResult", "StoreState", "grid_documents", "label_of",
           "matches", "needs_run", "prepare_store", "results_dir_for", "scan", "select", "summarize",
           "t_interval"]


# ---- execution ---------------------------------------------------------------------------------
@dataclass
class Plan:
    """The runs of a grid and what a bench invocation will do with each."""

    experiments: list[Experiment]            # the whole grid
    selected: list[Experiment]               # after --only / --skip
    state: StoreState
    todo: list[Experiment]                   # selected runs that will run now

    def status(self, experiment: Experiment) -> str:
        return self.state.status(experiment.run_id)


def make_plan(experiments: list[Experiment], results_dir: Path, *, only: Iterable[str] = (),
              skip: Iterable[str] = (), retry_failed: bool = False) -> Plan:
    selected = select(experiments, only, skip)
    state = scan(experiments, results_dir)
    todo = [e for e in selected if needs_run(state.status(e.run_id), retry_failed)]
    return Plan(experiments, selected, state, todo)


def execute(plan: Plan, *, suite: str, results_dir: Path, executor, events) -> list[dict]:
    """Run ``plan.todo`` with ``executor``; every finished run's document, in finishing order."""
    finished = []
    for doc in executor.run(plan.todo, suite=suite, results_dir=results_dir, events=events):
        finished.append(doc)
    return finished

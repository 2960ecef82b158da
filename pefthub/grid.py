"""`pefthub bench` without the screen: run a suite's grid into its results store, resume, select.

Resume policy (what a rerun does with each run of the grid, found by its config hash):

* ``success``: kept, never redone (change anything in its config and it is a different run).
* missing, ``cancelled`` (Ctrl-C, SIGTERM, a cancelled Ray task) or an unreadable file: run.

Benches sharing a store claim each run before it starts (:mod:`pefthub.claims`): a run another live
bench holds is skipped, and a run whose result appeared meanwhile is found done (:func:`execute`).
* ``failed``: kept by default -- a divergence or an unsupported combination is a result, and
  rerunning it would usually fail the same way; ``--retry-failed`` reruns failed runs.

The summary table after a bench is the report layer's (:func:`pefthub.report.table.suite_table`), the
same rows the leaderboard site shows; a grid tuned on its first seed chooses rates by
:func:`pefthub.report.stats.select_learning_rate`, the rule the rows use (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import fnmatch
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from pefthub import claims as claims_module
from pefthub.report import stats
from pefthub.report.floor import one_answer_runs
from pefthub.report.records import read_runs
from pefthub.executors.base import Stopped, clear_stop, raise_if_stopped, request_stop
from pefthub.results import ResultFileError, clean_orphan_samples, clean_temp_files, read_result, result_path
from pefthub.suites import Experiment, RowTuning, Suite, expand, label_of, method_label

DEFAULT_RESULTS_ROOT = Path("leaderboards")


def results_dir_for(suite_name: str, root: str | Path = DEFAULT_RESULTS_ROOT) -> Path:
    """``leaderboards/<suite>/results``: where a suite's result files live."""
    return Path(root) / suite_name / "results"


# ---- the grid, tuned on the first seed -------------------------------------------------------------
FINISHED = ("success", "failed")


def tuned_grid(suite: Suite, resolution, results_dir: Path) -> list[Experiment]:
    """The suite's runs as far as its results decide them (:func:`_tune`)."""
    return _tune(suite, resolution, results_dir)[0]


def tuned_plan(suite: Suite, resolution, results_dir: Path, *, only: Iterable[str] = (), skip: Iterable[str] = (),
               retry_failed: bool = False) -> "Plan":
    """:func:`make_plan` of :func:`tuned_grid`, reading the store once more only when the tuning did not
    (a suite not tuned on its first seed)."""
    experiments, state = _tune(suite, resolution, results_dir)
    return make_plan(experiments, results_dir, only=only, skip=skip, retry_failed=retry_failed, state=state)


def _tune(suite: Suite, resolution, results_dir: Path) -> tuple[list[Experiment], "StoreState | None"]:
    """The suite's runs as far as its results decide them, and the store as last read (``None``: not read).

    Without ``tune_on_first_seed`` this is the whole grid. With it, each row's rates run at the first
    seed; once they have all finished, the rate :func:`pefthub.report.stats.select_learning_rate` picks
    (passing over a rate whose run gave one answer to its validation items) is
    either at an edge of the rates tried (and ``extend_edges`` allows more: the next rate beyond it,
    one grid step further, is added) or it gets the remaining seeds. A row with no successful rate
    gets no more runs.
    """
    tuning: dict[str, RowTuning] = {}
    while True:
        experiments = expand(suite, resolution, tuning)
        if not suite.tune_on_first_seed:
            return experiments, None
        state = scan(experiments, results_dir)
        changed = False
        for row, runs in _first_seed_rows(experiments, suite.seeds[0]).items():
            tune = tuning.setdefault(row, RowTuning())
            docs = [state.docs.get(e.run_id) for e in runs]
            if tune.chosen is not None or any(d is None or d["status"] not in FINISHED for d in docs):
                continue
            passed_over = one_answer_runs(read_runs(results_dir, [e.run_id for e in runs]))
            selection = stats.select_learning_rate((d for d in docs if d["status"] == "success"), None, passed_over)
            if selection is None or selection.rule == stats.LR_UNSELECTED:
                continue
            (best,) = selection.chosen
            beyond = _rate_beyond(sorted(e.config["learning_rate"] for e in runs), best)
            if beyond is not None and len(tune.extra_rates) < suite.extend_edges:
                tune.extra_rates.append(beyond)
            else:
                tune.chosen = best
            changed = True
        if not changed:
            return experiments, state


def _first_seed_rows(experiments: list[Experiment], seed: int) -> dict[str, list[Experiment]]:
    rows: dict[str, list[Experiment]] = {}
    for e in experiments:
        if e.config["method"] != "base" and e.config["seed"] == seed:
            rows.setdefault(e.group_label, []).append(e)
    return rows


def _rate_beyond(rates: list[float], best: float) -> float | None:
    """The next rate past ``best`` when it is the smallest or largest tried (one step of the grid's
    spacing at that edge, three significant digits), else ``None``."""
    if len(rates) < 2 or best not in (rates[0], rates[-1]):
        return None
    rate = rates[0] ** 2 / rates[1] if best == rates[0] else rates[-1] ** 2 / rates[-2]
    return float(f"{rate:.3g}")


def awaiting_selection(suite: Suite, experiments: list[Experiment]) -> int:
    """Rows of a ``tune_on_first_seed`` suite whose remaining seeds are not yet decided."""
    if not suite.tune_on_first_seed or len(suite.seeds) < 2:
        return 0
    rows = _first_seed_rows(experiments, suite.seeds[0])
    decided = {e.group_label for e in experiments if e.config["method"] != "base" and e.config["seed"] != suite.seeds[0]}
    return len(set(rows) - decided)


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
    """Create the directory and remove what killed writers left behind: temp files, and samples
    files without their document (unless another bench holds a live claim on that run)."""
    from pefthub.results import StoreWriteError

    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreWriteError(results_dir, results_dir, exc) from None

    def in_flight(run_id: str) -> bool:
        holder = claims_module.holder(results_dir, run_id)
        return holder is not None and holder.stale_reason() is None

    return clean_temp_files(results_dir) + clean_orphan_samples(results_dir, in_flight=in_flight)


__all__ = ["DEFAULT_RESULTS_ROOT", "Stopped", "Tally", "awaiting_selection", "execute", "make_plan", "stop_on_signals",
           "waiting_on_others", "tuned_grid", "tuned_plan", "StoreState", "label_of", "matches", "needs_run", "prepare_store",
           "results_dir_for", "scan", "select"]


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
              skip: Iterable[str] = (), retry_failed: bool = False, state: StoreState | None = None) -> Plan:
    """What a bench does with each run of ``experiments``; ``state``: the store as just read (else read now)."""
    selected = select(experiments, only, skip)
    state = scan(experiments, results_dir) if state is None else state
    todo = [e for e in selected if needs_run(state.status(e.run_id), retry_failed)]
    return Plan(experiments, selected, state, todo)


@dataclass
class Tally:
    """What one bench did with the runs it meant to run (the store may be shared with others)."""

    ran: list[str] = field(default_factory=list)                 # run ids this bench ran
    elsewhere: dict[str, str] = field(default_factory=dict)      # run id -> who holds its claim
    found_done: list[str] = field(default_factory=list)          # finished by another bench meanwhile
    lost: list[str] = field(default_factory=list)                # claims another bench took over


def execute(plan: Plan, *, suite: str, results_dir: Path, executor, events, claims: "claims_module.Claims",
            retry_failed: bool = False, tally: Tally | None = None) -> list[dict]:
    """Run ``plan.todo`` with ``executor``; every finished run's document, in finishing order.

    Each run is claimed (:mod:`pefthub.claims`) as the executor draws it -- the local executor one
    at a time, Ray all at once -- so benches sharing a store run each run once: a run claimed by
    another live bench is skipped, and a run whose result appeared since ``plan`` was made is found
    done (the result file is the truth; the claim only says who computes). Skips reach ``events``
    as ``{"phase": "skip", "reason": ...}``; ``tally`` counts all three.
    """
    tally = tally if tally is not None else Tally()
    finished = []

    def checked(experiment, event: dict) -> None:  # a requested stop is raised at a run's progress events too
        if event.get("phase") != "done":
            raise_if_stopped()
        events(experiment, event)

    draws = _claimed(plan, claims, results_dir, events, tally, retry_failed)
    try:
        for doc in executor.run(draws, suite=suite, results_dir=results_dir, events=checked):
            claims.release(doc["run_id"], finished=doc.get("status") in FINISHED)
            tally.ran.append(doc["run_id"])
            finished.append(doc)
    finally:
        tally.lost.extend(rid for rid in claims.lost if rid not in tally.lost)
    return finished


def _claimed(plan: Plan, claims, results_dir: Path, events, tally: Tally, retry_failed: bool) -> Iterator[Experiment]:
    for experiment in plan.todo:
        raise_if_stopped()
        outcome = claims.acquire(experiment.run_id)
        if isinstance(outcome, claims_module.Holder):
            tally.elsewhere[experiment.run_id] = outcome.describe()
            events(experiment, {"phase": "skip", "reason": f"claimed by another bench ({outcome.describe()})"})
            continue
        path = result_path(results_dir, experiment.run_id)
        try:
            now = read_result(path) if path.exists() else None
        except ResultFileError:
            now = None
        if now is not None and now != plan.state.docs.get(experiment.run_id) and (
                not needs_run(now["status"], retry_failed) or now["status"] == "failed"):
            claims.release(experiment.run_id, finished=True)
            tally.found_done.append(experiment.run_id)
            events(experiment, {"phase": "skip", "reason": f"done by another bench ({now['status']})"})
            continue
        yield experiment


def waiting_on_others(suite: Suite, experiments: list[Experiment], results_dir: Path) -> int:
    """First-seed runs of rows still choosing their rate that another live bench holds: that bench
    decides those rows and runs their remaining seeds when its runs finish."""
    if not suite.tune_on_first_seed or not awaiting_selection(suite, experiments):
        return 0
    state = scan(experiments, results_dir)
    count = 0
    for runs in _first_seed_rows(experiments, suite.seeds[0]).values():
        for e in runs:
            if state.status(e.run_id) in FINISHED:
                continue
            holder = claims_module.holder(results_dir, e.run_id)
            if holder is not None and holder.stale_reason() is None:
                count += 1
    return count


# ---- signals -----------------------------------------------------------------------------------
@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGINT and SIGTERM request a stop (:func:`pefthub.executors.base.request_stop`),
    which the executor raises as :class:`Stopped` at its next safe point (within half a second while
    a run's process works; at the run's next progress event inline). SIGINT stays ignored where the
    caller ignored it (a background job of a non-interactive shell)."""
    signums = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signums.append(signal.SIGINT)
    previous = {s: signal.getsignal(s) for s in signums}
    clear_stop()
    for s in signums:
        signal.signal(s, lambda signum, frame: request_stop(signum))
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        clear_stop()

"""`pefthub bench` machinery without models: selection, aggregation, resume policy, isolation.

Runs here use stand-in run functions defined in this module (the child process imports them by
name), so crashes, memory blow-ups and kills are real but take milliseconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pefthub import grid
from pefthub import results as R
from pefthub.executors.local import LocalExecutor
from pefthub.suites import Experiment

HERE = Path(__file__).resolve().parent


# ---- stand-in run functions (imported by name in the child processes) --------------------------
def fake_accuracy(config: dict, split: str) -> float:
    """Validation prefers lr 1e-3, test would prefer lr 1e-2: selection must follow validation."""
    lr, seed = config["learning_rate"], config["seed"]
    if split == "validation":
        return {1e-3: 0.6, 1e-2: 0.4}.get(lr, 0.1) + 0.01 * seed
    return {1e-3: 0.5, 1e-2: 0.9}.get(lr, 0.1) + 0.02 * seed


def run_ok(config, *, suite, results_dir, progress=None):
    for step in range(1, 3):
        if progress:
            progress({"phase": "train", "step": step, "steps": 2, "loss": 1.0 / step})
    doc = R.new_result(config, suite=suite, status="success", finished_at=R.utc_now())
    doc["method"] = {"name": config["method"], "trainable_params": 10}
    doc["evaluation"] = {split: {"accuracy": fake_accuracy(config, split), "n": 50, "ci_low": 0.0, "ci_high": 1.0,
                                 "ci_method": "wilson"} for split in ("validation", "test")}
    R.write_result(results_dir, doc, [{"split": "test", "id": "q0", "correct": True}])
    return doc


def run_raises(config, *, suite, results_dir, progress=None):
    raise RuntimeError("loss is NaN at step 3")


def run_segfaults(config, *, suite, results_dir, progress=None):
    os.kill(os.getpid(), signal.SIGSEGV)


def run_hogs_memory(config, *, suite, results_dir, progress=None):
    hog = bytearray(400_000_000)  # touches 400 MB
    time.sleep(20)
    return hog


def run_slow(config, *, suite, results_dir, progress=None):
    Path(results_dir, f"started-{os.getpid()}").write_text("")
    time.sleep(6)
    return run_ok(config, suite=suite, results_dir=results_dir, progress=progress)


def run_without_writing(config, *, suite, results_dir, progress=None):
    return {"status": "success"}


# ---- helpers -----------------------------------------------------------------------------------
def experiment(lr=1e-3, seed=0, method="lora", trainer="sft", params=None, resources=None, **extra):
    config = {"model": "tiny-random", "task": {"name": "t"}, "trainer": trainer, "trainer_options": {},
              "method": method, "method_config": {}, "params_target": params, "learning_rate": lr,
              "seed": seed, "budget": {"steps": 2}, "eval": {"split": "test", "limit": 4}, **extra}
    from pefthub.suites import label_of

    return Experiment(config, label_of(config),
                      resources or {"num_cpus": 1, "num_gpus": 0, "memory_gb": None})


def run_all(experiments, results_dir, fn, **kwargs):
    executor = LocalExecutor(run_function=f"{__name__}:{fn}", **kwargs)
    events = []
    docs = list(executor.run(experiments, suite="unit", results_dir=results_dir,
                             events=lambda e, ev: events.append((e.run_id, ev))))
    return docs, events


def doc_for(exp, status="success", val=None, test=None, error=None, half=0.05):
    doc = R.new_result(exp.config, suite="unit", status=status, error=error, finished_at=R.utc_now())
    if status == "success":
        doc["method"] = {"name": exp.config["method"], "trainable_params": 7}
        doc["evaluation"] = {"test": {"accuracy": test, "n": 100, "ci_low": test - half, "ci_high": test + half,
                                      "ci_method": "wilson"}}
        if val is not None:
            doc["evaluation"]["validation"] = {"accuracy": val, "n": 20}
    return doc


# ---- filtering -----------------------------------------------------------------------------------
def test_only_and_skip_patterns():
    runs = [experiment(method="lora"), experiment(method="lora_xs"), experiment(method="tinylora", params=13),
            experiment(method="lora", trainer="grpo")]
    names = lambda sel: [e.label for e in sel]
    assert names(grid.select(runs, only=["lora"])) == [runs[0].label, runs[3].label]
    assert len(grid.select(runs, only=["lora*"])) == 3
    assert names(grid.select(runs, only=["tinylora@13"])) == [runs[2].label]
    assert names(grid.select(runs, skip=["grpo"])) == names(runs[:3])
    assert names(grid.select(runs, only=["lora*"], skip=["sft"])) == [runs[3].label]
    assert grid.select(runs, only=[runs[1].run_id]) == [runs[1]]
    assert grid.select(runs, only=["nothing"]) == []


# ---- aggregation (the report layer's row builder, as `pefthub bench` prints it) -------------------------
def summarize(docs):
    from pefthub.report.records import RunRecord
    from pefthub.report.rows import build_rows

    return build_rows([RunRecord(d, None) for d in docs])


def test_learning_rate_is_selected_on_validation_never_test():
    docs = [doc_for(e, val=fake_accuracy(e.config, "validation"), test=fake_accuracy(e.config, "test"), half=0.001)
            for lr in (1e-3, 1e-2) for seed in (0, 1, 2) for e in [experiment(lr=lr, seed=seed)]]
    (row,) = summarize(docs)
    assert row.lr_selection == "validation" and row.lr_candidates == [1e-3, 1e-2]
    assert row.learning_rate == 1e-3  # best on validation, although 1e-2 scores higher on test
    assert row.seeds == 3 and row.ci_method == "t over 3 seeds"
    tests = [0.5, 0.52, 0.54]
    assert row.accuracy == pytest.approx(sum(tests) / 3)
    from scipy import stats

    lo, hi = stats.t.interval(0.95, 2, loc=sum(tests) / 3, scale=stats.sem(tests))
    assert (row.ci_low, row.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    assert row.validation_accuracy == pytest.approx(0.61)


def test_single_seed_reports_the_runs_wilson_interval():
    (row,) = summarize([doc_for(experiment(), test=0.3)])
    assert row.lr_selection == "single" and row.seeds == 1
    assert (row.accuracy, row.ci_low, row.ci_high, row.ci_method) == (0.3, 0.25, 0.35, "wilson")


def test_failed_seeds_stay_out_of_the_means_and_ties_go_to_the_smaller_rate():
    docs = [doc_for(experiment(lr=1e-2, seed=0), val=0.5, test=0.9),
            doc_for(experiment(lr=1e-2, seed=1), status="failed", error="NaN loss at step 2"),
            doc_for(experiment(lr=1e-3, seed=0), val=0.4, test=0.5),
            doc_for(experiment(lr=1e-3, seed=1), val=0.6, test=0.6)]
    (row,) = summarize(docs)
    assert row.learning_rate == 1e-3 and row.failed == 1 and row.attempted == 4 and row.seeds == 2
    assert row.errors == ["NaN loss at step 2"] and row.validation_accuracy == pytest.approx(0.5)


def test_seed_interval_is_widened_to_the_per_run_interval():
    docs = [doc_for(experiment(seed=s), test=0.5) for s in range(3)]  # identical seeds: t width 0
    (row,) = summarize(docs)
    assert (row.ci_low, row.ci_high) == (pytest.approx(0.45), pytest.approx(0.55))
    assert row.ci_method == "t over 3 seeds, widened to the per-run interval"


def test_several_learning_rates_without_validation_select_nothing():
    docs = [doc_for(experiment(lr=lr), test=0.5) for lr in (1e-3, 1e-2)]
    rows = summarize(docs)
    assert [r.lr_selection for r in rows] == ["unselected", "unselected"]
    assert [r.label.rsplit("/", 1)[1] for r in rows] == ["lr=0.001", "lr=0.01"]   # every rate shown, none chosen


def test_rows_split_by_method_params_and_trainer_in_order():
    from pefthub.report.records import RunRecord
    from pefthub.report.table import suite_table

    docs = [doc_for(experiment(method="base", trainer="none", lr=None), test=0.2),
            doc_for(experiment(method="tinylora", params=13), test=0.3),
            doc_for(experiment(method="tinylora", params=1), test=0.25),
            doc_for(experiment(method="tinylora", params=13, trainer="grpo"), test=0.35),
            doc_for(experiment(method="lora"), status="failed", error="out of memory")]
    table = suite_table([RunRecord(d, None) for d in docs])
    assert [r.label for r in table.rows] == ["base", "tinylora@13/sft", "tinylora@1/sft", "tinylora@13/grpo"]
    (failed,) = table.failures   # a point with no successful run has no row; its runs are listed apart
    assert failed.doc["error"] == "out of memory" and failed.config["method"] == "lora"


# ---- resume policy -----------------------------------------------------------------------------------
def test_resume_policy(tmp_path):
    runs = [experiment(seed=s) for s in range(5)]
    R.write_result(tmp_path, doc_for(runs[0], test=0.5))
    R.write_result(tmp_path, doc_for(runs[1], status="failed", error="NaN"))
    R.write_result(tmp_path, doc_for(runs[2], status="cancelled", error="interrupted by the user"))
    R.result_path(tmp_path, runs[3].run_id).write_text('{"schema_version": 1, "run_')  # torn by hand
    plan = grid.make_plan(runs, tmp_path)
    assert [plan.status(e) for e in runs] == ["success", "failed", "cancelled", "corrupt", "missing"]
    assert plan.todo == [runs[2], runs[3], runs[4]]
    assert grid.make_plan(runs, tmp_path, retry_failed=True).todo == runs[1:]
    assert grid.make_plan(runs, tmp_path, only=[runs[4].run_id]).todo == [runs[4]]


# ---- local executor: isolation -------------------------------------------------------------------------
def test_local_executor_runs_and_reports_progress(tmp_path):
    runs = [experiment(seed=0), experiment(seed=1)]
    docs, events = run_all(runs, tmp_path, "run_ok")
    assert [d["status"] for d in docs] == ["success", "success"]
    assert [d["run_id"] for d in docs] == [e.run_id for e in runs]
    phases = [ev["phase"] for rid, ev in events if rid == runs[0].run_id]
    assert phases == ["start", "train", "train", "done"]
    assert R.read_result(R.result_path(tmp_path, runs[0].run_id))["status"] == "success"
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())  # empty logs removed


def test_a_run_that_raises_is_recorded_and_the_sweep_continues(tmp_path):
    runs = [experiment(seed=0), experiment(seed=1)]
    docs, _ = run_all(runs[:1], tmp_path, "run_raises")
    docs += run_all(runs[1:], tmp_path, "run_ok")[0]
    assert docs[0]["status"] == "failed" and docs[0]["error"] == "RuntimeError: loss is NaN at step 3"
    assert docs[1]["status"] == "success"
    log = tmp_path / "logs" / f"{runs[0].run_id}.log"
    assert "Traceback" in log.read_text()


def test_a_crashing_worker_is_recorded_as_failed(tmp_path):
    (doc,), _ = run_all([experiment()], tmp_path, "run_segfaults")
    assert doc["status"] == "failed" and "SIGSEGV" in doc["error"]
    assert R.read_result(R.result_path(tmp_path, doc["run_id"]))["error"] == doc["error"]


def test_memory_limit_stops_the_run(tmp_path):
    run = experiment(resources={"num_cpus": 1, "num_gpus": 0, "memory_gb": 0.25})
    start = time.monotonic()
    (doc,), _ = run_all([run], tmp_path, "run_hogs_memory")
    assert doc["status"] == "failed" and "exceeded memory" in doc["error"] and "memory_gb = 0.25" in doc["error"]
    assert time.monotonic() - start < 15  # stopped, not waited out


def test_run_that_writes_nothing_is_recorded_as_failed(tmp_path):
    (doc,), _ = run_all([experiment()], tmp_path, "run_without_writing")
    assert doc["status"] == "failed" and "wrote no result" in doc["error"]


def test_stale_failed_result_is_not_mistaken_for_a_new_one(tmp_path):
    run = experiment()
    R.write_result(tmp_path, doc_for(run, status="failed", error="old failure"))
    old = R.result_path(tmp_path, run.run_id)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    (doc,), _ = run_all([run], tmp_path, "run_without_writing")
    assert doc["error"] != "old failure" and "wrote no result" in doc["error"]


def test_inline_isolation_records_exceptions(tmp_path):
    (doc,), _ = run_all([experiment()], tmp_path, "run_raises", isolation="inline")
    assert doc["status"] == "failed" and "NaN" in doc["error"]


def test_orphaned_run_exits_when_the_driver_is_killed(tmp_path):
    """kill -9 of the driver must not leave a run computing (and later writing) on its own."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from pefthub.executors.local import LocalExecutor
        from test_bench import experiment
        ex = LocalExecutor(run_function="test_bench:run_slow")
        for _ in ex.run([experiment()], suite="unit", results_dir={str(tmp_path)!r}, events=lambda e, ev: None):
            pass
    """)
    driver = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (marker,) = tmp_path.glob("started-*")
    child_pid = int(marker.name.split("-")[1])
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child_pid)
    time.sleep(6)  # longer than run_slow would have taken
    assert not list(tmp_path.glob("*.json"))


def driver_script(tmp_path, exit_code: int, sigterm_stops: bool = False) -> str:
    """A driver running one quiet run (``run_slow``) that exits ``exit_code`` when stopped; with
    ``sigterm_stops`` it installs SIGTERM's stop request as `pefthub bench` does."""
    handler = ("import signal\nfrom pefthub.executors.base import request_stop\n"
               "signal.signal(signal.SIGTERM, lambda signum, frame: request_stop(signum))\n") if sigterm_stops else ""
    return handler + textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from pefthub.executors.local import LocalExecutor
        from test_bench import experiment
        ex = LocalExecutor(run_function="test_bench:run_slow")
        try:
            for _ in ex.run([experiment()], suite="unit", results_dir={str(tmp_path)!r}, events=lambda e, ev: None):
                pass
        except KeyboardInterrupt:
            sys.exit({exit_code})
    """)


def test_sigterm_to_the_process_group_records_the_run_as_cancelled(tmp_path):
    """A scheduler's SIGTERM reaches every process of the job, the fork server too, whose death makes
    the quiet run's exit code read 255: the run must still be recorded cancelled (the next bench reruns
    it), not failed, and must not keep computing."""
    script = driver_script(tmp_path, 143, sigterm_stops=True)
    driver = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (marker,) = tmp_path.glob("started-*")
    time.sleep(1.0)                      # the run is quiet: the driver waits on its queue
    os.killpg(driver.pid, signal.SIGTERM)
    assert driver.wait(timeout=30) == 143
    (doc,) = [R.read_result(p) for p in tmp_path.glob("*.json")]
    assert doc["status"] == "cancelled", doc["error"]
    assert not _alive(int(marker.name.split("-")[1]))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_ctrl_c_records_the_run_as_cancelled(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) stops the run and records it cancelled,
    so the next bench reruns it."""
    script = driver_script(tmp_path, 130)
    driver = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (marker,) = tmp_path.glob("started-*")
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=30) == 130
    (doc,) = [R.read_result(p) for p in tmp_path.glob("*.json")]
    assert doc["status"] == "cancelled" and doc["error"] == "interrupted by the user"
    assert not _alive(int(marker.name.split("-")[1]))
    assert grid.needs_run("cancelled", retry_failed=False)

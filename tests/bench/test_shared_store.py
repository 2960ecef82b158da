"""`pefthub bench` on a store shared and disturbed as real sweeps are: two benches started on one
store, SIGTERM and Ctrl-C mid-sweep, a disk that fills -- real runs of the tiny model."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from pefthub import claims, suites
from pefthub import results as R
from pefthub.cli import main
from test_bench_cli import ENV, REPO, bench_cli, tiny_suite

#: Five runs: the base row, LoRA under SFT at two rates, TinyLoRA under GRPO at two rates.
GRID = """
methods = ["lora", "tinylora"]
trainers = ["sft"]
learning_rates = [1e-3, 1e-2]
[methods.tinylora]
params = [13]
trainers = ["grpo"]
"""
THREE = """
methods = ["lora"]
trainers = ["sft"]
learning_rates = [1e-3, 1e-2]
"""


def start_bench(suite_dir: Path, results: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pefthub", "bench", str(suite_dir), "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO, **kwargs)


def finished_labels(stdout: str) -> list[str]:
    return re.findall(r"^✓ (\S+)", stdout, flags=re.M)


def test_two_benches_on_one_store_run_each_run_once(tmp_path):
    suite_dir = tiny_suite(tmp_path, GRID)
    results = tmp_path / "results"
    first = start_bench(suite_dir, results)
    time.sleep(1.0)
    second = start_bench(suite_dir, results)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err for _, err in outs]
    runs = suites.expand(suites.load(suite_dir))
    ran = [finished_labels(out) for out, _ in outs]
    assert sorted(ran[0] + ran[1]) == sorted(r.label for r in runs)  # every run once, by one of them
    tallies = [re.search(r"this bench ran (\d+), skipped (\d+) claimed by another bench, found (\d+) done", out)
               for out, _ in outs]
    assert all(tallies) and sum(int(t.group(1)) for t in tallies) == len(runs)
    docs, problems = R.load_results_dir(results)
    assert problems == [] and len(docs) == len(runs) and all(d["status"] == "success" for d in docs)
    assert list(claims.claims_dir(results).iterdir()) == []


def test_sigterm_stops_with_a_resume_hint_and_the_rerun_does_the_rest(tmp_path):
    suite_dir = tiny_suite(tmp_path, GRID)
    results = tmp_path / "results"
    proc = start_bench(suite_dir, results)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(results.glob("*.json")):
        time.sleep(0.05)
    assert proc.poll() is None, "bench finished before it could be stopped; enlarge the grid"
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "leaked" not in err and "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    m = re.fullmatch(r"stopped by SIGTERM: (\d) of 5 runs finished \((\d) by this bench\), (\d) pending; "
                     r"resume with: pefthub bench (\S+) --results (\S+)", line)
    assert m, line
    finished = int(m.group(1))
    assert 1 <= finished < 5 and int(m.group(3)) == 5 - finished
    assert (m.group(4), m.group(5)) == (str(suite_dir), str(results))
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []  # the run's process, the fork server and the resource tracker all ended
    kept = {p: p.read_bytes() for p in results.glob("*.json")
            if R.read_result(p)["status"] == "success"}
    assert len(kept) == finished
    assert not [p for p in results.iterdir() if p.name.endswith(R.SAMPLES_SUFFIX)
                and not R.result_path(results, p.name[: -len(R.SAMPLES_SUFFIX)]).exists()]
    assert not [p for p in claims.claims_dir(results).iterdir() if p.name.endswith(claims.CLAIM_SUFFIX)]

    again = bench_cli(str(suite_dir), "--results", str(results))
    assert again.returncode == 0, again.stderr
    assert f"5 runs, {finished} already done, {5 - finished} to run" in again.stdout
    assert len(finished_labels(again.stdout)) == 5 - finished  # exactly the rest
    assert all(p.read_bytes() == content for p, content in kept.items())


def test_ctrl_c_stops_with_rc_130_and_a_resume_hint(tmp_path):
    suite_dir = tiny_suite(tmp_path, THREE)
    results = tmp_path / "results"
    proc = start_bench(suite_dir, results, start_new_session=True,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(results.glob("*.json")):
        time.sleep(0.05)
    assert proc.poll() is None, "bench finished before it could be stopped; enlarge the grid"
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert "leaked" not in err and "Traceback" not in err, err
    (line,) = [ln for ln in err.splitlines() if ln.strip()] or [err]
    assert line.startswith("stopped by SIGINT: ") and "of 3 runs finished" in line, (out, err)
    assert line.endswith(f"resume with: pefthub bench {suite_dir} --results {results}")


def test_a_full_disk_mid_bench_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch, capsys):
    suite_dir = tiny_suite(tmp_path, THREE)
    results = tmp_path / "results"
    real, written = os.replace, []

    def fills_after_one_result(src, dst):
        if str(dst).endswith(R.RESULT_SUFFIX) and Path(dst).parent == results:
            if written:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written.append(Path(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fills_after_one_result)
    rc = main(["bench", str(suite_dir), "--results", str(results), "--isolation", "inline"])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 2, err  # inline, the runs' own progress bars (lm-eval's tqdm) share stderr
    lines = [ln for ln in err.splitlines() if ln.strip() and "%|" not in ln]
    assert len(lines) == 1, err
    (line,) = lines
    assert re.fullmatch(rf"error: cannot write results to {re.escape(str(results))}: "
                        rf"{re.escape(str(results))}/[0-9a-f]{{16}}\.json: No space left on device", line), line
    (first,) = written
    content = first.read_bytes()
    assert sorted(p.name for p in results.iterdir() if not p.name.startswith(".")) == sorted(
        [first.name, first.name.replace(R.RESULT_SUFFIX, R.SAMPLES_SUFFIX)])  # no orphan samples file

    assert main(["bench", str(suite_dir), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "3 runs, 1 already done, 2 to run" in out and "this bench ran 2" in out
    assert first.read_bytes() == content

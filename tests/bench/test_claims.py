"""Claims on runs in a shared store (pefthub/claims.py) and the bench machinery built on them:
held, dead and silent holders, racing reclaimers, the heartbeat, and several drivers on one store
(real processes with stand-in run functions from test_bench.py, so each run takes a second)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pefthub import claims, grid
from pefthub import results as R
from test_bench import doc_for, experiment

HERE = Path(__file__).resolve().parent


def write_claim(store: Path, run_id: str, generation: int = 0, *, host: str, pid: int, age: float = 0.0) -> Path:
    """A claim file as another process would have left it, its heartbeat ``age`` seconds old."""
    path = claims.claims_dir(store) / f"{run_id}.{generation}{claims.CLAIM_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "host": host, "pid": pid, "pid_started": None,
                                "claimed_at": "2026-01-01T00:00:00Z"}))
    beat = time.time() - age
    os.utime(path, (beat, beat))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_claim_is_exclusive_until_released(tmp_path):
    first = claims.acquire(tmp_path, "r1")
    assert isinstance(first, claims.Claim) and first.generation == 0
    info = json.loads(first.path.read_text())
    assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
    again = claims.acquire(tmp_path, "r1")  # this process is alive: the claim holds, even against itself
    assert isinstance(again, claims.Holder) and again.pid == os.getpid() and again.stale_reason() is None
    first.release(finished=False)  # given back unfinished: a marker keeps the generation count
    assert not first.path.exists() and first.path.with_suffix(claims.RELEASED_SUFFIX).exists()
    second = claims.acquire(tmp_path, "r1")
    assert isinstance(second, claims.Claim) and second.generation == 1
    assert os.listdir(claims.claims_dir(tmp_path)) == [second.path.name]  # older generations removed
    second.release(finished=True)
    assert os.listdir(claims.claims_dir(tmp_path)) == []


def test_dead_and_silent_holders_are_reclaimed_live_ones_are_not(tmp_path):
    write_claim(tmp_path, "dead", host=socket.gethostname(), pid=dead_pid())
    write_claim(tmp_path, "silent", host="elsewhere", pid=1, age=claims.STALE_SECONDS + 5)
    write_claim(tmp_path, "remote", host="elsewhere", pid=1, age=claims.STALE_SECONDS - 60)
    write_claim(tmp_path, "reused", host=socket.gethostname(), pid=os.getpid())  # pid_started None: trusted
    assert "is gone" in claims.holder(tmp_path, "dead").stale_reason()
    assert "no heartbeat for" in claims.holder(tmp_path, "silent").stale_reason()
    for rid in ("dead", "silent"):
        won = claims.acquire(tmp_path, rid)
        assert isinstance(won, claims.Claim) and won.generation == 1
        assert not (claims.claims_dir(tmp_path) / f"{rid}.0.claim").exists()
    held = claims.acquire(tmp_path, "remote")
    assert isinstance(held, claims.Holder) and held.describe().startswith("elsewhere pid 1")
    assert isinstance(claims.acquire(tmp_path, "reused"), claims.Holder)
    # a pid that now belongs to another process than the one that claimed is dead too
    write_claim(tmp_path, "recycled", host=socket.gethostname(), pid=os.getpid())
    path = claims.claims_dir(tmp_path) / "recycled.0.claim"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "pid_started": 1.0}))
    assert "another process" in claims.holder(tmp_path, "recycled").stale_reason()


def _race(store: str, barrier, outcomes) -> None:
    barrier.wait()
    outcome = claims.acquire(store, "r1")
    outcomes.put("won" if isinstance(outcome, claims.Claim) else "held")
    barrier.wait()  # stay alive until everyone has looked: the winner's claim is live


def test_racing_reclaimers_of_a_stale_claim_have_one_winner(tmp_path):
    write_claim(tmp_path, "r1", host=socket.gethostname(), pid=dead_pid())
    ctx = multiprocessing.get_context("fork")
    barrier, outcomes = ctx.Barrier(6), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, outcomes)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert sorted(outcomes.get(timeout=5) for _ in procs) == ["held"] * 5 + ["won"]
    assert [n for n in os.listdir(claims.claims_dir(tmp_path)) if n.endswith(".claim")] == ["r1.1.claim"]


def test_the_heartbeat_refreshes_and_notices_a_takeover(tmp_path):
    with claims.Claims(tmp_path, heartbeat_seconds=0.05) as held:
        claim = held.acquire("r1")
        old = time.time() - 100
        os.utime(claim.path, (old, old))
        time.sleep(0.3)
        assert claim.path.stat().st_mtime > old + 50
        claim.path.unlink()  # what a bench that judged it silent does, after claiming generation 1
        write_claim(tmp_path, "r1", 1, host="elsewhere", pid=7)
        time.sleep(0.3)
        assert held.lost == ["r1"]
    assert (claims.claims_dir(tmp_path) / "r1.1.claim").exists()  # leaving never touches the winner's claim


def test_execute_skips_runs_claimed_elsewhere_and_finds_runs_done_meanwhile(tmp_path):
    runs = [experiment(seed=s) for s in range(3)]
    plan = grid.make_plan(runs, tmp_path)
    write_claim(tmp_path, runs[0].run_id, host="elsewhere", pid=1)       # another machine runs it
    R.write_result(tmp_path, doc_for(runs[1], test=0.5))                  # finished since the plan

    class Executor:
        def run(self, experiments, *, suite, results_dir, events):
            for e in experiments:
                assert (claims.holder(results_dir, e.run_id).pid == os.getpid())  # claimed before it runs
                doc = doc_for(e, test=0.3)
                R.write_result(results_dir, doc)
                yield doc

    events, tally = [], grid.Tally()
    with claims.Claims(tmp_path) as held:
        docs = grid.execute(plan, suite="unit", results_dir=tmp_path, executor=Executor(),
                             events=lambda e, ev: events.append((e.run_id, ev)), claims=held, tally=tally)
    assert [d["run_id"] for d in docs] == tally.ran == [runs[2].run_id]
    assert tally.elsewhere == {runs[0].run_id: "elsewhere pid 1, since 2026-01-01T00:00:00Z"}
    assert tally.found_done == [runs[1].run_id]
    assert [(rid, ev["reason"].split(" (")[0]) for rid, ev in events] == [
        (runs[0].run_id, "claimed by another bench"), (runs[1].run_id, "done by another bench")]
    assert claims.holder(tmp_path, runs[2].run_id) is None  # released, finished: no marker left


def test_orphan_samples_are_cleaned_unless_their_run_is_in_flight(tmp_path):
    runs = [experiment(seed=s) for s in range(3)]
    R.write_result(tmp_path, doc_for(runs[0], test=0.5), [{"split": "test", "id": "q", "correct": True}])
    for e in runs[1:]:
        R.samples_path(tmp_path, e.run_id).write_text("{}\n")  # a writer died between samples and document
        old = time.time() - 120
        os.utime(R.samples_path(tmp_path, e.run_id), (old, old))
    live = claims.acquire(tmp_path, runs[2].run_id)  # being written right now by a live bench
    removed = grid.prepare_store(tmp_path)
    assert removed == [R.samples_path(tmp_path, runs[1].run_id)]
    assert R.samples_path(tmp_path, runs[0].run_id).exists() and R.samples_path(tmp_path, runs[2].run_id).exists()
    live.release(finished=False)


# ---- several drivers on one store (stand-in runs inline in real driver processes: no torch) -----
DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {here!r})
    from pathlib import Path
    from pefthub import claims, grid
    from pefthub.executors.local import LocalExecutor
    from test_bench import experiment
    store = Path({store!r})
    runs = [experiment(seed=s) for s in range({n})]
    grid.prepare_store(store)
    plan = grid.make_plan(runs, store)
    tally = grid.Tally()
    with claims.Claims(store) as held:
        grid.execute(plan, suite="unit", results_dir=store, executor=LocalExecutor(run_function={fn!r}, isolation="inline"),
                      events=lambda e, ev: None, claims=held, tally=tally)
    print("ran", len(tally.ran), "elsewhere", len(tally.elsewhere), "done", len(tally.found_done), flush=True)
""")


def run_marking(config, *, suite, results_dir, progress=None):
    """Leave a marker per start (run id, pid), then finish after a second."""
    from test_bench import run_ok

    Path(results_dir, f"started-{R.run_id(config)}-{os.getpid()}").write_text("")
    time.sleep(1.0)
    return run_ok(config, suite=suite, results_dir=results_dir, progress=progress)


def driver(store: Path, n: int, fn: str = "test_claims:run_marking") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER.format(here=str(HERE), store=str(store), n=n, fn=fn)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_three_drivers_on_one_store_run_each_run_once(tmp_path):
    n = 9
    procs = [driver(tmp_path, n) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    starts = sorted(p.name.split("-")[1] for p in tmp_path.glob("started-*"))
    assert starts == sorted(experiment(seed=s).run_id for s in range(n))  # every run started exactly once
    ran = [int(out.split()[1]) for out, _ in outs]
    assert sum(ran) == n and sum(1 for r in ran if r) >= 2  # shared, not one driver doing it all
    docs, problems = R.load_results_dir(tmp_path)
    assert problems == [] and len(docs) == n and all(d["status"] == "success" for d in docs)
    assert [p.name for p in claims.claims_dir(tmp_path).iterdir()] == []  # all released


def test_a_killed_claim_holder_s_run_is_reclaimed(tmp_path):
    """SIGKILL the driver holding a claim: its run is claimed anew by the next bench on the same host
    at once, without waiting for the heartbeat to go stale."""
    holder = driver(tmp_path, 1, fn="test_bench:run_slow")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("started-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    (marker,) = tmp_path.glob("started-*")
    rid = experiment(seed=0).run_id
    assert claims.holder(tmp_path, rid).pid == holder.pid
    assert isinstance(claims.acquire(tmp_path, rid), claims.Holder)  # held while its holder lives
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert "is gone" in claims.holder(tmp_path, rid).stale_reason()
    marker.unlink()
    out, err = driver(tmp_path, 1, fn="test_claims:run_marking").communicate(timeout=60)
    assert out.split()[:2] == ["ran", "1"], err
    assert [p.name for p in tmp_path.glob("started-*")] and R.read_result(R.result_path(tmp_path, rid))["status"] == "success"
    assert [p.name for p in claims.claims_dir(tmp_path).iterdir()] == []  # generation 1 claimed, then released


@pytest.mark.parametrize("errno_name", ["ENOENT", "EROFS"])
def test_a_store_that_vanished_or_is_read_only_fails_the_claim_with_one_line(tmp_path, monkeypatch, errno_name):
    import errno

    store = tmp_path / "store"
    store.mkdir()
    if errno_name == "ENOENT":
        store.rmdir()
        expected = f"cannot write results to {store}: {store / claims.CLAIMS_DIR}: No such file or directory"
    else:
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        expected = f"cannot write results to {store}: {claims.claims_dir(store) / 'r1.0.claim'}: Read-only file system"
    with pytest.raises(R.StoreWriteError) as caught:
        claims.acquire(store, "r1")
    assert str(caught.value) == expected


def test_rows_waiting_on_first_seed_runs_another_bench_holds_are_reported(tmp_path):
    """tune_on_first_seed: a bench that finds a row's last first-seed run claimed elsewhere leaves the
    choice to that bench (which re-plans after each batch of runs and runs the remaining seeds)."""
    from pefthub import suites
    from test_bench_cli import tiny_suite
    from test_tuning import TUNED, finish

    suite = suites.load(tiny_suite(tmp_path, TUNED))
    resolution, store = suites.resolve(suite), tmp_path / "results"
    first = grid.tuned_grid(suite, resolution, store)
    finish(store, first[1], 0.2)
    finish(store, first[2], 0.7)
    assert grid.waiting_on_others(suite, first, store) == 0  # the last rate is not running anywhere
    write_claim(store, first[3].run_id, host="elsewhere", pid=1)
    assert grid.waiting_on_others(suite, first, store) == 1
    finish(store, first[3], 0.4)  # that bench finishes it: the row is decided
    grown = grid.tuned_grid(suite, resolution, store)
    assert grid.awaiting_selection(suite, grown) == 0 and grid.waiting_on_others(suite, grown, store) == 0


def test_dry_run_shows_runs_another_bench_is_running(tmp_path, capsys, monkeypatch):
    from pefthub import suites
    from pefthub.cli import main
    from test_bench_cli import KILL_GRID, tiny_suite

    monkeypatch.setenv("COLUMNS", "200")  # one table row per run
    path = tiny_suite(tmp_path, KILL_GRID)
    store = tmp_path / "results"
    runs = suites.expand(suites.load(path))
    write_claim(store, runs[1].run_id, host="elsewhere", pid=42)
    write_claim(store, runs[2].run_id, host="elsewhere", pid=43, age=claims.STALE_SECONDS + 1)  # silent
    assert main(["bench", str(path), "--results", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("running in another bench") == 1 and "elsewhere pid 42" in out and "pid 43" not in out

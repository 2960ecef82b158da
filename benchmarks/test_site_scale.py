"""The leaderboard site at scale (issue 25): ``pefthub site build`` on a results directory of N runs,
made from the committed ``cpu-paper-shape`` runs repeated with new seeds (the same documents and
samples under new config hashes, so new run ids), in a child process. Records the build's wall
time, its peak RSS (``os.wait4``'s rusage of that one child) and the built site's size on disk
(the sum of its files' sizes, what a static host stores).

The default N (``--site-runs``, benchmarks/conftest.py) is small for a quick check; the figures in
docs/performance.md are for ``--site-runs 5001``. Peak RSS and size do not depend on what else the
machine runs; the wall time does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pefthub import results as R

REPO = Path(__file__).resolve().parents[1]
SUITE = "cpu-paper-shape"
COMMITTED = REPO / "leaderboards" / SUITE / "results"
#: The issue's goals on the 5,000-run directory.
GOAL_RSS_GB, GOAL_WALL_S, GOAL_SITE_MB = 1, 60, 150


def pytest_generate_tests(metafunc):
    if "site_runs" in metafunc.fixturenames:
        runs = [int(n) for n in str(metafunc.config.getoption("--site-runs")).split(",") if n.strip()]
        metafunc.parametrize("site_runs", runs, ids=[f"{n}-runs" for n in runs])


def make_results(root: Path, runs: int) -> Path:
    """``root/cpu-paper-shape/results`` holding ``runs`` runs: the committed base-model run once and the
    committed trained runs, then copies of them with seeds shifted by the number of committed seeds
    (new config hash and run id; the samples file is hard-linked, or copied where links fail)."""
    docs = [R.read_result(p) for p in R.result_files(COMMITTED)]
    base = [d for d in docs if d["config"]["method"] == "base"]
    trained = sorted((d for d in docs if d["config"]["method"] != "base"), key=lambda d: d["run_id"])
    seeds = sorted({d["config"]["seed"] for d in trained})
    if runs < len(base) + 1:
        raise ValueError(f"--site-runs must be at least {len(base) + 1}")
    out = root / SUITE / "results"
    out.mkdir(parents=True)
    written = 0
    for doc in base:
        _write_copy(doc, doc["config"], out)
        written += 1
    copy = 0
    while written < runs:
        for doc in trained:
            if written >= runs:
                break
            config = dict(doc["config"], seed=doc["config"]["seed"] + copy * (max(seeds) + 1))
            _write_copy(doc, config, out)
            written += 1
        copy += 1
    return root


def _write_copy(doc: dict, config: dict, out: Path) -> None:
    source_samples = R.samples_path(COMMITTED, doc["run_id"])
    new = json.loads(json.dumps(doc))
    new["config"] = config
    new["config_hash"] = R.config_hash(config)
    new["run_id"] = R.run_id(config)
    for block in (new.get("evaluation") or {}).values():
        if isinstance(block, dict) and "samples_file" in block:
            block["samples_file"] = R.samples_path(out, new["run_id"]).name
    if source_samples.is_file():
        target = R.samples_path(out, new["run_id"])
        try:
            os.link(source_samples, target)
        except OSError:
            shutil.copyfile(source_samples, target)
    R.result_path(out, new["run_id"]).write_text(json.dumps(new, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def build_in_child(root: Path, site: Path) -> dict:
    """Run ``pefthub site build`` in a child process; its wall time, peak RSS and exit status."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pefthub", "site", "build", str(root), "-o", str(site)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        pytest.fail(f"pefthub site build failed ({proc.returncode}):\n{stderr.decode()[-3000:]}")
    return {"wall_s": wall, "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
            "cpu_s": usage.ru_utime + usage.ru_stime}


def site_bytes(site: Path) -> tuple[int, int]:
    """(the sum of the site's file sizes, its number of files)."""
    sizes = [p.stat().st_size for p in site.rglob("*") if p.is_file()]
    return sum(sizes), len(sizes)


def test_site_build_scale(benchmark, tmp_path, site_runs):
    benchmark.group = f"site: `pefthub site build` on {SUITE} repeated to N runs (issue 25)"
    root = make_results(tmp_path / "leaderboards", site_runs)
    input_bytes = sum(p.stat().st_size for p in (root / SUITE / "results").iterdir())
    site = tmp_path / "site"
    measured = benchmark.pedantic(build_in_child, args=(root, site), rounds=1, iterations=1)
    size, files = site_bytes(site)
    pages = len(list((site / "runs" / SUITE).glob("*.html")))
    assert pages == site_runs
    assert not list(site.rglob("*.samples.jsonl")), "samples files are never copied into the site"
    info = {
        "runs": site_runs, "wall_s": round(measured["wall_s"], 2), "cpu_s": round(measured["cpu_s"], 2),
        "peak_rss_gb": round(measured["peak_rss_bytes"] / 1e9, 3), "site_mb": round(size / 1e6, 1),
        "site_files": files, "input_mb": round(input_bytes / 1e6, 1),
        "site_kb_per_run": round(size / 1e3 / site_runs, 1), "load_average_1min": round(os.getloadavg()[0], 2),
    }
    at_goal_scale = site_runs >= 5000
    if at_goal_scale:
        info.update(goal_wall_s=GOAL_WALL_S, goal_rss_gb=GOAL_RSS_GB, goal_site_mb=GOAL_SITE_MB)
    info.update(rss_met=info["peak_rss_gb"] <= GOAL_RSS_GB if at_goal_scale else None,
                wall_met=info["wall_s"] <= GOAL_WALL_S if at_goal_scale else None,
                size_met=info["site_mb"] <= GOAL_SITE_MB if at_goal_scale else None)
    info["note"] = (f"{SUITE}'s committed runs repeated with new seeds (samples hard-linked); the build in a child "
                    "process, peak RSS from its rusage, size = sum of file sizes; RSS and size do not depend on "
                    "machine load, the wall time does (load_average_1min, other_processes_cpu_cores; cpu_s is "
                    "the build's own CPU time)")
    benchmark.extra_info.update({k: v for k, v in info.items() if v is not None})

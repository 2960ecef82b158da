"""The Ray executor against a private Ray cluster this module starts on this machine (ray.init(num_cpus=2)).

Stand-in run functions exercise the failure paths in milliseconds; one test runs a real small grid
on the tiny model through `pefthub bench --executor ray --address <this cluster>`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# The test cluster gets its own auth token (Ray >= 2.59 authenticates even local clusters). Ray
# reads these when it is imported, so they are set first; the drivers the tests start get them
# through ENV. Older Rays ignore them.
_RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
_SAVED_ENV = {k: os.environ.get(k) for k in _RAY_AUTH}
os.environ.update(_RAY_AUTH)

import ray  # noqa: E402  (the `ray` extra is part of the test environment; .ci/run installs it)

from pefthub import results as R
from pefthub.errors import ConfigError
from pefthub.executors.ray import RayExecutor, check_fits_a_node, remote_task
from pefthub.suites import Experiment, label_of

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **_RAY_AUTH}


def run_ok(config, *, suite, results_dir, progress=None):
    for step in (1, 2):
        if progress:
            progress({"phase": "train", "step": step, "steps": 2, "loss": 1.0 / step})
    doc = R.new_result(config, suite=suite, status="success", finished_at=R.utc_now())
    doc["method"] = {"name": config["method"], "trainable_params": 3}
    doc["evaluation"] = {"test": {"accuracy": 0.5, "n": 2, "ci_low": 0.1, "ci_high": 0.9}}
    doc["environment"] = {"hostname_pid": os.getpid()}
    R.write_result(results_dir, doc, [{"split": "test", "id": "a", "correct": True},
                                      {"split": "test", "id": "b", "correct": False}])
    return doc


def run_raises(config, *, suite, results_dir, progress=None):
    raise ValueError("diverged: NaN loss at step 1")


def run_segfaults(config, *, suite, results_dir, progress=None):
    os.kill(os.getpid(), signal.SIGSEGV)


def experiment(seed=0, **resources):
    config = {"model": "tiny-random", "task": {"name": "t"}, "trainer": "sft", "method": "lora",
              "params_target": None, "learning_rate": 1e-3, "seed": seed}
    return Experiment(config, label_of(config), {"num_cpus": 1, "num_gpus": 0, "memory_gb": None, **resources})


@pytest.fixture(scope="module")
def cluster():
    """A private Ray cluster on this machine, shut down (and the environment restored) at the end."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
             _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                                       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}})
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in _SAVED_ENV.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_with(fn, experiments, results_dir):
    executor = RayExecutor(run_function=f"test_ray:{fn}")
    events = []
    docs = list(executor.run(experiments, suite="unit", results_dir=results_dir,
                             events=lambda e, ev: events.append((e.run_id, ev))))
    return docs, events


def test_driver_writes_results_and_samples(cluster, tmp_path):
    runs = [experiment(seed=0), experiment(seed=1)]
    docs, events = run_with("run_ok", runs, tmp_path)
    assert sorted(d["run_id"] for d in docs) == sorted(e.run_id for e in runs)
    for e in runs:
        doc = R.read_result(R.result_path(tmp_path, e.run_id))
        assert doc["status"] == "success"
        assert doc["environment"]["hostname_pid"] != os.getpid()  # ran in a Ray worker, not here
        samples = R.read_samples(tmp_path / doc["evaluation"]["test"]["samples_file"])
        assert [s["id"] for s in samples] == ["a", "b"]
    phases = [ev["phase"] for rid, ev in events if rid == runs[0].run_id]
    assert phases[0] == "start" and phases[-1] == "done" and "train" in phases


def test_failures_are_recorded_by_the_driver(cluster, tmp_path):
    (raised,), _ = run_with("run_raises", [experiment(seed=2)], tmp_path)
    assert raised["status"] == "failed" and raised["error"] == "ValueError: diverged: NaN loss at step 1"
    (crashed,), _ = run_with("run_segfaults", [experiment(seed=3)], tmp_path)
    assert crashed["status"] == "failed" and "WorkerCrashedError" in crashed["error"]
    assert R.read_result(R.result_path(tmp_path, crashed["run_id"]))["status"] == "failed"


def test_request_larger_than_the_cluster_is_refused(cluster, tmp_path):
    with pytest.raises(ConfigError, match=r"requests num_cpus=1, num_gpus=1 but no Ray node can hold it .* "
                                          r"has 0 GPUs, 2 CPUs.*lower resources.num_gpus"):
        run_with("run_ok", [experiment(num_gpus=1)], tmp_path)
    assert not list(tmp_path.glob("*.json"))


def node(address, cpus, gpus, memory_gb, alive=True):
    return {"NodeManagerAddress": address, "Alive": alive,
            "Resources": {"CPU": float(cpus), "GPU": float(gpus), "memory": memory_gb * 1e9}}


def test_a_request_must_fit_one_node_not_the_cluster_total():
    """Two 4-GPU nodes hold 8 GPUs between them, but a run's 8 GPUs must be on one node; a dead
    8-GPU node does not count."""
    nodes = [node("10.0.0.1", 32, 4, 256), node("10.0.0.2", 64, 4, 512), node("10.0.0.3", 96, 8, 1024, alive=False)]
    check_fits_a_node([("lora/grpo", {"num_cpus": 8, "num_gpus": 4, "memory": 300e9})], nodes)  # node 2
    with pytest.raises(ConfigError) as info:
        check_fits_a_node([("lora/grpo", {"num_cpus": 8, "num_gpus": 1}),
                           ("full/grpo/lr=1e-05/seed=0", {"num_cpus": 8, "num_gpus": 8, "memory": 512e9})], nodes)
    assert str(info.value) == (
        "run full/grpo/lr=1e-05/seed=0 requests num_cpus=8, num_gpus=8, memory_gb=512 but no Ray node can hold "
        "it (a run runs on one node); the largest node, 10.0.0.2, has 4 GPUs, 64 CPUs, 512 GB memory: lower "
        "resources.num_gpus in the suite or add a larger node")
    with pytest.raises(ConfigError, match="largest node, 10.0.0.2, .*lower resources.memory_gb"):
        check_fits_a_node([("x", {"num_cpus": 1, "num_gpus": 4, "memory": 600e9})], nodes)
    with pytest.raises(ConfigError, match="largest node, 10.0.0.2, .*lower resources.num_cpus"):
        check_fits_a_node([("x", {"num_cpus": 65, "num_gpus": 0})], nodes)
    # Each resource is on some node, but not together: 8 GPUs on one, 16 CPUs only on the other.
    split = [node("gpus", 8, 8, 64), node("cpus", 64, 0, 64)]
    with pytest.raises(ConfigError, match="largest node, gpus, has 8 GPUs, 8 CPUs.*lower resources.num_cpus"):
        check_fits_a_node([("x", {"num_cpus": 16, "num_gpus": 8})], split)
    with pytest.raises(ConfigError, match="has no live node"):
        check_fits_a_node([("x", {"num_cpus": 1})], nodes[2:])


def test_each_run_gets_a_fresh_worker_process(cluster, tmp_path):
    """max_calls=1: three runs that each take the whole 2-CPU cluster run one after another, each in
    a process of its own (Ray would otherwise reuse its idle worker)."""
    assert remote_task(ray)._default_options["max_calls"] == 1
    runs = [experiment(seed=10 + i, num_cpus=2) for i in range(3)]
    docs, _ = run_with("run_ok", runs, tmp_path)
    pids = {d["environment"]["hostname_pid"] for d in docs}
    assert len(pids) == 3 and os.getpid() not in pids


def test_unreachable_address_is_one_line_and_fails_fast(tmp_path):
    suite = tmp_path / "s"
    suite.mkdir()
    (suite / "suite.toml").write_text("model = 'tiny-random'\n")
    out = subprocess.run([sys.executable, "-m", "pefthub", "bench", str(suite), "--executor", "ray",
                          "--address", "127.0.0.1:9"], capture_output=True, text=True, env=ENV, timeout=120)
    # the suite is invalid, and that is reported before any connection attempt
    assert out.returncode == 2 and "task: missing" in out.stderr
    # a fresh process (this one already holds a Ray connection, which an executor reuses)
    code = "from pefthub.executors.ray import RayExecutor; RayExecutor(address='127.0.0.1:9').connect()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert out.returncode != 0 and "cannot connect to the Ray cluster at 127.0.0.1:9" in out.stderr


def test_bench_runs_a_tiny_grid_on_the_cluster(cluster, tmp_path):
    """`pefthub bench --executor ray --address <cluster>`: real runs on the tiny model as Ray tasks,
    results written by the driver into the suite's store; a rerun has nothing left to do."""
    from test_bench_cli import KILL_GRID, tiny_suite

    from pefthub import suites

    suite_dir = tiny_suite(tmp_path, KILL_GRID, name="tiny-ray")
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "pefthub", "bench", str(suite_dir), "--executor", "ray", "--address", cluster,
           "--results", str(results)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    assert out.returncode == 0, out.stderr
    runs = suites.expand(suites.load(suite_dir))
    docs, problems = R.load_results_dir(results)
    assert problems == []
    assert sorted(d["run_id"] for d in docs) == sorted(r.run_id for r in runs)
    assert all(d["status"] == "success" for d in docs), [d.get("error") for d in docs]
    for doc in docs:
        assert (results / doc["evaluation"]["test"]["samples_file"]).exists()
        assert doc["environment"]["hostname"]  # the worker recorded where it ran
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0 and f"{len(runs)} already done" in again.stdout and "0 to run" in again.stdout

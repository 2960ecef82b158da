"""The Ray executor: every run is a Ray task with its resource request; the driver writes results.

``--address auto`` connects to the cluster this machine belongs to (``ray start`` / ``RAY_ADDRESS``),
``--address HOST:PORT`` or ``ray://HOST:PORT`` to a given one, ``--address local`` starts a
private single-node Ray inside the driver. Each task runs the experiment in a scratch directory on
its node and returns the result document and per-sample records; the driver writes them into the
suite's store, so workers need no shared filesystem. Step progress travels back through a
``ray.util.queue.Queue`` actor.

Each run gets a fresh worker process (``max_calls=1``): a GPU run's in-process vLLM engine, CUDA
context and allocator caches end with its process, so nothing one run leaves behind reaches the
next. Before anything is submitted, every run's request (CPUs, GPUs, memory) must fit on one node
of the cluster as it is now: a request no node can hold is one :class:`ConfigError` naming the
largest node, instead of a task that waits for a node that never comes.

A task that raises, whose worker dies (segfault, Ray's out-of-memory killer) or that is cancelled
is recorded by the driver as failed/cancelled; the sweep continues. Workers must have pefthub and
its dependencies installed (same versions as the driver); the driver passes the HF offline and
cache environment variables through the task's ``runtime_env``.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from pefthub.errors import ConfigError, PefthubError
from pefthub.executors.base import EventSink, failure_document, one_line, raise_if_stopped
from pefthub.executors.worker import DEFAULT_RUN_FUNCTION
from pefthub.results import read_result, read_samples, result_path, samples_path, write_result

PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_DATASETS_CACHE", "PEFTHUB_CACHE",
              "XDG_CACHE_HOME", "PEFTHUB_LOAD_PLUGINS", "PEFTHUB_DISABLE_PLUGIN_AUTOLOAD", "OMP_NUM_THREADS")
CONNECT_TIMEOUT = 5.0
#: A run's request key -> the Ray resource a node reports it as.
NODE_RESOURCES = (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory"))


def _ray():
    try:
        import ray
    except ImportError:
        raise PefthubError("the ray executor needs Ray: pip install 'pefthub[ray]'") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when HOST:PORT does not answer (ray.init would retry for minutes)."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname or not parsed.port:
        raise ConfigError(f"--address must be auto, local, HOST:PORT or ray://HOST:PORT (got {address!r})")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise PefthubError(f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}") from None


def _task(config: dict, suite: str, run_function: str, events: Any, run_id: str,
          num_gpus: float = 0) -> tuple[dict, list | None]:
    """Body of the Ray task (runs on a worker)."""
    from pefthub.executors.worker import run_isolated

    def progress(event: dict) -> None:
        if events is not None:
            try:
                events.put_nowait((run_id, dict(event)))
            except Exception:  # a full or dead queue must never fail the run
                pass

    scratch = tempfile.mkdtemp(prefix="pefthub-ray-")
    try:
        doc = run_isolated(config, suite, scratch, run_function, progress, num_gpus)
        path = result_path(scratch, run_id)
        if path.exists():
            doc = read_result(path)
        samples = read_samples(samples_path(scratch, run_id)) if samples_path(scratch, run_id).exists() else None
        return doc, samples
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def remote_task(ray):
    """The Ray remote function that runs one experiment, in a worker process used for that run only
    (``max_calls=1``: Ray starts a fresh worker for the next task; Ray allows this option only here,
    not in ``.options()``)."""
    return ray.remote(max_calls=1)(_task)


def _describe(resources: dict[str, float]) -> str:
    memory = resources.get("memory", 0)
    return (f"{resources.get('GPU', 0):g} GPUs, {resources.get('CPU', 0):g} CPUs"
            + (f", {memory / 1e9:,.0f} GB memory" if memory else ""))


def check_fits_a_node(requests: list[tuple[str, dict[str, Any]]], nodes: list[dict[str, Any]]) -> None:
    """Raise :class:`ConfigError` for the first run whose request (``_options``-shaped: num_cpus,
    num_gpus, memory in bytes) no single live node of ``nodes`` (``ray.nodes()``-shaped) can hold,
    naming the largest node; a Ray task cannot span nodes, so it would wait forever."""
    def has(node: dict, resource: str) -> float:
        return float((node.get("Resources") or {}).get(resource, 0))

    alive = [n for n in nodes if n.get("Alive", True)]
    for label, opts in requests:
        want = {resource: float(opts.get(key) or 0) for key, resource in NODE_RESOURCES}
        if any(all(has(n, r) >= v for r, v in want.items()) for n in alive):
            continue
        asked = ", ".join(f"memory_gb={opts[key] / 1e9:g}" if key == "memory" else f"{key}={opts[key]:g}"
                          for key, _ in NODE_RESOURCES if opts.get(key))
        if not alive:
            raise ConfigError(f"run {label} requests {asked or 'resources'} but the Ray cluster has no live node")
        # The resource no node has enough of (else the first one the largest node lacks).
        most = {r: max(has(n, r) for n in alive) for r in want}
        largest = max(alive, key=lambda n: (has(n, "GPU"), has(n, "CPU"), has(n, "memory")))
        short = next((r for r, v in want.items() if v > most[r]), None) or next(
            r for r, v in want.items() if v > has(largest, r))
        if short != "GPU" and want[short] > most[short]:
            largest = max(alive, key=lambda n: has(n, short))
        key = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory_gb"}[short]
        where = largest.get("NodeManagerAddress") or largest.get("NodeID") or "?"
        raise ConfigError(
            f"run {label} requests {asked} but no Ray node can hold it (a run runs on one node); the largest "
            f"node, {where}, has {_describe(largest.get('Resources') or {})}: lower resources.{key} in the "
            "suite or add a larger node")


class RayExecutor:
    name = "ray"

    def __init__(self, address: str = "auto", run_function: str = DEFAULT_RUN_FUNCTION):
        self.address = address
        self.run_function = run_function
        self._started_here = False

    def connect(self) -> None:
        ray = _ray()
        if ray.is_initialized():
            return
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        kwargs: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False,
                                  "runtime_env": {"env_vars": env} if env else None}
        # Ray's C++ client logs every retry at WARNING on stderr; the failure is reported below as one line.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        hint = ""
        if self.address == "local":
            kwargs["include_dashboard"] = False
            address = None
        else:
            if self.address != "auto":
                _check_reachable(self.address)
                hint = ("; the address answers, so check Ray token authentication "
                        "(RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or ~/.ray/auth_token, as on the cluster) "
                        "and that the Ray versions match")
            address = self.address
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise PefthubError(f"cannot connect to the Ray cluster at {self.address}: {one_line(str(exc))}{hint}") from None
        self._started_here = True

    def close(self) -> None:
        if self._started_here:
            _ray().shutdown()
            self._started_here = False

    def _options(self, experiment) -> dict[str, Any]:
        res = experiment.resources or {}
        options: dict[str, Any] = {"num_cpus": res.get("num_cpus", 1), "num_gpus": res.get("num_gpus", 0),
                                   "max_retries": 0, "name": experiment.label}
        if res.get("memory_gb"):
            options["memory"] = int(res["memory_gb"] * 1e9)
        return options

    def _check_feasible(self, experiments: list) -> None:
        check_fits_a_node([(e.label, self._options(e)) for e in experiments], _ray().nodes())

    def run(self, experiments, *, suite: str, results_dir: Path, events: EventSink) -> Iterator[dict]:
        experiments = list(experiments)  # drawn all at once: a bench claims every run before it is submitted
        ray = _ray()
        self.connect()
        self._check_feasible(experiments)
        from ray.util.queue import Queue

        queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        remote = remote_task(ray)
        pending: dict[Any, Any] = {}
        by_id = {e.run_id: e for e in experiments}
        for experiment in experiments:
            ref = remote.options(**self._options(experiment)).remote(
                experiment.config, suite, self.run_function, queue, experiment.run_id,
                (experiment.resources or {}).get("num_gpus", 0))
            pending[ref] = experiment
        seen_start: set[str] = set()
        try:
            while pending:
                raise_if_stopped()  # a stop signal of `pefthub bench` (handled below as Ctrl-C)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                self._drain(queue, by_id, seen_start, events)
                for ref in ready:
                    experiment = pending.pop(ref)
                    if experiment.run_id not in seen_start:
                        events(experiment, {"phase": "start"})
                        seen_start.add(experiment.run_id)
                    doc = self._collect(ray, ref, experiment, suite, results_dir)
                    events(experiment, {"phase": "done", "status": doc.get("status"), "error": doc.get("error")})
                    yield doc
        except KeyboardInterrupt:
            for ref, experiment in pending.items():
                ray.cancel(ref, force=True)
                write_result(results_dir, failure_document(experiment, suite, "interrupted by the user",
                                                           status="cancelled"))
            raise
        finally:
            try:
                ray.kill(queue.actor)
            except Exception:
                pass

    @staticmethod
    def _drain(queue, by_id: dict, seen_start: set, events: EventSink) -> None:
        while True:
            try:
                run_id, event = queue.get_nowait()
            except Exception:
                return
            experiment = by_id.get(run_id)
            if experiment is None:
                continue
            if run_id not in seen_start:
                events(experiment, {"phase": "start"})
                seen_start.add(run_id)
            events(experiment, event)

    @staticmethod
    def _collect(ray, ref, experiment, suite: str, results_dir: Path) -> dict:
        from ray.exceptions import RayError, TaskCancelledError

        try:
            doc, samples = ray.get(ref)
        except TaskCancelledError:
            doc, samples = failure_document(experiment, suite, "cancelled", status="cancelled"), None
        except RayError as exc:  # worker died, Ray's OOM killer, unpicklable failure, ...
            doc, samples = failure_document(experiment, suite, f"{type(exc).__name__}: {one_line(str(exc))}"), None
        write_result(results_dir, doc, samples)
        return doc

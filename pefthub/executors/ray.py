"""The Ray executor: every run is a Ray task with its resource request; the driver writes results.

``--address auto`` connects to the cluster this machine belongs to (``ray start`` / ``RAY_ADDRESS``),
``--address HOST:PORT`` or ``ray://HOST:PORT`` to a given one, ``--address local`` starts a
private single-node Ray inside the driver. Each task runs the experiment in a scratch directory on
its node and returns the result document and per-sample records; the driver writes them into the
suite's store, so workers need no shared filesystem. Step progress travels back through a
``ray.util.queue.Queue`` actor.

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
from pefthub.executors.base import EventSink, failure_document, one_line
from pefthub.executors.worker import DEFAULT_RUN_FUNCTION
from pefthub.results import read_result, read_samples, result_path, samples_path, write_result

PASSED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_DATASETS_CACHE", "PEFTHUB_CACHE",
              "XDG_CACHE_HOME", "PEFTHUB_LOAD_PLUGINS", "PEFTHUB_DISABLE_PLUGIN_AUTOLOAD", "OMP_NUM_THREADS")
CONNECT_TIMEOUT = 5.0


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


def _task(config: dict, suite: str, run_function: str, events: Any, run_id: str) -> tuple[dict, list | None]:
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
        doc = run_isolated(config, suite, scratch, run_function, progress)
        path = result_path(scratch, run_id)
        if path.exists():
            doc = read_result(path)
        samples = read_samples(samples_path(scratch, run_id)) if samples_path(scratch, run_id).exists() else None
        return doc, samples
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
        ray = _ray()
        total = ray.cluster_resources()
        for experiment in experiments:
            opts = self._options(experiment)
            for key, have_key in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
                want = opts.get(key) or 0
                if want > total.get(have_key, 0):
                    have = total.get(have_key, 0)
                    unit = " bytes" if key == "memory" else ""
                    raise PefthubError(f"run {experiment.label} requests {key}={want:g}{unit} but the Ray cluster "
                                       f"has {have:g}{unit} in total; lower resources.{key} in the suite")

    def run(self, experiments: list, *, suite: str, results_dir: Path, events: EventSink) -> Iterator[dict]:
        ray = _ray()
        self.connect()
        self._check_feasible(experiments)
        from ray.util.queue import Queue

        queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        remote = ray.remote(_task)
        pending: dict[Any, Any] = {}
        by_id = {e.run_id: e for e in experiments}
        for experiment in experiments:
            ref = remote.options(**self._options(experiment)).remote(
                experiment.config, suite, self.run_function, queue, experiment.run_id)
            pending[ref] = experiment
        seen_start: set[str] = set()
        try:
            while pending:
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

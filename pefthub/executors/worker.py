"""What runs inside a child process (local executor) or a Ray task: one experiment, isolated.

The run function is named by a ``"module:function"`` string (default ``pefthub.runner:run_resolved``:
an executor runs a suite's runs, whose configs the driver resolved, validated and sized once) so it can
cross a process boundary and be swapped in tests.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from pefthub.executors.base import failure_document, one_line
from pefthub.results import StoreWriteError, utc_now, write_result

DEFAULT_RUN_FUNCTION = "pefthub.runner:run_resolved"


def load_function(spec: str) -> Callable[..., dict]:
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr or "run_experiment")


def preload() -> None:
    """Import the heavy modules and load the plugin registries once in the fork server, so each
    child starts in milliseconds. Nothing here runs torch code (no thread pools exist to fork)."""
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401

        from pefthub import plugins

        load_function(DEFAULT_RUN_FUNCTION)
        plugins.methods(), plugins.tasks(), plugins.trainers(), plugins.rewards()
    except Exception:  # the child imports again and reports the real error in its result
        pass


class _Experiment:
    """Just enough of :class:`pefthub.suites.Experiment` for :func:`failure_document`."""

    def __init__(self, config: dict):
        self.config = config


def _watch_driver(driver_pid: int) -> None:
    """Exit when the driver is gone (kill -9 of `pefthub bench`): an orphaned run would keep the
    CPU busy and could write a result nobody is waiting for while the rerun redoes it."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(driver_pid, 0)
        except ProcessLookupError:
            os._exit(3)
        except PermissionError:
            pass


#: Lifecycle events the executor itself emits (once, after the result is safely on disk); the same
#: phases reported by a run function are dropped so a run is never counted twice.
EXECUTOR_PHASES = ("start", "done")


def run_isolated(config: dict, suite: str, results_dir: str, run_function: str,
                 progress: Callable[[dict], None] | None, num_gpus: float = 0) -> dict:
    """Run one experiment; anything it raises becomes a failed result written here, except a store
    that cannot be written (:class:`StoreWriteError`, raised on: the run did not fail, its store did)."""
    started = utc_now()

    def forward(event: dict) -> None:
        if progress is not None and event.get("phase") not in EXECUTOR_PHASES:
            progress(event)

    try:
        fn = load_function(run_function)
        # Only a run given several GPUs hears of them (a full fine-tuning run shards across them).
        gpus = {"num_gpus": num_gpus} if num_gpus and num_gpus > 1 else {}
        return fn(config, suite=suite, results_dir=Path(results_dir), progress=forward, **gpus)
    except StoreWriteError:
        raise
    except Exception as exc:
        traceback.print_exc()
        doc = failure_document(_Experiment(config), suite, f"{type(exc).__name__}: {one_line(str(exc))}",
                               started_at=started)
        write_result(results_dir, doc)
        return doc


def child_main(config: dict, suite: str, results_dir: str, run_function: str, queue: Any,
               driver_pid: int, log_path: str, num_gpus: float = 0) -> None:
    """Entry point of the local executor's child process. It reports ``("event", dict)`` messages,
    then ``("result", {status, error})`` or ``("store_error", StoreWriteError args)``."""
    # The driver decides what Ctrl-C and SIGTERM (sent to the whole job by schedulers) do to the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_driver, args=(driver_pid,), daemon=True).start()
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1, encoding="utf-8")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log

    def progress(event: dict) -> None:
        try:
            queue.put(("event", dict(event)))
        except Exception:
            pass

    try:
        doc = run_isolated(config, suite, results_dir, run_function, progress, num_gpus)
    except StoreWriteError as exc:
        queue.put(("store_error", exc.args))
    else:
        queue.put(("result", {"status": doc.get("status"), "error": doc.get("error")}))
    queue.close()
    queue.join_thread()
    log.flush()

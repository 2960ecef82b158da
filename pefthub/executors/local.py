"""The local executor: runs one experiment at a time on this machine.

Why a child process per run (the default, ``isolation="process"``): a run that segfaults, is
killed by the kernel's OOM killer or leaks memory must not take the sweep down or slow the next
run; a fresh process also returns all of a run's memory to the system between runs. The children
come from a ``multiprocessing`` fork server that has imported torch, transformers and the runner
once, so a run starts without paying that import each time (the server
never runs torch code itself, so forking it is safe). ``isolation="inline"`` runs in this process
(for debugging with --debug and pdb).

Memory: when a run's ``resources.memory_gb`` is set, the driver samples the child's resident
memory (with its children) twice a second and stops it when over the limit, recording
"exceeded memory" instead of letting the machine swap or the OOM killer pick a victim.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import time
from pathlib import Path
from typing import Iterator

from pefthub.executors.base import EventSink, failure_document, raise_if_stopped
from pefthub.executors.worker import DEFAULT_RUN_FUNCTION, child_main, run_isolated
from pefthub.results import (ResultFileError, StoreWriteError, read_result, remove_partial_files, result_path,
                             utc_now, write_result)

POLL_SECONDS = 0.5


def _rss_bytes(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _stop_orphan(pid: int | None, attempt_start: float) -> bool:
    """Kill the run's process if it outlived the fork server that started it (its exit code then reads
    255 while it runs on); True when there was one."""
    import psutil

    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.create_time() < attempt_start - 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return False          # an older process that reused the pid, or one that has already ended
        proc.kill()
        proc.wait(10)
    except psutil.Error:
        return False
    return True


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {exitcode} without writing a result"


class LocalExecutor:
    name = "local"

    def __init__(self, isolation: str = "process", run_function: str = DEFAULT_RUN_FUNCTION):
        if isolation not in ("process", "inline"):
            raise ValueError(f"isolation must be 'process' or 'inline', got {isolation!r}")
        self.isolation = isolation
        self.run_function = run_function
        self._ctx = None

    def _context(self):
        if self._ctx is None:
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload(["pefthub.executors._preload"])
        return self._ctx

    def run(self, experiments, *, suite: str, results_dir: Path, events: EventSink) -> Iterator[dict]:
        """Run ``experiments`` (any iterable, drawn one at a time: a bench claims each run as it is
        drawn) one after the other."""
        results_dir = Path(results_dir)
        for experiment in experiments:
            raise_if_stopped()
            events(experiment, {"phase": "start"})
            if self.isolation == "inline":
                doc = self._run_inline(experiment, suite, results_dir, events)
            else:
                doc = self._run_child(experiment, suite, results_dir, events)
            events(experiment, {"phase": "done", "status": doc.get("status"), "error": doc.get("error")})
            yield doc

    def _run_inline(self, experiment, suite: str, results_dir: Path, events: EventSink) -> dict:
        started, attempt_start = utc_now(), time.time()
        try:
            run_isolated(experiment.config, suite, str(results_dir), self.run_function,
                         lambda event: events(experiment, event), (experiment.resources or {}).get("num_gpus", 0))
        except KeyboardInterrupt:
            _leave_pending(experiment, suite, results_dir, started, attempt_start)
            raise
        return self._read_back(experiment, suite, results_dir, attempt_start,
                               "run function returned without writing a result")

    def _run_child(self, experiment, suite: str, results_dir: Path, events: EventSink) -> dict:
        ctx = self._context()
        messages = ctx.Queue()
        log_path = results_dir / "logs" / f"{experiment.run_id}.log"
        started, attempt_start = utc_now(), time.time()
        proc = ctx.Process(target=child_main, name=f"pefthub-run-{experiment.run_id}",
                           args=(experiment.config, suite, str(results_dir), self.run_function, messages,
                                 os.getpid(), str(log_path), (experiment.resources or {}).get("num_gpus", 0)))
        limit_gb = (experiment.resources or {}).get("memory_gb")
        limit = int(limit_gb * 1e9) if limit_gb else None
        outcome = None
        store_error = None
        over_memory = None
        try:
            proc.start()
            while True:
                raise_if_stopped()
                try:
                    kind, payload = messages.get(timeout=POLL_SECONDS)
                except queue_module.Empty:
                    if not proc.is_alive():
                        break
                    if limit is not None and over_memory is None:
                        rss = _rss_bytes(proc.pid)
                        if rss > limit:
                            over_memory = rss
                            proc.kill()
                    continue
                if kind == "event":
                    events(experiment, payload)
                elif kind == "result":
                    outcome = payload
                    break
                elif kind == "store_error":
                    store_error = StoreWriteError(*payload)
                    break
        except KeyboardInterrupt:  # Ctrl-C, or a stop signal of `pefthub bench` (executors.base.Stopped)
            if proc.pid is not None:
                proc.kill()  # the child ignores SIGINT and SIGTERM
                proc.join()
            _leave_pending(experiment, suite, results_dir, started, attempt_start)
            raise
        finally:
            # Close the queue here, interrupted or not: its three semaphores are unlinked with it,
            # so no "leaked semaphore objects" warning from the resource tracker at exit.
            exitcode, child_pid = None, proc.pid
            if proc.pid is not None:
                proc.join(30)  # after its last message a child only flushes its queue and exits
                if proc.is_alive():
                    proc.kill()
                    proc.join()
                exitcode = proc.exitcode
                proc.close()
            messages.close()
            messages.join_thread()
        if store_error is not None:
            raise store_error
        orphaned = outcome is None and _stop_orphan(child_pid, attempt_start)
        if outcome is None:
            try:
                # SIGTERM to the whole process group (a scheduler, `kill -- -PGID`) also ends the fork
                # server, so the child's exit reads as 255 before the loop sees the driver's own stop.
                raise_if_stopped()
            except KeyboardInterrupt:
                _leave_pending(experiment, suite, results_dir, started, attempt_start)
                raise
        try:
            if log_path.stat().st_size == 0:
                log_path.unlink()  # keep only logs that say something
        except OSError:
            pass
        if outcome is None:
            if over_memory is not None:
                error = (f"exceeded memory: {over_memory / 1e9:.1f} GB resident > resources.memory_gb = {limit_gb:g}; "
                         "the run was stopped")
            elif orphaned:
                error = f"the fork server exited while the run was going, and the run was stopped (log: {log_path})"
            else:
                error = f"{_exit_reason(exitcode)} (log: {log_path})"
            doc = failure_document(experiment, suite, error, started_at=started)
            write_result(results_dir, doc)
            return doc
        return self._read_back(experiment, suite, results_dir, attempt_start,
                               f"worker reported {outcome.get('status')} but wrote no result (log: {log_path})")

    @staticmethod
    def _read_back(experiment, suite: str, results_dir: Path, attempt_start: float, missing: str) -> dict:
        """The document the run wrote (read from disk: the file is the truth, not the message).
        A file older than this attempt is a previous attempt's result, not this one's."""
        path = result_path(results_dir, experiment.run_id)
        try:
            if path.stat().st_mtime >= attempt_start - 1.0:
                return read_result(path)
        except FileNotFoundError:
            pass
        except ResultFileError as exc:
            missing = f"the run wrote an unusable result: {exc.reason}"
        doc = failure_document(experiment, suite, missing)
        write_result(results_dir, doc)
        return doc


def _leave_pending(experiment, suite: str, results_dir: Path, started: str, attempt_start: float) -> None:
    """After an interrupted run: remove its partial files and record it ``cancelled`` (pending: the
    next bench reruns it) -- unless it finished writing its result just before the interruption.
    Best effort on a store that cannot be written: the interruption is what gets reported."""
    remove_partial_files(results_dir, experiment.run_id, attempt_start)
    path = result_path(results_dir, experiment.run_id)
    try:
        if path.stat().st_mtime >= attempt_start - 1.0 and read_result(path)["status"] != "cancelled":
            return
    except (OSError, ResultFileError):
        pass
    try:
        write_result(results_dir, failure_document(experiment, suite, "interrupted by the user",
                                                   status="cancelled", started_at=started))
    except StoreWriteError:
        pass

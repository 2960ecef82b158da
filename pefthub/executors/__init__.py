"""Executors run a list of experiments and hand each finished result document back to the driver.

* ``local`` (default): one run at a time on this machine, each in a forked child process
  (see :mod:`pefthub.executors.local` for why), or inline with ``isolation="inline"``.
* ``ray``: each run is a Ray task with its resource request; the driver writes the results.

Both guarantee that every experiment they were given ends with a result file (success, failed or
cancelled) unless the driver itself is killed, in which case the unfinished runs simply have no
file and a rerun does them.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

from pefthub.errors import ConfigError
from pefthub.results import new_result, utc_now

#: Called with (experiment, event); events are dicts with a "phase" key: "start", "train", "eval",
#: "done" (with "status" and "error") -- plus whatever the trainer reports.
EventSink = Callable[[Any, dict], None]

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str

    def run(self, experiments: list, *, suite: str, results_dir, events: EventSink) -> Iterator[dict]:
        """Run ``experiments``; yield each result document once its file is written."""


def failure_document(experiment: Any, suite: str, error: str, *, status: str = "failed",
                     started_at: str | None = None) -> dict:
    """The result of a run that ended without the runner writing one (crash, kill, cancel)."""
    return new_result(experiment.config, suite=suite, status=status, error=error,
                      started_at=started_at, finished_at=utc_now())


def one_line(text: str, limit: int = 300) -> str:
    """Errors in result files are one line (the schema's rule); keep the last meaningful line."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "unknown error"
    return line if len(line) <= limit else line[: limit - 1] + "…"


def make_executor(name: str, *, address: str | None = None, isolation: str = "process") -> Executor:
    if name == "local":
        from pefthub.executors.local import LocalExecutor

        return LocalExecutor(isolation=isolation)
    if name == "ray":
        from pefthub.executors.ray import RayExecutor

        return RayExecutor(address=address or "auto")
    raise ConfigError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")

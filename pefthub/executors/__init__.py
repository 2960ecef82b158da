"""Executors run a list of experiments and hand each finished result document back to the driver.

* ``local`` (default): one run at a time on this machine, each in a forked child process
  (see :mod:`pefthub.executors.local` for why), or inline with ``isolation="inline"``.
* ``ray``: each run is a Ray task with its resource request; the driver writes the results.

Both guarantee that every experiment they were given ends with a result file (success, failed or
cancelled) unless the driver itself is killed, in which case the unfinished runs simply have no
file and a rerun does them.
"""

from __future__ import annotations

from pefthub.errors import ConfigError
from pefthub.executors.base import EventSink, Executor, failure_document, one_line

__all__ = ["EXECUTORS", "EventSink", "Executor", "failure_document", "make_executor", "one_line"]

EXECUTORS = ("local", "ray")


def make_executor(name: str, *, address: str | None = None, isolation: str = "process") -> Executor:
    if name == "local":
        from pefthub.executors.local import LocalExecutor

        return LocalExecutor(isolation=isolation)
    if name == "ray":
        from pefthub.executors.ray import RayExecutor

        return RayExecutor(address=address or "auto")
    raise ConfigError(f"unknown executor '{name}' (known: {', '.join(EXECUTORS)})")

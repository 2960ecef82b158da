"""What every executor shares: the protocol, the event sink and the result of a run that never reported."""

from __future__ import annotations

import signal
from typing import Any, Callable, Iterable, Iterator, Protocol

from pefthub.results import new_result, utc_now

#: Called with (experiment, event); events are dicts with a "phase" key: "start", "train", "eval",
#: "done" (with "status" and "error") -- plus whatever the trainer reports.
EventSink = Callable[[Any, dict], None]


class Executor(Protocol):
    name: str

    def run(self, experiments: Iterable, *, suite: str, results_dir, events: EventSink) -> Iterator[dict]:
        """Run ``experiments``; yield each result document once its file is written.

        ``experiments`` is an iterable that claims each run as it is drawn (``pefthub bench`` shares
        its store through claims): draw it once, and no earlier than the run can start. On
        KeyboardInterrupt (Ctrl-C; SIGTERM in ``pefthub bench``) stop the runs, leave them pending
        (``cancelled``, partial files removed) and re-raise. A store that cannot be written raises
        :class:`pefthub.results.StoreWriteError`."""


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


# ---- stopping on a signal ----------------------------------------------------------------------
class Stopped(KeyboardInterrupt):
    """A stop asked for by SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler). A KeyboardInterrupt,
    so every executor's Ctrl-C handling (stop the run, leave it pending) applies to both."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_requested: list[int] = []


def request_stop(signum: int) -> None:
    """Record a stop (what `pefthub bench`'s signal handlers do). It raises nothing: an exception
    raised by a handler can land inside a garbage-collector callback, where Python drops it, or
    half-way through starting a child process; :func:`raise_if_stopped` raises it where it is safe."""
    if not _requested:
        _requested.append(signum)


def raise_if_stopped() -> None:
    """Raise :class:`Stopped` when a stop was requested: executors call this where they wait for a
    run (at least twice a second) and before starting the next one."""
    if _requested:
        raise Stopped(_requested[0])


def clear_stop() -> None:
    _requested.clear()

"""What every executor shares: the protocol, the event sink and the result of a run that never reported."""

from __future__ import annotations

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

"""What lm-eval calls back into: the filters and the metric of a rendered pefthub task.

Each rendered task directory holds a two-line ``pefthub_task.py`` that calls :func:`bind` with the
task's config; the YAML names its functions with ``!function``. They call the task's own
``extract_strict`` / ``extract`` / ``is_correct``, the exact code the rewards use, so lm-eval's
``exact_match`` and a training reward agree on every completion.
"""

from __future__ import annotations

import json
from typing import Any, Callable

# lm-eval's own convention (its regex filter's fallback) for "no answer found".
INVALID = "[invalid]"

# Tasks evaluated in this process, by canonical config JSON: the in-process caller registers the
# exact task object (which may not be constructible by name, e.g. a test's local Task subclass).
_LIVE_TASKS: dict[str, Any] = {}


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


def register_live_task(task: Any) -> None:
    _LIVE_TASKS[_key(task.config())] = task


def _task(config: dict[str, Any]) -> Any:
    key = _key(config)
    if key not in _LIVE_TASKS:
        from pefthub.tasks import task_from_config

        _LIVE_TASKS[key] = task_from_config(config)
    return _LIVE_TASKS[key]


def _filter(config: dict[str, Any], strict: bool) -> Callable:
    def apply(resps, docs):
        task = _task(config)
        extract = task.extract_strict if strict else task.extract
        out = []
        for responses in resps:
            values = []
            for r in responses:
                got = extract(r if isinstance(r, str) else "")
                values.append(INVALID if got is None else got)
            out.append(values)
        return out

    apply.__name__ = "strict_match" if strict else "flexible_extract"
    return apply


def bind(config: dict[str, Any]) -> tuple[Callable, Callable, Callable]:
    """(strict filter, flexible filter, process_results) for the task with this config."""

    def process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, float]:
        got = results[0] if results else None
        extracted = None if got in (None, INVALID) else str(got)
        return {"exact_match": 1.0 if _task(config).is_correct(extracted, doc["answer"]) else 0.0}

    return _filter(config, strict=True), _filter(config, strict=False), process_results

"""Tasks: datasets with a prompt format, an answer extractor and a scorer (see ``base.py``).

Tasks are registered by plugins through the ``register_tasks`` hook (the built-ins live in
``plugins/tasks_*.py``); :func:`get_task` builds one by name with validated parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pefthub.errors import ConfigError
from pefthub.tasks.base import SPLITS, Example, Task, TaskParams, param

#: The embedded default task (name + parameters). Chosen so that the embedded default model
#: (SmolLM2-135M-Instruct) scores between 10% and 70% before training; the measurement and the
#: command that produced it are in docs/tasks.md.
DEFAULT_TASK: dict[str, Any] = {
    "name": "chain_sum",
    "min_terms": 2,
    "max_terms": 3,
    "min_digits": 1,
    "max_digits": 1,
}


def get_task(name: str, **params: Any) -> Task:
    """The registered task ``name`` built with ``params`` (unknown task or invalid parameters:
    :class:`ConfigError` with one line naming it)."""
    from pefthub import plugins

    cls = plugins.tasks().get(name)
    return cls(**params)


def task_from_config(config: dict[str, Any] | str) -> Task:
    """A task from a config table ``{"name": ..., **params}`` (as in suites and result files) or a name."""
    if isinstance(config, str):
        return get_task(config)
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise ConfigError(f"a task config needs a 'name' (got {config!r})")
    params = {k: v for k, v in config.items() if k != "name"}
    return get_task(config["name"], **params)


def default_task() -> Task:
    return task_from_config(DEFAULT_TASK)


def examples_by_id(task: Task | dict[str, Any] | str, split: str, ids: Iterable[str]) -> dict[str, Example]:
    """The examples of ``split`` with the given item ids (as sample and probe records carry them, e.g.
    "chain_sum-test-12"), regenerated from the task (an object, a result file's task config, or a name);
    an id the split does not hold is a :class:`ConfigError`."""
    task = task if isinstance(task, Task) else task_from_config(task)
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return {}
    pattern = re.compile(rf"{re.escape(task.name)}-{re.escape(split)}-(\d+)")
    indices = [m.group(1) for m in map(pattern.fullmatch, wanted) if m]
    n = max(int(i) for i in indices) + 1 if len(indices) == len(wanted) else None
    by_id = {ex.id: ex for ex in task.examples(split, n)}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise ConfigError(f"task '{task.name}': the {split} split has no item {missing[0]!r}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return {i: by_id[i] for i in wanted}


def strata_of(task: Task | dict[str, Any] | str, split: str, ids: Iterable[str]) -> dict[str, str | None]:
    """The stratum (:meth:`Task.stratum`) of each item id of ``split`` (:func:`examples_by_id`)."""
    task = task if isinstance(task, Task) else task_from_config(task)
    return {i: task.stratum(example) for i, example in examples_by_id(task, split, ids).items()}


__all__ = ["DEFAULT_TASK", "SPLITS", "Example", "Task", "TaskParams", "default_task", "examples_by_id", "get_task", "param",
           "strata_of", "task_from_config"]

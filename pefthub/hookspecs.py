"""The hooks a pefthub plugin can implement.

Every hook receives a ``register`` callable. All plugins' implementations are called (pluggy
calls every implementation; no hook is ``firstresult``) and their registrations are combined into
one registry per kind. A name registered twice, by the same or different plugins, is an error that
names both plugins. Built-in plugins (``pefthub.builtins.*``) implement these hooks exactly as a
third-party package does, through the ``pefthub`` entry-point group.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("pefthub")
hookimpl = pluggy.HookimplMarker("pefthub")


@hookspec
def register_methods(register: Callable[[type], None]) -> None:
    """Register fine-tuning methods.

    Call ``register(MethodClass)`` once per method; ``MethodClass`` subclasses
    :class:`pefthub.methods.Method` and its ``name`` must be unique across all plugins.
    Results combine: the method registry is the union of every plugin's registrations.
    """


@hookspec
def register_tasks(register: Callable[[type], None]) -> None:
    """Register tasks (datasets with a prompt format, an answer extractor and a scorer).

    Call ``register(TaskClass)``; ``TaskClass`` subclasses :class:`pefthub.tasks.Task` with a
    unique ``name``. Results combine into one task registry.
    """


@hookspec
def register_rewards(register: Callable[..., None]) -> None:
    """Register reward functions for RL trainers.

    Call ``register(name, fn)`` where ``fn(completions, **columns) -> list[float]`` follows TRL's
    reward-function signature. Names are unique; results combine into one reward registry.
    """


@hookspec
def register_trainers(register: Callable[[type], None]) -> None:
    """Register trainers (e.g. ``sft``, ``grpo``).

    Call ``register(TrainerClass)``; ``TrainerClass`` subclasses :class:`pefthub.trainers.Trainer`
    with a unique ``name``. Results combine into one trainer registry.
    """

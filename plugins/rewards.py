"""Built-in reward functions (TRL signature), registered like any third-party plugin's."""

from __future__ import annotations

from pefthub.hookspecs import hookimpl
from pefthub.rewards import BUILTIN_REWARDS


@hookimpl
def register_rewards(register) -> None:
    for name, fn in BUILTIN_REWARDS.items():
        register(name, fn)

"""Trainers (SFT, GRPO) and the matched budget they share; rollouts come from :mod:`pefthub.generation`.

The names below load on first use, so importing ``pefthub.trainers.budget`` (the CLI does, for its
defaults) does not import torch: `pefthub --help` and one-line argument errors stay fast.
"""

import importlib

_EXPORTS = {"Trainer": "base", "TrainerOptions": "base", "TrainingFailure": "base", "TrainOutcome": "base",
            "Budget": "budget", "Spent": "budget"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"pefthub.trainers.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'pefthub.trainers' has no attribute {name!r}")

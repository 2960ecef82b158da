"""Trainers (SFT, GRPO), the matched budget they share, and the rollout-backend interface."""

from pefthub.trainers.base import Trainer, TrainerOptions, TrainingFailure, TrainOutcome
from pefthub.trainers.budget import Budget, Spent

__all__ = ["Budget", "Spent", "Trainer", "TrainerOptions", "TrainingFailure", "TrainOutcome"]

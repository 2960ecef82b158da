from pefthub.tasks.base import SPLITS, Example, Task

__all__ = ["SPLITS", "Example", "Task"]

"""Scoring with lm-eval: :func:`evaluate` renders a task split as a local lm-eval task and runs
``lm_eval.simple_evaluate`` on an in-memory model (greedy ``generate_until``, the model's chat
template, the task's own extractor in the strict and flexible filters).

The result is an :class:`EvalResult`: ``summary`` is the ``evaluation.<split>`` object of the
result schema (docs/results-schema.md) without ``samples_file``, and ``samples`` are the lines of
the samples file.
"""

from __future__ import annotations

from pefthub.evaluation.core import (BACKENDS, HEADLINE_METRIC, TASK_SIZED, EvalResult, evaluate, evaluate_lm,
                                     is_merged, task_max_new_tokens, wilson_interval)

__all__ = ["BACKENDS", "HEADLINE_METRIC", "TASK_SIZED", "EvalResult", "evaluate", "evaluate_lm", "is_merged",
           "task_max_new_tokens", "wilson_interval"]

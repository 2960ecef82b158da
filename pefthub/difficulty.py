"""Task difficulty at the rollout temperature: how often the untrained model solves each training
prompt when sampled as GRPO samples, and what share of GRPO's groups would carry a gradient.

A GRPO group (one prompt, ``generations`` samples) teaches nothing when every sample gets the same
reward. Before a sweep, :func:`probe` measures that share on the task's train split with the same
rollout engine, prompt rendering, reward and temperature the trainer uses, so a task configuration
can be chosen where most groups are informative. Its JSON document is the only record of a probe.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

from pefthub.errors import ConfigError
from pefthub.evaluation.core import wilson_interval
from pefthub.settings import Settings, setting

PROBE_SCHEMA = "pefthub.probe"
PROBE_VERSION = 1


@dataclass
class ProbeSettings(Settings):
    """What a probe samples: model, task, temperature, group size, number of prompts, token cap; each
    field checked on construction (errors name the field, before anything is loaded)."""

    model: str = setting(help="model name or path", nonempty=True)
    task: dict = setting({}, "task config: a name and its parameters")
    temperature: float = setting(1.0, "sampling temperature", above=0)
    generations: int = setting(4, "samples per prompt, as GRPO's group", min=2)
    prompts: int = setting(128, "train prompts sampled", min=1)
    max_new_tokens: int = setting(64, "longest sample", min=1)
    seed: int = setting(0, "sampling seed", min=0)
    rollout_backend: str = setting("auto", "rollout engine", nonempty=True)
    chunk: int = setting(16, "prompts sampled together", min=1)

    @classmethod
    def where(cls) -> str:
        return ""


def answer_floor(task, ids: list[str]) -> dict:
    """The constant-answer floor of a probe's train prompts (``task``: a task or its config): the most common
    gold answer among them, the share of prompts it is right on, and how many distinct answers there are.
    A policy that only learns to give that answer earns that reward, so a pass rate under the floor means
    the reward cannot tell skill from guessing (docs/benchmarks.md, "The constant-answer floor")."""
    from collections import Counter

    from pefthub.tasks import examples_by_id

    answers = [example.answer for example in examples_by_id(task, "train", ids).values()]
    counts = Counter(answers)
    answer, k = min(counts.items(), key=lambda item: (-item[1], item[0]))
    return {"answer": answer, "share": k / len(answers), "distinct": len(counts), "prompts": len(answers)}


def summarize(per_prompt: list[dict], generations: int) -> dict:
    """Pass rate (interval clustered by prompt), informative-group share (Wilson), cap and no-answer shares."""
    from scipy.stats import t

    n = len(per_prompt)
    rates = [p["correct"] / generations for p in per_prompt]
    mean = statistics.fmean(rates)
    half = t.ppf(0.975, n - 1) * statistics.stdev(rates) / math.sqrt(n) if n > 1 else math.nan
    informative = sum(0 < p["correct"] < generations for p in per_prompt)
    all_right = sum(p["correct"] == generations for p in per_prompt)
    samples = n * generations
    low, high = wilson_interval(informative, n)
    return {
        "prompts": n, "samples": samples,
        "pass_rate": mean, "pass_rate_ci": [max(0.0, mean - half), min(1.0, mean + half)],
        "informative_groups": informative, "informative_share": informative / n,
        "informative_share_ci": [low, high],
        "all_wrong_groups": n - informative - all_right, "all_right_groups": all_right,
        "capped_share": sum(p["capped"] for p in per_prompt) / samples,
        "no_answer_share": sum(p["no_answer"] for p in per_prompt) / samples,
        "mean_completion_tokens": statistics.fmean(p["tokens"] / generations for p in per_prompt),
    }


def probe(settings: ProbeSettings, progress: Callable[[int, int], None] | None = None) -> dict:
    """Sample ``generations`` completions for each of the first ``prompts`` train examples and score them."""
    from pefthub.models import check_loadable
    from pefthub.runner import make_task

    check_loadable(settings.model)
    task = make_task(settings.task)  # ConfigError here: nothing loaded yet
    import torch

    from pefthub.models import load_model
    from pefthub.results import environment, utc_now
    from pefthub.trainers import common
    from pefthub.generation.rollout import auto_backend, rollout_backend

    started_at, started, load_before = utc_now(), time.perf_counter(), os.getloadavg()[0]
    examples = task.examples("train", settings.prompts)
    if len(examples) < settings.prompts:
        raise ConfigError(f"prompts: the task's train split has only {len(examples)} examples")
    torch.manual_seed(settings.seed)
    lm = load_model(settings.model, seed=settings.seed)
    identity = _Untrained()
    engine = auto_backend(lm.model, identity) if settings.rollout_backend == "auto" else settings.rollout_backend
    backend = rollout_backend(engine)(lm.model, lm.tokenizer, identity)
    per_prompt: list[dict] = []
    generation_seconds = 0.0
    try:
        for first in range(0, len(examples), settings.chunk):
            batch = examples[first:first + settings.chunk]
            prompts = [common.encode(lm.tokenizer, common.render_prompt(lm.tokenizer, task.messages(ex)))
                       for ex in batch]
            tick = time.perf_counter()
            ro = backend.generate(prompts, generations=settings.generations, max_new_tokens=settings.max_new_tokens,
                                  temperature=settings.temperature, seed=common.step_seed(settings.seed, first + 1))
            generation_seconds += time.perf_counter() - tick
            lengths = ro.completion_mask.sum(1).tolist()
            for i, ex in enumerate(batch):
                rows = range(i * settings.generations, (i + 1) * settings.generations)
                texts = [ro.texts[r] for r in rows]
                per_prompt.append({
                    "id": ex.id,
                    "correct": int(sum(task.score(text, ex) > 0 for text in texts)),
                    "capped": int(sum(lengths[r] >= settings.max_new_tokens for r in rows)),
                    "no_answer": int(sum(task.extract(text) is None for text in texts)),
                    "tokens": int(sum(lengths[r] for r in rows)),
                })
            if progress is not None:
                progress(len(per_prompt), len(examples))
    finally:
        backend.close()
    return {
        "schema": PROBE_SCHEMA, "version": PROBE_VERSION,
        "settings": {**asdict(settings), "task": task.config()},
        "rollout_backend": engine, "started_at": started_at, "finished_at": utc_now(),
        "seconds": time.perf_counter() - started, "generation_seconds": generation_seconds,
        # 1-minute load averages around the probe: its seconds are comparable only when these are low.
        "load_average": [load_before, os.getloadavg()[0]], "threads": torch.get_num_threads(),
        "summary": summarize(per_prompt, settings.generations), "per_prompt": per_prompt,
        "environment": environment(),
    }


class _Untrained:
    """The method slot of a rollout backend for the untrained model: nothing to merge."""

    name = "base"
    mergeable = True

    def merged(self, model):
        import contextlib

        return contextlib.nullcontext(model)


__all__ = ["PROBE_SCHEMA", "PROBE_VERSION", "ProbeSettings", "probe", "summarize"]

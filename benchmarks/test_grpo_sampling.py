"""GRPO with and without dynamic sampling (DAPO) at equal wall time, on the default task (issue 17).

For each method (LoRA, TinyLoRA at 13 parameters) two GRPO runs start from the same model, seed and
budget shape (the cpu-paper-shape suite's: 8 prompts × 4 generations, 64 new tokens): plain GRPO,
then ``dynamic_sampling=true`` (``max_sampling_rounds`` 4) under pytest-benchmark. Each trains until
``WALL_SECONDS`` of training have passed (the step that crosses the line finishes; the early stop on
collapse stays on, as in a real run, and is reported), then the model is evaluated greedily on the
first ``EVAL_ITEMS`` test items. Reported in ``extra_info``: informative groups (groups with a
learning signal that went into the loss) per second of training, steps, prompts sampled and
trained, tokens generated, and test accuracy, for both runs, with the ratios dynamic / plain.
Nothing here asserts a speed.

Settings from the environment (defaults are the recorded run's): ``PEFTHUB_GRPO_BENCH_SECONDS``
(300), ``PEFTHUB_GRPO_BENCH_EVAL`` (400), ``PEFTHUB_GRPO_BENCH_BATCH`` (8). A quick check that it
works: ``PEFTHUB_GRPO_BENCH_SECONDS=20 PEFTHUB_GRPO_BENCH_EVAL=8 PEFTHUB_GRPO_BENCH_BATCH=2``.
"""

from __future__ import annotations

import os
import time

import pytest

WALL_SECONDS = float(os.environ.get("PEFTHUB_GRPO_BENCH_SECONDS", "300"))
EVAL_ITEMS = int(os.environ.get("PEFTHUB_GRPO_BENCH_EVAL", "400"))
BATCH = int(os.environ.get("PEFTHUB_GRPO_BENCH_BATCH", "8"))
MODEL = "smollm2-135m-instruct"
#: Method, its config and learning rate: the middle of each method's grid in the cpu-paper-shape suite.
METHODS = {"lora": ({"r": 8}, 5e-4), "tinylora": ({"u": 13}, 5e-3)}
SEED = 0


class WallClock(Exception):
    """Raised from the progress callback once the training time is spent."""


def run(method_name: str, dynamic: bool) -> dict:
    """Train one GRPO run until the wall budget is spent, evaluate it; return its figures."""
    from pefthub import plugins
    from pefthub.evaluation import evaluate
    from pefthub.models import load_model
    from pefthub.tasks import default_task
    from pefthub.trainers import Budget, Spent
    from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer

    config, lr = METHODS[method_name]
    lm = load_model(MODEL, seed=SEED)
    cls = plugins.methods().get(method_name)
    method = cls(cls.config_class(**config))
    model = method.apply(lm.model)
    task = default_task()
    options = {"dynamic_sampling": True} if dynamic else {}
    trainer = GRPOTrainer(GRPOOptions(**options))
    # Steps beyond what the wall budget allows: the clock ends the run, not the step count.
    budget = Budget(steps=10_000, batch_size=BATCH, generations=4, max_new_tokens=64, max_seq_len=320)
    spent, curves = Spent(), []
    started = time.perf_counter()

    def clock(event: dict) -> None:
        if time.perf_counter() - started >= WALL_SECONDS:
            raise WallClock

    stopped = None
    try:
        stopped = trainer.run_steps(model=model, tokenizer=lm.tokenizer, method=method, task=task, budget=budget,
                                    learning_rate=lr, seed=SEED, spent=spent, curves=curves, progress=clock)
    except WallClock:
        pass
    train_seconds = time.perf_counter() - started
    model.eval()
    with method.merged(model) as merged:
        result = evaluate(merged, lm.tokenizer, task, split="test", limit=EVAL_ITEMS, max_new_tokens=64,
                          batch_size=32, merged=True)
    informative = sum(c.get("prompts_trained", BATCH) - (0 if dynamic else c["zero_advantage_groups"])
                      for c in curves)
    return {"train_seconds": train_seconds, "steps": spent.optimizer_steps, "prompts": spent.prompts,
            "prompts_trained": spent.prompts_trained, "informative_groups": informative,
            "tokens_generated": spent.tokens_generated, "accuracy": result.summary["accuracy"],
            "correct": {r["id"]: bool(r["correct"]) for r in result.samples},
            "stopped_early": (stopped or {}).get("reason")}


@pytest.mark.parametrize("method_name", list(METHODS))
def test_dynamic_sampling_at_equal_wall_time(benchmark, method_name):
    benchmark.group = "grpo: dynamic sampling vs plain at equal wall time (default task)"
    plain = run(method_name, dynamic=False)
    dynamic = benchmark.pedantic(run, args=(method_name, True), rounds=1, iterations=1)
    rate = {name: r["informative_groups"] / r["train_seconds"] for name, r in (("plain", plain), ("dynamic", dynamic))}
    info = {"wall_budget_s": WALL_SECONDS, "eval_items": EVAL_ITEMS, "batch_size": BATCH}
    for name, r in (("plain", plain), ("dynamic", dynamic)):
        info.update({
            f"{name}_steps": r["steps"], f"{name}_prompts_sampled": r["prompts"],
            f"{name}_prompts_trained": r["prompts_trained"], f"{name}_informative_groups": r["informative_groups"],
            f"{name}_tokens_generated": r["tokens_generated"],
            f"{name}_informative_groups_per_s": round(rate[name], 4),
            f"{name}_accuracy": round(r["accuracy"], 4), f"{name}_stopped_early": r["stopped_early"] or "no",
        })
    info["informative_per_s_dynamic_over_plain"] = round(rate["dynamic"] / rate["plain"], 3) if rate["plain"] else None
    info["accuracy_dynamic_minus_plain"] = round(dynamic["accuracy"] - plain["accuracy"], 4)
    # Paired on the same test items: McNemar's exact p and the interval that agrees with it (pefthub.report.stats).
    from pefthub.report import stats

    items = sorted(plain["correct"])
    d_only = sum(dynamic["correct"][i] and not plain["correct"][i] for i in items)
    p_only = sum(plain["correct"][i] and not dynamic["correct"][i] for i in items)
    low, high = stats.exact_paired_interval(d_only, p_only, len(items))
    info.update({"accuracy_delta_ci_low": round(low, 4), "accuracy_delta_ci_high": round(high, 4),
                 "accuracy_delta_mcnemar_p": round(stats.mcnemar_p(d_only, p_only), 4)})
    info["note"] = (f"{method_name} {METHODS[method_name][0]} lr {METHODS[method_name][1]:g}, seed {SEED}, "
                    f"{BATCH} prompts x 4 generations, 64 new tokens, dynamic: max_sampling_rounds 4; greedy eval")
    benchmark.extra_info.update(info)

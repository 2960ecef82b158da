"""Time optimizer steps of one trainer engine in a process of its own (run by test_train_speed.py).

    python benchmarks/trainer_step.py {pefthub,pefthub-hf,pefthub-whole-rows,trl,trl-like-pefthub} {grpo,sft} --steps 3

Each engine runs in a fresh process so that its peak RSS (``VmHWM``) is its own. Both engines
get the same model (the embedded SmolLM2-135M-Instruct, fp32), the same method built by pefthub's
registry (so the same trainable parameters), the same examples, batch shape and optimizer settings.
The last stdout line is a JSON object: per-step seconds (the first step is warm-up), tokens
generated or trained on, and peak RSS in bytes.

Settings that make the two engines do the same work:

* GRPO runs on ``gsm_symbolic`` prompts, whose answers do not fit in 48 tokens, so nearly every
  completion of both engines is exactly ``max_new_tokens`` long (the tokens are counted and
  reported); pefthub's shortcut of leaving zero-advantage rows out of the backward pass is turned
  off, because TRL has no such shortcut and the rewards here are mostly zero.
* SFT runs on the default task's worked solutions (``chain_sum``; prompt + solution are 78–93
  tokens, so nothing is cut at ``max_seq_len`` = 96); completion-only loss, no packing, padding to
  the longest row of the batch in both engines.
* TRL runs through pefthub's ``trl-grpo`` / ``trl-sft`` engine (pefthub/trainers/trl_engine.py),
  which gives it the examples in the order pefthub's seeded ``BatchStream`` draws them with TRL's
  sampler sequential, so both engines see the same batches (``trl-sft`` and ``sft`` compute the same
  losses and parameters: tests/trainers/test_trl_engine.py).
* Engines (the first argument): ``trl`` is TRL with its defaults, as in the issue's reference
  figures: a step's rows in one per-device batch, gradient checkpointing on. ``trl-like-pefthub``
  is TRL set as pefthub runs: micro-batches of 8 (gradient accumulation over the step) and no
  checkpointing, so the remaining difference is the engines'. ``pefthub`` uses its defaults
  (micro-batches of 8, no checkpointing, the ``fused`` rollout engine); ``pefthub-hf`` is the same
  with rollouts on HF ``generate`` (GRPO only), so the rollout engine's share of the gain shows;
  ``pefthub-whole-rows`` forwards every row whole in the training pass (no shared prompt or
  opening), so the sharing's share shows.
  SFT differs in one more way on purpose: pefthub projects only target positions through the LM
  head (``logits_to_keep``), TRL all positions.
* ``step_tokens`` lists each step's tokens (GRPO: completion tokens generated; SFT: target tokens
  trained), so step times can be normalised per token.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

GRPO = {"method": "tinylora", "params": 13, "batch_size": 8, "generations": 4, "max_new_tokens": 48,
        "learning_rate": 5e-3, "temperature": 1.0}
SFT = {"method": "lora", "config": {"r": 8}, "batch_size": 8, "max_seq_len": 96, "learning_rate": 1e-4}
GRPO_TASK = {"name": "gsm_symbolic"}


def task_for(trainer_name: str):
    from pefthub.tasks import default_task, task_from_config

    return task_from_config(GRPO_TASK) if trainer_name == "grpo" else default_task()


def build(method_name: str, params: int | None = None, config: dict | None = None):
    from pefthub import plugins
    from pefthub.models import load_model

    lm = load_model("smollm2-135m-instruct")
    cls = plugins.methods().get(method_name)
    if params is not None:
        method_config = cls.config_for_params(lm.model, params)
    else:
        method_config = cls.config_class(**(config or {}))
    method = cls(method_config)
    return lm, method, method.apply(lm.model)


def run(engine: str, trainer_name: str, steps: int) -> dict:
    """``steps`` optimizer steps of ``trainer_name`` (sft, grpo) on ``engine``: pefthub's own loop,
    or TRL's trainer through pefthub's ``trl-*`` engine (which only feeds TRL the same model,
    examples and budget, and reads its clock and counts)."""
    from pefthub import plugins
    from pefthub.trainers.budget import Budget

    spec = GRPO if trainer_name == "grpo" else SFT
    lm, method, model = build(spec["method"], spec.get("params"), spec.get("config"))
    task = task_for(trainer_name)
    ours = engine.startswith("pefthub")
    trainer_cls = plugins.trainers().get(trainer_name if ours else f"trl-{trainer_name}")
    # TRL defaults: the whole step in one per-device batch, checkpointing on (the issue's reference
    # figures); TRL like pefthub: micro-batches of 8, no checkpointing; pefthub: its defaults.
    options = {"trl": {"micro_batch_size": 0},
               "trl-like-pefthub": {"micro_batch_size": 8, "gradient_checkpointing": False},
               "pefthub": {}, "pefthub-hf": {"rollout_backend": "hf"}, "pefthub-whole-rows": {}}[engine]
    if engine == "pefthub-whole-rows":
        trainer_cls.share_prompt_forward = trainer_cls.share_prefix_forward = False
    if engine == "pefthub-hf" and trainer_name != "grpo":
        raise SystemExit("pefthub-hf changes the rollout engine: GRPO only")
    if trainer_name == "grpo":
        if ours:
            trainer_cls.skip_zero_advantage_rows = False  # same work as TRL (see the module docstring)
        trainer = trainer_cls(trainer_cls.options_class(temperature=spec["temperature"], **options))
        budget = Budget(steps=steps, batch_size=spec["batch_size"], generations=spec["generations"],
                        max_new_tokens=spec["max_new_tokens"], max_seq_len=512)
    else:
        trainer = trainer_cls(trainer_cls.options_class(**options))
        budget = Budget(steps=steps, batch_size=spec["batch_size"], max_seq_len=spec["max_seq_len"])
    outcome = trainer.train(model=model, tokenizer=lm.tokenizer, method=method, task=task, budget=budget,
                            learning_rate=spec["learning_rate"], seed=0)
    if outcome.status != "success":
        raise SystemExit(f"{trainer_cls.name} failed: {outcome.error}")
    spent = outcome.spent
    tokens = spent.tokens_generated if trainer_name == "grpo" else spent.tokens_trained
    rows = budget.batch_size * budget.generations
    if trainer_name == "grpo" and all(p.get("completion_length") is not None for p in outcome.curves):
        step_tokens = [round(p["completion_length"] * rows) for p in outcome.curves]  # completion tokens per step
    else:  # SFT (the same batches every run) or no per-step length logged: spread the total evenly
        step_tokens = [tokens / len(outcome.curves)] * len(outcome.curves)
    return {"step_seconds": [p["seconds"] for p in outcome.curves], "tokens": tokens, "step_tokens": step_tokens,
            "trainable": method.trainable_parameters(model),
            "rollout_backend": outcome.curves[0].get("rollout_backend")}


def peak_rss_bytes() -> int:
    """This process's own peak RSS: ``VmHWM`` of its address space. Not ``ru_maxrss``, which Linux
    carries over from the parent across the ``exec`` of a vfork-ed child (posix_spawn, as Python's
    subprocess uses), so a child of a large parent would report the parent's peak."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no procfs: an upper bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=["pefthub", "pefthub-hf", "pefthub-whole-rows", "trl", "trl-like-pefthub"])
    parser.add_argument("trainer", choices=["grpo", "sft"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    report = run(args.engine, args.trainer, args.steps)
    report.update(engine=args.engine, trainer=args.trainer, threads=args.threads,
                  wall_seconds=time.perf_counter() - started,
                  peak_rss_bytes=peak_rss_bytes())
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()

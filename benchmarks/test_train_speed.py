"""Optimizer-step time and peak memory of pefthub's trainers against TRL's, side by side (issue 4).

* ``test_step_against_trl[grpo]``: pefthub GRPO against TRL 1.16 ``GRPOTrainer`` with TinyLoRA at
  13 parameters, 8 prompts × 4 generations, 48 new tokens (targets: step time ≤ 0.67×, peak RSS
  ≤ 0.5× TRL's).
* ``test_step_against_trl[sft]``: pefthub SFT against TRL ``SFTTrainer`` with LoRA r8, batch 8,
  rows of at most 96 tokens (target: step time ≤ 0.85× TRL's).

Each engine runs in its own process (``benchmarks/trainer_step.py``, whose docstring says how the
settings are matched), TRL first, then pefthub under pytest-benchmark; the figures are the
median step time over the steps after the first (warm-up) and each process's own peak RSS. The
ratios are reported in ``extra_info`` (docs/performance.md); nothing here asserts a speed.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

STEPS = {"grpo": 4, "sft": 6}
TARGETS = {"grpo": {"step": 0.67, "rss": 0.5}, "sft": {"step": 0.85, "rss": None}}
SCRIPT = Path(__file__).with_name("trainer_step.py")


def run_engine(engine: str, trainer: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), engine, trainer, "--steps", str(STEPS[trainer]),
                           "--threads", str(torch.get_num_threads())], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"{engine} {trainer} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def step_seconds(report: dict) -> float:
    return statistics.median(report["step_seconds"][1:])  # the first step is warm-up


@pytest.mark.parametrize("trainer", ["grpo", "sft"])
def test_step_against_trl(benchmark, trainer):
    trl = run_engine("trl", trainer)
    ours = benchmark.pedantic(run_engine, args=("pefthub", trainer), rounds=1, iterations=1)
    assert ours["trainable"] == trl["trainable"]  # the same method on both sides
    step_ratio = step_seconds(ours) / step_seconds(trl)
    rss_ratio = ours["peak_rss_bytes"] / trl["peak_rss_bytes"]
    info = {
        "trainable_params": ours["trainable"],
        "steps_timed": len(ours["step_seconds"]) - 1,
        "pefthub_step_s": round(step_seconds(ours), 2),
        "trl_step_s": round(step_seconds(trl), 2),
        "step_ratio": round(step_ratio, 3),
        "step_target": TARGETS[trainer]["step"],
        "step_met": step_ratio <= TARGETS[trainer]["step"],
        "pefthub_peak_rss_gb": round(ours["peak_rss_bytes"] / 1e9, 2),
        "trl_peak_rss_gb": round(trl["peak_rss_bytes"] / 1e9, 2),
        "rss_ratio": round(rss_ratio, 3),
    }
    if TARGETS[trainer]["rss"] is not None:
        info["rss_target"] = TARGETS[trainer]["rss"]
        info["rss_met"] = rss_ratio <= TARGETS[trainer]["rss"]
    if trainer == "grpo":
        info["pefthub_rollout_backend"] = ours["rollout_backend"]
        info["pefthub_tokens_generated"] = ours["tokens"]
        info["trl_tokens_generated"] = trl["tokens"]
        info["note"] = ("TinyLoRA 13 params, 8 prompts x 4 generations, 48 new tokens, gsm_symbolic prompts, "
                        "fp32, pefthub's zero-advantage skip off; tokens generated are over all steps")
    else:
        info["note"] = "LoRA r8, batch 8, rows of 78-93 tokens (default task), same batches on both sides, completion-only loss, fp32"
    benchmark.extra_info.update(info)

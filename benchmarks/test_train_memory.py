"""Where a GRPO step's peak memory goes (issue 17: "find where pefthub's 4.7 GB goes for a 0.5 GB
model"), part by part, each variant in a fresh process (``benchmarks/memory_parts.py``, whose
docstring says what each part is). Reported in ``extra_info`` in GB: the libraries, the model with
its adapter, the merged copies and the fused decoder a rollout samples from, the rollout's own
rise, one training micro-batch's rise forwarded whole and with its prompts shared, and the step's
peak either way. Nothing here asserts a size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("memory_parts.py")


def measure(training: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), training, "--threads", str(torch.get_num_threads())],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"memory_parts.py {training} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_grpo_step_memory_parts(benchmark):
    benchmark.group = "grpo: where a step's peak memory goes (TinyLoRA 13, 8 prompts x 4, 180 + 48 tokens)"
    whole = measure("whole")
    shared = benchmark.pedantic(measure, args=("shared",), rounds=1, iterations=1)
    assert shared["training_positions"] < whole["training_positions"]

    def gb(value: int) -> float:
        return round(value / 1e9, 3)

    info = {f"{k}_gb": gb(shared[k]) for k in ("libraries", "model_and_adapter", "merged_copies", "decoder",
                                              "rollout_peak_over_decoder")}
    for name, parts in (("whole_rows", whole), ("shared_prompts", shared)):
        info[f"training_{name}_rise_gb"] = gb(parts["training_peak_over_steady"])
        info[f"training_{name}_positions"] = parts["training_positions"]
        info[f"step_peak_{name}_gb"] = gb(parts["step_peak"])
    info["step_peak_shared_over_whole"] = round(shared["step_peak"] / whole["step_peak"], 3)
    info["note"] = ("one micro-batch of 8 completions of 2 random 180-token prompts after one rollout of 8 x 4; "
                    "the step's peak is the larger of the rollout's and the training pass's; one process per variant")
    benchmark.extra_info.update(info)

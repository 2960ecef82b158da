"""Evaluation speed on the embedded SmolLM2-135M-Instruct, fp32, two threads (issue 17, part A).

* ``test_eval_speed[base|lora|prompt_tuning]``: items/s of ``pefthub.evaluation.evaluate`` on the
  first ``EVAL_ITEMS`` test problems of the default task (64 new tokens at most, batch 32, as the
  ``cpu-paper-shape`` suite evaluates), backend ``fused`` (lm-eval's ``pefthub`` model on the fused
  decoder) against ``hf`` (lm-eval's HF model, transformers ``generate``), both through lm-eval
  end to end. ``lora`` is evaluated merged, as the runner does (``method.merged`` inside the timed
  call; its B is drawn with a small spread so the merge changes the weights); ``prompt_tuning``
  runs its virtual tokens (peft's default text init) on each engine. HF runs in each round's setup,
  ``fused`` is timed by pytest-benchmark, so a busy machine slows both alike. The two accuracies are
  asserted equal for the base model and the merged adapter; for prompt tuning they are recorded
  with the number of differing answers (peft under HF ``generate`` counts a row's left padding into
  its positions, see pefthub/evaluation/fused_backend.py).
* ``test_eval_speed_degenerate``: a model that never ends its answers (the end-of-turn token's
  output row of an untied LM head set to the smallest logit), so every completion runs to the
  token cap, against the healthy base model, on the fused backend (HF's figure beside it): what a
  collapsed run's evaluation costs relative to a healthy one.

``PEFTHUB_BENCH_EVAL_ITEMS`` (default 400) sets the number of items, e.g. 32 for a quick check.
Figures land in ``extra_info`` (docs/performance.md shows them); nothing here asserts a speed.
"""

from __future__ import annotations

import os
import statistics
import time

import pytest
import torch

from pefthub import plugins
from pefthub.evaluation import evaluate
from pefthub.models import EMBEDDED_MODEL, load_model
from pefthub.tasks import default_task

EVAL_ITEMS = int(os.environ.get("PEFTHUB_BENCH_EVAL_ITEMS", "400"))
MAX_NEW_TOKENS = 64  # the cpu-paper-shape suite's evaluation cap
BATCH_SIZE = 32  # pefthub.runner.EVAL_BATCH_SIZE
ROUNDS = int(os.environ.get("PEFTHUB_BENCH_EVAL_ROUNDS", "1"))
TARGET_SPEEDUP = 3.0  # issue 17: >= 3x the HF backend's items/s
CASES = ("base", "lora", "prompt_tuning")


class Timed:
    """Run ``evaluate`` for one backend; keep each round's seconds and the last result."""

    def __init__(self, run):
        self.run, self.seconds, self.result = run, [], None

    def __call__(self):
        start = time.perf_counter()
        self.result = self.run()
        self.seconds.append(time.perf_counter() - start)

    def median(self) -> float:
        return statistics.median(self.seconds)


def evaluator(model, tokenizer, method, backend: str):
    """A call that evaluates ``model`` as the runner does (mergeable methods merged for the call)."""
    import contextlib

    task = default_task()

    def run():
        merged = method.merged(model) if method is not None and method.mergeable else contextlib.nullcontext(model)
        with merged as m:
            return evaluate(m, tokenizer, task, limit=EVAL_ITEMS, max_new_tokens=MAX_NEW_TOKENS,
                            batch_size=BATCH_SIZE, backend=backend)

    return run


def adapted(case: str):
    """(model, tokenizer, method) for a case: the base model, a merged LoRA, or prompt tuning."""
    lm = load_model(EMBEDDED_MODEL)
    if case == "base":
        return lm.model, lm.tokenizer, None
    cls = plugins.methods().get(case)
    method = cls(cls.config_class())
    model = method.apply(lm.model)
    if case == "lora":
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=generator) * 1e-3)
    model.eval()
    return model, lm.tokenizer, method


def paired(benchmark, model, tokenizer, method):
    fused, hf = (Timed(evaluator(model, tokenizer, method, b)) for b in ("fused", "hf"))
    benchmark.pedantic(fused, setup=hf, rounds=ROUNDS, warmup_rounds=0)
    return fused, hf


@pytest.mark.parametrize("case", CASES)
def test_eval_speed(benchmark, case):
    model, tokenizer, method = adapted(case)
    benchmark.group = f"evaluation: fused backend against lm-eval's HF model ({EVAL_ITEMS} test items, default task)"
    fused, hf = paired(benchmark, model, tokenizer, method)
    f, h = fused.result, hf.result
    assert f.summary["protocol"]["backend"] == "fused" and h.summary["protocol"]["backend"] == "hf"
    differing = sum(a["extracted"] != b["extracted"] for a, b in zip(f.samples, h.samples))
    if case != "prompt_tuning":
        assert f.summary["correct"] == h.summary["correct"], (f.summary["correct"], h.summary["correct"])
    fused_rate, hf_rate = EVAL_ITEMS / fused.median(), EVAL_ITEMS / hf.median()
    benchmark.extra_info.update({
        "case": case, "items": EVAL_ITEMS, "max_new_tokens": MAX_NEW_TOKENS, "batch_size": BATCH_SIZE,
        "threads": torch.get_num_threads(), "fused_items_s": fused_rate, "hf_items_s": hf_rate,
        "fused_over_hf": fused_rate / hf_rate, "meets_3x_target": fused_rate / hf_rate >= TARGET_SPEEDUP,
        "fused_accuracy": f.summary["accuracy"], "hf_accuracy": h.summary["accuracy"],
        "answers_differing": differing,
        "note": ("pytest-benchmark's time is the fused backend's evaluate() (lm-eval end to end, merge and "
                 "decoder build included); HF runs in each round's setup"),
    })
    print(f"\n{case}: fused {fused_rate:.2f} items/s, hf {hf_rate:.2f} items/s ({fused_rate / hf_rate:.2f}x); "
          f"accuracy {f.summary['accuracy']:.3f} vs {h.summary['accuracy']:.3f}, {differing} answers differ")


def never_ending(model):
    """``model`` with its LM head untied and the end-of-turn token's row zeroed, so it is not chosen."""
    from pefthub.models import base_model

    base = base_model(model)
    head = base.lm_head
    weight = head.weight.detach().clone()
    eos = base.generation_config.eos_token_id
    weight[eos if isinstance(eos, list) else [eos]] = 0.0  # logit 0: below the top logit (the test checks)
    head.weight = torch.nn.Parameter(weight, requires_grad=False)
    base.config.tie_word_embeddings = False
    return model


def test_eval_speed_degenerate(benchmark):
    lm = load_model(EMBEDDED_MODEL)
    healthy = Timed(evaluator(lm.model, lm.tokenizer, None, "fused"))
    healthy()
    degenerate_lm = load_model(EMBEDDED_MODEL)
    model = never_ending(degenerate_lm.model)
    fused, hf = (Timed(evaluator(model, degenerate_lm.tokenizer, None, b)) for b in ("fused", "hf"))
    benchmark.group = f"evaluation: a model that never ends its answers ({EVAL_ITEMS} test items, default task)"
    benchmark.pedantic(fused, setup=hf, rounds=ROUNDS, warmup_rounds=0)
    tok = degenerate_lm.tokenizer
    lengths = [len(tok.encode(s["completion"], add_special_tokens=False)) for s in fused.result.samples]
    healthy_lengths = [len(tok.encode(s["completion"], add_special_tokens=False)) for s in healthy.result.samples]
    assert fused.result.summary["correct"] == hf.result.summary["correct"]
    assert statistics.median(lengths) >= MAX_NEW_TOKENS - 2  # it really runs to the cap
    benchmark.extra_info.update({
        "items": EVAL_ITEMS, "max_new_tokens": MAX_NEW_TOKENS, "threads": torch.get_num_threads(),
        "healthy_fused_s": healthy.median(), "degenerate_fused_s": fused.median(), "degenerate_hf_s": hf.median(),
        "degenerate_over_healthy": fused.median() / healthy.median(),
        "degenerate_hf_over_fused": hf.median() / fused.median(),
        "healthy_mean_tokens": statistics.mean(healthy_lengths), "degenerate_mean_tokens": statistics.mean(lengths),
        "note": "fused backend timed; the healthy model's fused run once before, HF's degenerate run in the setup",
    })
    print(f"\ndegenerate: fused {fused.median():.1f} s (healthy {healthy.median():.1f} s), hf {hf.median():.1f} s; "
          f"mean tokens {statistics.mean(lengths):.1f} vs {statistics.mean(healthy_lengths):.1f}")

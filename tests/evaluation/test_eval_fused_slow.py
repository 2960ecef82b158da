"""The fused evaluation backend against lm-eval's HF model on the embedded model: the default task's
first 64 test problems, compared item by item (real weights; slow)."""

from __future__ import annotations

import pytest
import torch

from pefthub.evaluation import evaluate
from pefthub.tasks import default_task

ITEMS = 64
#: A greedy choice may flip only where HF's two candidates are this close (logits differ by float
#: rounding between the fused kernels and HF's, ~1e-5 relative on logits of magnitude ~20).
NEAR_TIE = 1e-2


def divergence_margin(lm, prompt: str, hf_text: str, fused_text: str) -> float:
    """|logit(HF's token) - logit(fused token)| under transformers' forward at the first token where
    the two completions part."""
    tok = lm.tokenizer
    a, b = tok.encode(hf_text, add_special_tokens=False), tok.encode(fused_text, add_special_tokens=False)
    common = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    eos = tok.eos_token_id
    next_a, next_b = (a + [eos])[common], (b + [eos])[common]
    ids = torch.tensor([tok.encode(prompt, add_special_tokens=False) + a[:common]])
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0, -1]
    return abs(float(logits[next_a] - logits[next_b]))


@pytest.mark.slow
def test_fused_backend_gives_the_hf_backends_answers_item_by_item():
    from pefthub.models import load_model

    lm = load_model("smollm2-135m-instruct")
    task = default_task()
    fused = evaluate(lm.model, lm.tokenizer, task, limit=ITEMS, max_new_tokens=64, batch_size=32, backend="fused")
    hf = evaluate(lm.model, lm.tokenizer, task, limit=ITEMS, max_new_tokens=64, batch_size=32, backend="hf")
    assert fused.summary["protocol"]["backend"] == "fused" and hf.summary["protocol"]["backend"] == "hf"
    assert fused.summary["n"] == hf.summary["n"] == ITEMS
    differing = []
    for f, h in zip(fused.samples, hf.samples):
        assert f["id"] == h["id"] and f["prompt"] == h["prompt"]
        if f["completion"] != h["completion"]:
            differing.append((f, h))
    # Every difference is a greedy near-tie (float rounding), never a different computation ...
    for f, h in differing:
        margin = divergence_margin(lm, h["prompt"], h["completion"], f["completion"])
        assert margin < NEAR_TIE, (h["id"], h["completion"], f["completion"], margin)
    # ... and the same extracted answer and verdict, item by item.
    assert [(f["extracted"], f["correct"]) for f in fused.samples] == [(h["extracted"], h["correct"])
                                                                       for h in hf.samples]
    assert fused.summary["correct"] == hf.summary["correct"] > 0

"""The embedded model on the default task, through lm-eval (real weights; short)."""

from __future__ import annotations

import pytest

from pefthub.evaluation import evaluate
from pefthub.tasks import default_task


@pytest.mark.slow
def test_embedded_model_follows_the_answer_format_on_the_default_task():
    from pefthub.models import load_model

    lm = load_model("smollm2-135m-instruct")
    task = default_task()
    result = evaluate(lm.model, lm.tokenizer, task, limit=8, max_new_tokens=32, batch_size=8)
    s = result.summary
    assert s["n"] == 8 and s["protocol"]["merged"] is True
    # SmolLM2-Instruct answers these in the requested "The answer is N." form most of the time
    assert s["metrics"]["exact_match,strict-match"] <= s["metrics"]["exact_match,flexible-extract"]
    stated = sum(task.extract_strict(x["completion"]) is not None for x in result.samples)
    assert stated >= 4, [x["completion"] for x in result.samples]
    # and the scores are what the task's own scorer says about those completions
    for sample, ex in zip(result.samples, task.examples("test", 8)):
        assert sample["correct"] == (task.score(sample["completion"], ex) == 1.0)

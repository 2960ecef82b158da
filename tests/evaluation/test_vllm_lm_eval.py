"""lm-eval's ``vllm`` model on a saved merged checkpoint (issue 3's vLLM evaluation backend), on the
real SmolLM2-135M-Instruct with a non-zero LoRA adapter, against lm-eval's HF model on the same
merged weights. One engine for the module.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from pefthub import plugins
from pefthub.evaluation import vllm_backend  # noqa: E402
from pefthub.generation import vllm_engine  # noqa: E402
from pefthub.evaluation import evaluate  # noqa: E402
from pefthub.evaluation.render import render  # noqa: E402
from pefthub.models import load_model  # noqa: E402
from pefthub.tasks import get_task  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TASK = {"test_size": 6, "validation_size": 2, "train_size": 4, "min_terms": 2, "max_terms": 3, "max_digits": 2}
LIMIT, NEW_TOKENS = 6, 48


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def adapted():
    lm = load_model("smollm2-135m-instruct")
    cls = plugins.methods().get("lora")
    method = cls(cls.config_class(r=4))
    model = method.apply(lm.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    return model, method, lm.tokenizer


def test_saved_merged_checkpoint_reloads_as_the_merged_model(adapted, tmp_path):
    from transformers import AutoModelForCausalLM

    model, method, tok = adapted
    vllm_engine.save_merged_checkpoint(model, tok, tmp_path / "ckpt", method=method)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32)
    ids = torch.tensor([tok("The adapter is folded in.")["input_ids"]])
    with torch.inference_mode():
        with method.merged(model) as merged:
            expected = merged(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
        got = reloaded(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert (got - base).abs().max() > 1e-2  # the adapter is in the saved weights


def test_lm_eval_vllm_model_scores_a_rendered_task_like_the_hf_model(adapted, tmp_path):
    model, method, tok = adapted
    task = get_task("chain_sum", **TASK)
    rendered = render(task, "test", LIMIT, NEW_TOKENS, root=tmp_path / "tasks")
    checkpoint = vllm_engine.save_merged_checkpoint(model, tok, tmp_path / "ckpt", method=method)
    out = vllm_backend.evaluate_checkpoint(checkpoint, rendered.directory, [rendered.name], max_new_tokens=NEW_TOKENS)
    assert out["config"]["model"] == "VLLM"  # lm-eval's vLLM model class ran it
    samples = {}
    for record in out["samples"][rendered.name]:
        samples[record["doc"]["id"]] = record["resps"][0][0]
    assert len(samples) == LIMIT
    with method.merged(model) as merged:
        reference = evaluate(merged, tok, task, limit=LIMIT, max_new_tokens=NEW_TOKENS, batch_size=LIMIT, merged=True)
    hf = {s["id"]: s["completion"] for s in reference.samples}
    same = sum(samples[i] == hf[i] for i in hf)
    print(f"vLLM and HF lm-eval completions identical for {same}/{LIMIT} problems")
    assert same >= LIMIT - 1  # greedy on the same fp32 weights: at most a rounding-decided tie
    scores = out["results"][rendered.name]
    assert abs(scores["exact_match,flexible-extract"] - reference.summary["metrics"]["exact_match,flexible-extract"]) \
        <= 1 / LIMIT + 1e-9

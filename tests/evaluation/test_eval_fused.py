"""lm-eval's ``pefthub`` model (pefthub/evaluation/fused_backend.py) against lm-eval's HF model on the
tiny random models: the same greedy completions in batches of mixed prompt widths, ``until`` strings
and per-row end tokens honoured, ended rows dropped, prompt tuning's virtual tokens, merged
adapters, the fallback to ``hf``, and one-line refusals."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance

from pefthub import plugins
from pefthub.errors import UnsupportedError
from pefthub.evaluation import evaluate
from pefthub.evaluation.fused_backend import FusedLM, make_fused_lm, unsupported_reason
from pefthub.evaluation.hf_backend import make_hflm
from pefthub.models import load_model
from pefthub.tasks import get_task
from pefthub.generation import decoder


SMALL = {"test_size": 12, "validation_size": 4, "train_size": 8, "min_terms": 2, "max_terms": 3, "max_digits": 2}
TINY = ("tiny-random", "tiny-random-qwen2")
CONTEXTS = ["<|im_start|>user\nwhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n", "hello there, general",
            "x", "a much longer prompt than the others, so the batch is padded on the left", "12 + 7 ="]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))


def requests(contexts, **gen_kwargs):
    kwargs = {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": 12, **gen_kwargs}
    return [Instance(request_type="generate_until", doc={}, arguments=(c, dict(kwargs)), idx=0) for c in contexts]


def hf_and_fused(lm, reqs, batch_size=2, max_gen_toks=12):
    hf = make_hflm(lm.model, lm.tokenizer, batch_size, max_gen_toks).generate_until(reqs)
    fused = make_fused_lm(lm.model, lm.tokenizer, batch_size, max_gen_toks)
    return hf, fused.generate_until(reqs), fused


def free_tokens(lm, context, n):
    ids = lm.tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = lm.model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id,
                                eos_token_id=None)
    return out[0, ids.shape[1]:].tolist()


def test_registered_in_lm_evals_registry():
    from lm_eval.api.registry import get_model

    assert get_model("pefthub") is FusedLM
    lm = get_model("pefthub").create_from_arg_string("pretrained=tiny-random,max_gen_toks=5", {"batch_size": 4})
    assert lm.batch_size == 4 and lm.max_gen_toks == 5
    assert len(lm.generate_until(requests(CONTEXTS[:2], max_gen_toks=5))) == 2


@pytest.mark.parametrize("name", TINY)
def test_batched_completions_equal_lm_evals_hf_model(name, lively):
    """Mixed prompt widths, batches of 2 sorted by length (so padding and bucketing both run), and
    results back in request order."""
    lm = lively(name)
    hf, fused, _ = hf_and_fused(lm, requests(CONTEXTS))
    assert len({len(s) for s in hf}) > 1 or len(set(hf)) > 1  # varied completions: a real comparison
    assert fused == hf


def test_until_strings_end_a_row_and_are_cut(monkeypatch, lively):
    lm = lively("tiny-random")
    context = CONTEXTS[1]
    text = lm.tokenizer.decode(free_tokens(lm, context, 16), skip_special_tokens=True)
    stop = text[5:7]  # a string the greedy completion reaches at its 6th character
    assert stop and text.find(stop) >= 1
    reqs = requests([context], until=[stop], max_gen_toks=16)
    hf, fused, lm_fused = hf_and_fused(lm, reqs, max_gen_toks=16)
    assert fused == hf == [text[: text.find(stop)]]
    # the row ended at the stop string rather than running on to max_gen_toks
    free = make_fused_lm(lm.model, lm.tokenizer, 2, 16)
    free.generate_until(requests([context], max_gen_toks=16))
    assert lm_fused.positions_computed < free.positions_computed


def test_end_tokens_per_row_and_ended_rows_are_dropped(monkeypatch, lively):
    """Rows end on their own end tokens at different steps; the batch shrinks as they do (fewer
    positions computed than a full batch to the token cap) and the completions equal HF's."""
    lm = lively("tiny-random")
    contexts = CONTEXTS[:4]
    ends = {int(free_tokens(lm, contexts[0], 16)[2]), int(free_tokens(lm, contexts[2], 16)[5])}
    lm.model.generation_config.eos_token_id = sorted(ends | {lm.tokenizer.eos_token_id})
    reqs = requests(contexts, max_gen_toks=16)
    hf, fused, engine = hf_and_fused(lm, reqs, batch_size=4, max_gen_toks=16)
    assert fused == hf
    assert len({len(s) for s in fused}) > 1, "rows should end at different steps"
    prompt_width = max(len(lm.tokenizer.encode(c, add_special_tokens=False)) for c in contexts)
    assert engine.positions_computed < len(contexts) * (prompt_width + 15)
    # never dropping rows computes more and says the same
    monkeypatch.setattr(decoder, "COMPACT_SHARE", 2.0)
    whole = make_fused_lm(lm.model, lm.tokenizer, 4, 16)
    assert whole.generate_until(reqs) == fused and whole.positions_computed > engine.positions_computed


def test_prompt_tuning_runs_its_virtual_tokens_through_the_engine(lively):
    """The fused engine equals peft + HF generate on each prompt alone (no padding), batched or not;
    HF batched counts the left padding into positions (peft drops position ids), see the module."""
    from peft import PromptTuningConfig, get_peft_model

    lm = lively("tiny-random")
    model = get_peft_model(lm.model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(0, 5.0)  # make the prompt matter
    model.eval()
    assert unsupported_reason(model) is None
    expected = []
    for context in CONTEXTS:
        ids = lm.tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                 do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        expected.append(lm.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    base = make_fused_lm(model.get_base_model(), lm.tokenizer, 8, 10).generate_until(requests(CONTEXTS,
                                                                                                 max_gen_toks=10))
    assert base != expected  # the virtual tokens change the completions
    for batch_size in (1, 3):
        got = make_fused_lm(model, lm.tokenizer, batch_size, 10).generate_until(requests(CONTEXTS, max_gen_toks=10))
        assert got == expected


def test_merged_adapter_equals_hf_and_unmerged_falls_back_to_hf(lively):
    """A LoRA with non-zero B inside ``method.merged`` (as the runner evaluates): fused and HF agree;
    the same adapter unmerged is served by HF under ``auto`` with a note, refused under ``fused``."""
    lm = lively("tiny-random")
    task = get_task("chain_sum", **SMALL)
    base = evaluate(lm.model, lm.tokenizer, task, limit=6, max_new_tokens=8, batch_size=4, backend="fused")
    cls = plugins.methods().get("lora")
    method = cls(cls.config_class(r=4))
    model = method.apply(lm.model)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_B" in key:
                p.normal_(0, 0.5)
    with method.merged(model) as merged:
        fused = evaluate(merged, lm.tokenizer, task, limit=6, max_new_tokens=8, batch_size=4)
        hf = evaluate(merged, lm.tokenizer, task, limit=6, max_new_tokens=8, batch_size=4, backend="hf")
    assert fused.summary["protocol"]["backend"] == "fused" and "backend_note" not in fused.summary["protocol"]
    assert [s["completion"] for s in fused.samples] == [s["completion"] for s in hf.samples]
    assert [s["completion"] for s in fused.samples] != [s["completion"] for s in base.samples]
    fallback = evaluate(model, lm.tokenizer, task, limit=6, max_new_tokens=8, batch_size=4)
    assert fallback.summary["protocol"]["backend"] == "hf"
    assert "unmerged adapter" in fallback.summary["protocol"]["backend_note"]
    assert [s["completion"] for s in fallback.samples] == [s["completion"] for s in hf.samples]
    with pytest.raises(UnsupportedError, match="evaluation backend 'fused': the model has an unmerged adapter"):
        evaluate(model, lm.tokenizer, task, limit=2, backend="fused")


def test_unsupported_architecture_falls_back_to_hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=300))
    assert "GPT2LMHeadModel" in unsupported_reason(gpt2)


def test_loglikelihood_and_sampling_are_refused_in_one_line():
    lm = make_fused_lm(load_model("tiny-random").model, load_model("tiny-random").tokenizer, 2, 4)
    with pytest.raises(UnsupportedError, match="loglikelihood is not supported by the pefthub .* use --backend hf"):
        lm.loglikelihood([])
    with pytest.raises(UnsupportedError, match="decodes greedily only"):
        lm.generate_until(requests(["x"], do_sample=True, temperature=0.7))


def test_token_cap_sized_from_the_task():
    """``max_new_tokens="task"``: 1.5x the longest worked solution, rounded up to 8, at least the
    rollout cap; the protocol records the number used; suites and configs accept it."""
    from pefthub.evaluation import task_max_new_tokens
    from pefthub.schema import Evaluation

    lm = load_model("tiny-random")
    task = get_task("chain_sum", **SMALL)
    longest = max(len(lm.tokenizer.encode(task.target(ex), add_special_tokens=False))
                  for ex in task.examples("train", 64))
    cap = task_max_new_tokens(task, lm.tokenizer)
    assert cap % 8 == 0 and 1.5 * longest <= cap < 1.5 * longest + 8
    assert task_max_new_tokens(task, lm.tokenizer, at_least=cap + 100) == cap + 100
    result = evaluate(lm.model, lm.tokenizer, task, limit=2, max_new_tokens="task", batch_size=2)
    assert result.summary["protocol"]["max_new_tokens"] == cap
    assert Evaluation.from_dict({"max_new_tokens": "task"}).to_dict()["max_new_tokens"] == "task"

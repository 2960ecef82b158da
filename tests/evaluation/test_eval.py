"""Scoring through lm-eval: the metric agrees with the reward, the rendered prompt is the chat
template of the task's messages, in-memory transformers and peft models work, results follow the
schema, bad input is one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pefthub import plugins
from pefthub.errors import ConfigError
from pefthub.evaluation import EvalResult, evaluate, evaluate_lm, is_merged, wilson_interval
from pefthub.evaluation.render import render
from pefthub.tasks import get_task

SMALL = {"test_size": 12, "validation_size": 4, "train_size": 8, "min_terms": 2, "max_terms": 3, "max_digits": 2}
SAMPLE_KEYS = {"split", "id", "prompt", "completion", "extracted", "gold", "correct",
               "doc_id", "doc_hash", "prompt_hash", "target_hash"}  # the last four: lm-eval's own identifiers


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tiny():
    from pefthub.models import load_model

    return load_model("tiny-random")


class ScriptedLM:
    """An lm-eval LM that answers each prompt with a scripted completion (keyed by the question),
    so lm-eval's filters and metric run on completions we choose."""

    def __new__(cls, replies: dict[str, str], tokenizer):
        from lm_eval.api.model import LM

        class _Scripted(LM):
            def __init__(self):
                super().__init__()
                self.prompts: list[str] = []

            @property
            def tokenizer_name(self) -> str:
                return "scripted"

            def apply_chat_template(self, chat_history, add_generation_prompt=True):
                return tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                     add_generation_prompt=add_generation_prompt)

            def generate_until(self, requests, disable_tqdm=False):
                out = []
                for req in requests:
                    prompt = req.args[0]
                    self.prompts.append(prompt)
                    out.append(next(r for q, r in replies.items() if q in prompt))
                return out

            def loglikelihood(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return _Scripted()


def scripted_completions(task, examples):
    """A mix: correct with the answer line, correct without it, wrong, answer line then noise,
    conversational filler with no number, and a right number with a wrong answer line."""
    styles = [
        lambda ex: task.target(ex),
        lambda ex: f"I add them up and get {ex.answer}",
        lambda ex: f"The answer is {int(ex.answer) + 3}.",
        lambda ex: f"The answer is {ex.answer}. (double-checked with 2 + 2 = 4)",
        lambda ex: "I am not sure how to do this.",
        lambda ex: f"{ex.answer} is what I first thought, but the answer is {int(ex.answer) - 1}.",
    ]
    return {ex.question: styles[i % len(styles)](ex) for i, ex in enumerate(examples)}


def test_lm_eval_metric_and_reward_agree_on_the_same_completions(tiny):
    task = get_task("chain_sum", **SMALL)
    examples = task.examples("test")
    replies = scripted_completions(task, examples)
    lm = ScriptedLM(replies, tiny.tokenizer)
    result = evaluate_lm(lm, task, limit=len(examples))
    completions = [replies[ex.question] for ex in examples]
    answers = [ex.answer for ex in examples]

    reward = plugins.rewards().get(task.reward)(completions=completions, answer=answers)
    assert [s["correct"] for s in result.samples] == [r == 1.0 for r in reward]
    assert [s["completion"] for s in result.samples] == completions
    assert [s["extracted"] for s in result.samples] == [task.extract(c) for c in completions]
    # the metric is not trivially all-right or all-wrong on this mix
    assert 0 < result.summary["correct"] < len(examples)
    assert result.summary["accuracy"] == pytest.approx(sum(reward) / len(reward))
    # strict-match counts only answers stated in the requested format
    strict = [float(task.is_correct(task.extract_strict(c), a)) for c, a in zip(completions, answers)]
    assert result.summary["metrics"]["exact_match,strict-match"] == pytest.approx(sum(strict) / len(strict))
    assert sum(strict) < sum(reward)


def test_lm_eval_metric_and_math_verify_reward_agree(tmp_path, tiny):
    rows = [{"problem": f"Simplify $\\frac{{{k}}}{{{2 * k}}}$.", "solution": "$\\boxed{\\frac{1}{2}}$",
             "answer": "\\frac{1}{2}", "subject": "Algebra", "level": 1, "unique_id": f"t/{k}.json"}
            for k in range(1, 7)]
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("math500", data_files={"test": str(path)})
    texts = ["so $\\boxed{\\frac{1}{2}}$", "\\boxed{0.5}", "\\boxed{\\frac{2}{4}}", "\\boxed{2}",
             "the result is $\\frac{1}{2}$", "no idea"]
    replies = {ex.question: t for ex, t in zip(task.examples("test"), texts)}
    result = evaluate_lm(ScriptedLM(replies, tiny.tokenizer), task)
    reward = plugins.rewards().get("math_verify")(completions=texts, answer=[r["answer"] for r in rows])
    assert reward == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert [s["correct"] for s in result.samples] == [r == 1.0 for r in reward]
    assert result.summary["metrics"]["exact_match,strict-match"] == pytest.approx(3 / 6)


def test_evaluates_an_in_memory_transformers_model_with_the_chat_template(tiny):
    task = get_task("chain_sum", **SMALL)
    result = evaluate(tiny.model, tiny.tokenizer, task, limit=3, max_new_tokens=6, batch_size=3)
    assert isinstance(result, EvalResult)
    assert [s["id"] for s in result.samples] == ["chain_sum-test-0", "chain_sum-test-1", "chain_sum-test-2"]
    for sample, ex in zip(result.samples, task.examples("test", 3)):
        assert set(sample) == SAMPLE_KEYS and sample["split"] == "test" and sample["gold"] == ex.answer
        assert sample["prompt"] == tiny.tokenizer.apply_chat_template(task.messages(ex), tokenize=False,
                                                                      add_generation_prompt=True)
        assert 0 < len(tiny.tokenizer(sample["completion"])["input_ids"]) <= 6
    # greedy: the same completion as transformers' own greedy generate from the same prompt ids
    # (the longest prompt, which lm-eval's left-padded batch does not pad)
    longest = max(result.samples, key=lambda s: len(s["prompt"]))
    ids = tiny.tokenizer(longest["prompt"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = tiny.model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tiny.tokenizer.pad_token_id)
    assert tiny.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True) == longest["completion"]


def test_summary_follows_the_result_schema(tiny):
    task = get_task("chain_sum", **SMALL)
    result = evaluate(tiny.model, tiny.tokenizer, task, limit=2, max_new_tokens=2, batch_size=2)
    s = result.summary
    for key in ("accuracy", "ci_low", "ci_high", "ci_method", "n", "correct", "metric", "metrics", "protocol"):
        assert key in s
    assert s["n"] == 2 and s["ci_method"] == "wilson" and s["metric"] == "exact_match,flexible-extract"
    assert set(s["metrics"]) == {"exact_match,strict-match", "exact_match,flexible-extract"}
    assert (s["ci_low"], s["ci_high"]) == pytest.approx(wilson_interval(s["correct"], s["n"]))
    p = s["protocol"]
    assert p["harness"] == "lm-eval" and p["lm_eval_version"].startswith("0.4")
    assert p["generation"] == "greedy" and p["chat_template"] is True and p["backend"] == "fused"  # auto: fused serves it
    assert p["max_new_tokens"] == 2 and p["merged"] is True and len(p["task_config_hash"]) == 64
    assert json.loads(json.dumps(result.samples)) == result.samples  # the samples file is plain JSON


def test_task_config_hash_tracks_what_decides_the_score():
    task = get_task("chain_sum", **SMALL)
    a = render(task, "test", 5, 64)
    assert render(get_task("chain_sum", **SMALL), "test", 5, 64).config_hash == a.config_hash
    assert render(task, "test", 5, 32).config_hash != a.config_hash  # generation length
    assert render(task, "test", 4, 64).config_hash != a.config_hash  # problems
    assert render(get_task("chain_sum", **{**SMALL, "seed": 1}), "test", 5, 64).config_hash != a.config_hash
    text = a.yaml_path.read_text()
    assert "generate_until" in text and "!function pefthub_task.flexible_extract" in text
    assert len(a.data_path.read_text().splitlines()) == 5


def test_peft_lora_model_unmerged_and_merged(tiny):
    from peft import LoraConfig, get_peft_model

    from pefthub.models import load_model

    task = get_task("chain_sum", **SMALL)
    base = evaluate(tiny.model, tiny.tokenizer, task, limit=2, max_new_tokens=5, batch_size=2)
    peft_model = get_peft_model(load_model("tiny-random").model,
                                LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=True))
    assert is_merged(peft_model) is False
    unmerged = evaluate(peft_model, tiny.tokenizer, task, limit=2, max_new_tokens=5, batch_size=2)
    assert unmerged.summary["protocol"]["merged"] is False
    # LoRA starts as the identity (B = 0): the same greedy completions as the base model
    assert [s["completion"] for s in unmerged.samples] == [s["completion"] for s in base.samples]
    merged_model = peft_model.merge_and_unload()
    assert is_merged(merged_model) is True
    merged = evaluate(merged_model, tiny.tokenizer, task, limit=2, max_new_tokens=5, batch_size=2)
    assert merged.summary["protocol"]["merged"] is True
    assert [s["completion"] for s in merged.samples] == [s["completion"] for s in base.samples]


def test_prompt_tuning_peft_model_is_evaluated_unmerged(tiny):
    from peft import PromptTuningConfig, get_peft_model

    from pefthub.models import load_model

    task = get_task("chain_sum", **SMALL)
    model = get_peft_model(load_model("tiny-random").model,
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with torch.no_grad():
        model.prompt_encoder["default"].embedding.weight.normal_(0, 5.0)  # make the prompt matter
    result = evaluate(model, tiny.tokenizer, task, limit=2, max_new_tokens=5, batch_size=2)
    assert result.summary["protocol"]["merged"] is False and result.summary["n"] == 2
    with pytest.raises(ConfigError, match="vllm backend evaluates merged weights only"):
        evaluate(model, tiny.tokenizer, task, limit=2, backend="vllm")


@pytest.mark.parametrize("kwargs,match", [
    ({"split": "dev"}, r"^eval.split: must be one of train, validation, test \(got 'dev'\)$"),
    ({"limit": 0}, r"^eval.limit: must be a positive integer \(got 0\)$"),
    ({"max_new_tokens": 0}, r"^eval.max_new_tokens: must be a positive integer \(got 0\)$"),
    ({"batch_size": True}, r"^eval.batch_size: must be a positive integer \(got True\)$"),
    ({"backend": "tgi"}, r"^eval.backend: must be one of auto, fused, hf, vllm \(got 'tgi'\)$"),
])
def test_bad_evaluation_settings_are_one_line(tiny, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        evaluate(tiny.model, tiny.tokenizer, get_task("chain_sum", **SMALL), **kwargs)


def test_empty_split_is_one_line(tiny, tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({"problem": "p", "solution": "s", "answer": "1", "subject": "Algebra", "level": 1,
                                "unique_id": "u"}) + "\n")
    with pytest.raises(ConfigError, match="task 'math500': the validation split is empty"):
        evaluate(tiny.model, tiny.tokenizer, get_task("math500", data_files={"test": str(path)}), split="validation")


@pytest.mark.parametrize("correct,n,low,high", [
    (50, 100, 0.4038, 0.5962),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (124, 400, 0.2667, 0.3570),
])
def test_wilson_interval(correct, n, low, high):
    got = wilson_interval(correct, n)
    assert got[0] == pytest.approx(low, abs=1e-4) and got[1] == pytest.approx(high, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert not math.isnan(got[0])


def test_cli_eval_prints_accuracy_and_writes_the_samples_file(tmp_path, capsys):
    from pefthub.cli import main

    out = tmp_path / "out"
    code = main(["eval", "--model", "tiny-random", "--task", "chain_sum", "--param", "test_size=5",
                 "--param", "max_digits=2", "--limit", "3", "--max-new-tokens", "3", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "95% CI" in printed and "/3 correct" in printed
    samples_files = list(out.glob("*.samples.jsonl"))
    assert len(samples_files) == 1
    lines = [json.loads(line) for line in samples_files[0].read_text().splitlines()]
    assert len(lines) == 3 and all(set(line) == SAMPLE_KEYS for line in lines)
    summary = json.loads(next(out.glob("tiny-random.chain_sum.test.*.json")).read_text())
    assert summary["n"] == 3 and summary["samples_file"] == samples_files[0].name


def test_cli_eval_bad_task_is_one_line(capsys):
    from pefthub.cli import main

    assert main(["eval", "--model", "tiny-random", "--task", "chain_sum", "--param", "max_terms=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: task 'chain_sum': parameter max_terms: must be a positive integer (got 0)"


def test_cli_tasks_lists_parameters(capsys):
    from pefthub.cli import main

    assert main(["tasks", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert {"chain_sum", "basic_arithmetic", "gsm_symbolic", "gsm8k", "math500"} <= set(listed)
    assert any(p["name"] == "max_digits" and p["help"] for p in listed["chain_sum"]["params"])
    assert listed["math500"]["reward"] == "math_verify"

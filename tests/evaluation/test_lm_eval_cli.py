"""lm-eval's own command line with pefthub's models registered (`pefthub lm-eval`, `python -m
pefthub.lm_eval_cli`): lm-eval's arguments unchanged, a task from `--include_path`, and the samples
file lm-eval writes holding the fused engine's completions."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pefthub import cli

TASK = "pefthub_cli_sum"
DOCS = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in [(1, 2), (3, 4), (10, 5), (7, 7)]]


@pytest.fixture
def task_dir(tmp_path):
    directory = tmp_path / "tasks"
    directory.mkdir()
    data = directory / "data.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    (directory / "task.yaml").write_text("\n".join([
        f"task: {TASK}", "dataset_path: json", "dataset_kwargs:", "  data_files:", f"    test: {json.dumps(str(data))}",
        "test_split: test", "output_type: generate_until", "doc_to_text: question", "doc_to_target: answer",
        "generation_kwargs:", "  until: []", "  do_sample: false", "  max_gen_toks: 5",
        "metric_list:", "  - metric: exact_match", "    higher_is_better: true", ""]))
    return directory


def test_pefthub_lm_eval_runs_lm_evals_cli_with_the_pefthub_model(task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    # lm-eval's legacy form (no subcommand): its own parser inserts `run`
    code = cli.main(["lm-eval", "--model", "pefthub", "--model_args", "pretrained=tiny-random",
                     "--tasks", TASK, "--include_path", str(task_dir), "--batch_size", "3",
                     "--apply_chat_template", "--log_samples", "--output_path", str(out)])
    assert code == 0
    [samples_file] = list(out.glob(f"*/samples_{TASK}_*.jsonl"))
    [results_file] = list(out.glob("*/results_*.json"))
    samples = sorted((json.loads(line) for line in samples_file.read_text().splitlines()), key=lambda s: s["doc_id"])
    assert [s["doc_id"] for s in samples] == [0, 1, 2, 3]
    assert [s["doc"] for s in samples] == DOCS and [s["target"] for s in samples] == [d["answer"] for d in DOCS]
    prompts = [s["arguments"]["gen_args_0"]["arg_0"] for s in samples]
    assert all(p.startswith("<|im_start|>user\n" + d["question"]) for p, d in zip(prompts, DOCS))  # chat template

    # the completions are the fused engine's own greedy ones for those prompts
    from lm_eval.api.instance import Instance

    from pefthub.evaluation.fused_backend import make_fused_lm
    from pefthub.models import load_model

    lm = load_model("tiny-random")
    gen = samples[0]["arguments"]["gen_args_0"]["arg_1"]
    direct = make_fused_lm(lm.model, lm.tokenizer, 3, 5).generate_until(
        [Instance(request_type="generate_until", doc={}, arguments=(p, dict(gen)), idx=0) for p in prompts])
    assert [s["resps"] for s in samples] == [[[text]] for text in direct]
    assert [s["exact_match"] for s in samples] == [float(t.strip() == d["answer"]) for t, d in zip(direct, DOCS)]

    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "pefthub"
    assert results["results"][TASK]["exact_match,none"] == sum(s["exact_match"] for s in samples) / len(DOCS)


def test_module_entry_is_lm_evals_parser_and_does_not_shadow_lm_eval():
    done = subprocess.run([sys.executable, "-m", "pefthub.lm_eval_cli", "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--include_path" in done.stdout and "--log_samples" in done.stdout


def test_pefthub_parser_leaves_lm_evals_arguments_alone():
    parser = cli.build_parser()
    args = cli.parse(parser, ["--debug", "lm-eval", "--model", "pefthub", "-h", "--tasks", "a,b"])
    assert args.debug and args.command == "lm-eval"
    assert args.passthrough == ["--model", "pefthub", "-h", "--tasks", "a,b"]
    assert cli.parse(parser, ["compare", "a", "b", "--suite", "quick"]).suite == "quick"

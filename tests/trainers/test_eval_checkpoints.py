"""``eval.checkpoints``: validation scored at chosen optimizer steps inside one run, recorded in the
result's ``checkpoints``, with training exactly as without them and run ids unchanged when unset."""

from __future__ import annotations

import random
import textwrap

import numpy as np
import pytest
import torch

from pefthub import results, suites
from pefthub.cli import main
from pefthub.errors import ConfigError
from pefthub.runner import resolve_config, run_experiment
from pefthub.trainers.common import rng_preserved


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TASK = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def config(checkpoints=None, **overrides):
    evaluation = {"split": "test", "limit": 2, "validation_limit": 2, "max_new_tokens": 6, "backend": "hf"}
    if checkpoints is not None:
        evaluation["checkpoints"] = checkpoints
    base = {"model": "tiny-random", "task": dict(TASK), "trainer": "grpo", "trainer_options": {},
            "method": "lora", "method_config": {"r": 2}, "params_target": None, "learning_rate": 1e-2, "seed": 0,
            "budget": {"steps": 3, "batch_size": 2, "generations": 2, "max_new_tokens": 6, "max_seq_len": 256},
            "eval": evaluation}
    base.update(overrides)
    return base


def same_curves(a: list[dict], b: list[dict]) -> bool:
    """Per-step curves equal in every entry but wall seconds."""
    strip = [{k: v for k, v in point.items() if k != "seconds"} for point in a]
    return strip == [{k: v for k, v in point.items() if k != "seconds"} for point in b]


@pytest.mark.parametrize("trainer,metric", [("sft", "loss"), ("grpo", "reward")])
def test_checkpoints_are_scored_at_their_steps_and_leave_training_unchanged(tmp_path, monkeypatch, trainer, metric):
    # LoRA dropout draws from torch's RNG every training forward, and lm-eval reseeds it when it scores:
    # without the random state put back, the steps after a checkpoint train differently. A reward by
    # length gives the random policy's groups an advantage, so GRPO trains through dropout too.
    import pefthub.trainers.grpo

    monkeypatch.setattr(pefthub.trainers.grpo, "resolve_reward",
                        lambda task, name: ("length", lambda completions, **_: [float(len(c)) for c in completions]))
    lora = {"r": 2, "dropout": 0.5}
    plain = run_experiment(resolve_config(config(trainer=trainer, method_config=lora)), results_dir=tmp_path / "plain")
    events = []
    doc = run_experiment(resolve_config(config([1, 3], trainer=trainer, method_config=lora)),
                         results_dir=tmp_path / "ckpt", progress=events.append)
    assert plain["status"] == doc["status"] == "success", (plain["error"], doc["error"])
    assert "checkpoints" not in plain
    assert same_curves(doc["curves"], plain["curves"]) and [c[metric] for c in doc["curves"]]
    assert sum(c["grad_norm"] for c in doc["curves"]) > 0  # it trained
    points = doc["checkpoints"]
    assert [p["step"] for p in points] == [1, 3] and all(p["split"] == "validation" for p in points)
    for p in points:
        assert p["n"] == 2 and 0 <= p["correct"] <= 2 and p["accuracy"] == p["correct"] / 2
        assert p["ci_low"] <= p["accuracy"] <= p["ci_high"] and p["strict_accuracy"] is not None
        assert p["backend"] == "hf" and p["seconds_eval"] > 0
    # The step at budget.steps is the final validation evaluation, not a second one.
    final = doc["evaluation"]["validation"]
    assert (points[-1]["accuracy"], points[-1]["n"]) == (final["accuracy"], final["n"])
    scored = [e for e in events if e["phase"] == "eval" and e.get("step") is not None]
    assert [e["step"] for e in scored] == [1]
    spent = doc["budget"]["spent"]
    assert spent["seconds_checkpoint_eval"] > 0 and plain["budget"]["spent"]["seconds_checkpoint_eval"] == 0
    counted = "examples" if trainer == "sft" else "prompts"
    assert points[0][counted] == spent[counted] // 3 and points[-1][counted] == spent[counted]
    tokens = "tokens_trained" if trainer == "sft" else "tokens_generated"  # GRPO's step 1 groups may all tie
    assert points[-1][tokens] == spent[tokens] > points[0][tokens] > 0
    assert points[-1]["tokens_trained"] == spent["tokens_trained"] >= points[0]["tokens_trained"]
    # Training seconds exclude the checkpoint's scoring: the wall time up to step 3, less it.
    assert 0 < points[0]["seconds_train_so_far"] < points[-1]["seconds_train_so_far"]
    assert points[-1]["seconds_train_so_far"] < spent["seconds_total"] - spent["seconds_checkpoint_eval"]
    stored = results.read_result(results.result_path(tmp_path / "ckpt", doc["run_id"]))
    assert stored["checkpoints"] == points


def test_rng_preserved_puts_every_random_state_back():
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    with rng_preserved():  # what lm-eval does inside an evaluation
        torch.manual_seed(1234)
        random.seed(0)
        np.random.seed(1234)
        torch.rand(5), random.random(), np.random.rand()
    assert (torch.equal(torch.rand(3), expected[0]), random.random(), np.random.rand()) == (True, *expected[1:])


def test_run_ids_are_unchanged_without_checkpoints():
    plain = resolve_config(config())
    assert "checkpoints" not in plain["eval"]
    assert results.run_id(resolve_config(config([]))) == results.run_id(plain)
    with_points = resolve_config(config([1, 2]))
    assert with_points["eval"]["checkpoints"] == [1, 2] and results.run_id(with_points) != results.run_id(plain)
    assert resolve_config(with_points) == with_points


@pytest.mark.parametrize("change,message", [
    ({"eval": {"validation_limit": 2, "checkpoints": [0, 2]}}, "config.eval.checkpoints: 0 is not a positive integer"),
    ({"eval": {"validation_limit": 2, "checkpoints": [2, 2]}}, "config.eval.checkpoints: must be strictly increasing "
                                                               "(2 after 2)"),
    ({"eval": {"validation_limit": 2, "checkpoints": [1, 4]}}, "config.eval.checkpoints: 4 is beyond budget.steps (3)"),
    ({"eval": {"validation_limit": 2, "checkpoints": [1.5]}}, "config.eval.checkpoints: must be a list of integers"),
    ({"eval": {"checkpoints": [1]}}, "config.eval.checkpoints: score the validation split, so set "
                                     "eval.validation_limit > 0"),
    ({"eval": {"validation_limit": 2, "checkpoints": [1], "backend": "vllm"}}, "not with backend 'vllm'"),
    ({"trainer": "trl-grpo"}, "trainer 'trl-grpo' cannot score between its optimizer steps"),
    ({"trainer": "none", "method": "base", "budget": {"steps": 0}}, "the base-model row trains no steps"),
])
def test_bad_checkpoints_are_one_line_before_any_work(tmp_path, change, message):
    raw = {**config([1, 2]), **change}
    with pytest.raises(ConfigError) as caught:
        run_experiment(raw, results_dir=tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_sharded_training_refuses_checkpoints_before_any_work(tmp_path):
    raw = config([1, 2], trainer="sft", method="full", method_config={}, device="cpu")
    with pytest.raises(ConfigError, match="config.eval.checkpoints: not with sharded training"):
        run_experiment(raw, results_dir=tmp_path, num_gpus=2)
    assert list(tmp_path.iterdir()) == []


def test_pefthub_train_flag(tmp_path, capsys):
    from pefthub.commands import train_command as train

    parser = __import__("argparse").ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--model", "tiny-random", "--steps", "4", "--eval-validation-limit", "3",
                              "--eval-checkpoints", "1, 2,4"])
    cfg = train.build_config(args)
    assert cfg["eval"]["checkpoints"] == [1, 2, 4] and cfg["eval"]["validation_limit"] == 3
    assert "checkpoints" not in train.build_config(parser.parse_args(["--model", "tiny-random"]))["eval"]
    for flags, expected in [(["--eval-checkpoints", "1,x"], "error: --eval-checkpoints: 'x' is not a positive integer"),
                            (["--eval-checkpoints", "3,2", "--eval-validation-limit", "2"],
                             "error: config.eval.checkpoints: must be strictly increasing (2 after 3)")]:
        code = main(["train", "--model", "tiny-random", "--steps", "4", *flags, "--results", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and err.strip().startswith(expected) and len(err.strip().splitlines()) == 1


def test_pefthub_train_records_and_prints_the_checkpoints(tmp_path, capsys):
    code = main(["train", "--model", "tiny-random", "--method", "lora", "--set", "r=2", "--trainer", "sft",
                 "--task", "chain_sum", "--steps", "2", "--batch-size", "2", "--eval-limit", "2",
                 "--eval-max-new-tokens", "4", "--eval-backend", "hf", "--eval-validation-limit", "2",
                 "--eval-checkpoints", "1,2", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = results.read_result(out.strip().splitlines()[-1])
    assert [p["step"] for p in doc["checkpoints"]] == [1, 2] and doc["config"]["eval"]["checkpoints"] == [1, 2]
    assert "validation by step: 1: " in out


SUITE = """
model = "tiny-random"
[task]
name = "basic_arithmetic"
[budget]
steps = 4
batch_size = 2
[grid]
methods = ["lora"]
trainers = ["sft"]
learning_rates = [1e-3]
[eval]
validation_limit = 4
"""


def test_a_suite_passes_its_checkpoints_to_trained_runs_only(tmp_path):
    path = tmp_path / "mini"
    path.mkdir()
    (path / "suite.toml").write_text(textwrap.dedent(SUITE) + "checkpoints = [2, 4]\n")
    runs = suites.expand(suites.load(path))
    base, trained = runs[0].config, runs[1].config
    assert "checkpoints" not in base["eval"] and trained["eval"]["checkpoints"] == [2, 4]
    (path / "suite.toml").write_text(textwrap.dedent(SUITE))
    plain = suites.expand(suites.load(path))
    assert plain[0].run_id == runs[0].run_id and plain[1].run_id != runs[1].run_id
    (path / "suite.toml").write_text(textwrap.dedent(SUITE) + "checkpoints = [2, 5]\n")
    with pytest.raises(ConfigError, match=r"suite.toml: eval.checkpoints: 5 is beyond budget.steps \(4\)"):
        suites.load(path)


def test_the_gpu_plan_counts_checkpoint_evaluations():
    from pefthub import memory_plan as mp
    from pefthub.models import load_config

    arch = mp.Architecture.from_config(load_config("qwen2.5-7b-instruct"))
    budget = {"steps": 40, "batch_size": 8, "generations": 4, "max_new_tokens": 512, "max_seq_len": 1024}
    evaluation = {"limit": 100, "validation_limit": 50, "max_new_tokens": 256, "backend": "fused"}
    cfg = {"model": "Qwen/Qwen2.5-7B-Instruct", "method": "lora", "trainer": "grpo", "trainer_options": {},
           "budget": budget, "eval": evaluation}

    def estimate(**extra):
        return mp.estimate_run(arch, {**cfg, "eval": {**evaluation, **extra}}, algorithm="grpo", trainable_params=10)

    plain, points = estimate(), estimate(checkpoints=[10, 20, 40])
    # Steps 10 and 20 score 50 validation examples each, at (1024 - 512) prompt room + 256 new tokens;
    # step 40 is the final validation evaluation, already counted.
    assert points.generation_flops - plain.generation_flops == 2 * arch.forward_params * 2 * 50 * (512 + 256)
    assert points.train_flops == plain.train_flops and points.gpu_hours > plain.gpu_hours

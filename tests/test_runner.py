"""The single-run runner and `pefthub train`: config errors before work, every outcome written."""

from __future__ import annotations

import json

import pytest
import torch

from pefthub import results
from pefthub.cli import main
from pefthub.errors import ConfigError
from pefthub.runner import resolve_config, run_experiment


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny-model ops: a second thread only adds waiting on a busy machine
    yield
    torch.set_num_threads(threads)


TASK = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def config(**overrides):
    base = {"model": "tiny-random", "task": dict(TASK), "trainer": "grpo", "trainer_options": {},
            "method": "lora", "method_config": {"r": 2}, "params_target": None, "learning_rate": 1e-2, "seed": 0,
            "budget": {"steps": 2, "batch_size": 2, "generations": 2, "max_new_tokens": 6, "max_seq_len": 256},
            "eval": {"split": "test", "limit": 3, "max_new_tokens": 8, "backend": "hf"}}
    base.update(overrides)
    return resolve_config(base)


@pytest.mark.parametrize("change,match", [
    ({"budget": {"steps": 0}}, "budget.steps"),
    ({"method": "lorra"}, "unknown method 'lorra'"),
    ({"trainer": "ppo"}, "unknown trainer 'ppo'"),
    ({"trainer": "none"}, "method 'base' goes with trainer 'none'"),
    ({"trainer_options": {"loss_type": "ppo"}}, "trainer_options.loss_type"),
    ({"eval": {"backend": "tgi"}}, "config.eval.backend"),
    ({"learning_rate": -1.0}, "config.learning_rate"),
    ({"task": {"name": "no_such_task"}}, "unknown task"),
    ({"model": "no-such-model-anywhere"}, "unknown model .no-such-model-anywhere."),
    ({"method_config": {"rank": 4}}, "unknown field"),
    ({"budget": {"steps": 2, "generations": 1}}, "budget.generations"),
    ({"colour": "blue"}, "unknown field.*colour"),
])
def test_config_errors_raise_before_any_work(tmp_path, change, match):
    raw = {**config(), **change}
    with pytest.raises(ConfigError, match=match):
        run_experiment(raw, results_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_grpo_run_writes_a_valid_result_with_its_spent_budget(tmp_path):
    cfg = config()
    events = []
    doc = run_experiment(cfg, results_dir=tmp_path, progress=events.append)
    assert doc["status"] == "success", doc["error"]
    path = results.result_path(tmp_path, results.run_id(cfg))
    stored = results.read_result(path)
    assert stored["config"] == cfg and stored["run_id"] == results.run_id(cfg)
    spent = stored["budget"]["spent"]
    assert stored["budget"]["declared"] == cfg["budget"]
    assert (spent["optimizer_steps"], spent["prompts"], spent["completions"]) == (2, 4, 8)
    assert spent["seconds_total"] >= spent["seconds_generation"] + spent["seconds_train"] + spent["seconds_eval"] > 0
    assert spent["peak_rss_bytes"] > 0 and spent["train_flops"] > 0
    assert [c["step"] for c in stored["curves"]] == [1, 2]
    assert stored["method"]["trainable_params"] == stored["method"]["trainable_params"] > 0
    test = stored["evaluation"]["test"]
    assert test["n"] == 3 and test["protocol"]["merged"] is True
    lines = (tmp_path / test["samples_file"]).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["split"] == "test"
    phases = [e["phase"] for e in events]
    assert phases[0] == "load" and phases.count("train") == 2 and "eval" in phases and phases[-1] == "done"
    assert [e["step"] for e in events if e["phase"] == "train"] == [1, 2]


def test_params_target_resolves_the_method_config():
    cfg = resolve_config({**config(), "method": "tinylora", "method_config": {}, "params_target": 13})
    assert cfg["method_config"]["u"] == 13 and cfg["params_target"] == 13
    assert cfg["trainer_options"]["loss_type"] == "dapo" and cfg["budget"]["schedule"] == "constant"
    assert resolve_config(cfg) == cfg  # resolving is idempotent: the identity is stable


def test_sft_run_and_base_row(tmp_path):
    sft = run_experiment(config(trainer="sft", method="prompt_tuning", method_config={"num_virtual_tokens": 2}),
                         results_dir=tmp_path)
    assert sft["status"] == "success", sft["error"]
    assert sft["budget"]["spent"]["examples"] == 4 and sft["budget"]["spent"]["prompts"] == 0
    assert sft["evaluation"]["test"]["protocol"]["merged"] is False  # prompt tuning cannot merge
    base = run_experiment(resolve_config({"model": "tiny-random", "task": dict(TASK), "trainer": "none",
                                          "method": "base", "eval": {"limit": 2, "max_new_tokens": 4}}),
                          results_dir=tmp_path)
    assert base["status"] == "success" and base["method"]["trainable_params"] == 0
    assert base["budget"]["spent"]["optimizer_steps"] == 0 and base["evaluation"]["test"]["n"] == 2
    assert "curves" not in base


def test_a_nan_run_is_recorded_as_failed_without_evaluation(tmp_path):
    cfg = config(trainer="sft", method="full", method_config={}, learning_rate=1e30,
                 budget={"steps": 4, "batch_size": 2})
    doc = run_experiment(cfg, results_dir=tmp_path)
    assert doc["status"] == "failed" and doc["error"].startswith("NaN") and "at step" in doc["error"]
    stored = results.read_result(results.result_path(tmp_path, doc["run_id"]))
    assert stored["status"] == "failed" and "evaluation" not in stored
    assert stored["budget"]["spent"]["optimizer_steps"] == len(stored["curves"]) < 4


def test_an_exception_mid_run_is_a_failed_result_with_one_line(tmp_path, monkeypatch):
    import pefthub.models

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(pefthub.models, "load_model", broken)
    doc = run_experiment(config(), results_dir=tmp_path)
    assert doc["status"] == "failed" and doc["error"] == "RuntimeError: second line"
    assert results.read_result(results.result_path(tmp_path, doc["run_id"]))["error"] == doc["error"]


def test_ctrl_c_writes_a_cancelled_result_and_propagates(tmp_path, monkeypatch):
    from pefthub.trainers.grpo import GRPOTrainer

    def interrupted(self, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(GRPOTrainer, "run_steps", interrupted)
    cfg = config()
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, results_dir=tmp_path)
    stored = results.read_result(results.result_path(tmp_path, results.run_id(cfg)))
    assert stored["status"] == "cancelled" and stored["error"] == "interrupted"


def test_pefthub_train_cli_writes_and_prints_the_result(tmp_path, capsys):
    code = main(["train", "--model", "tiny-random", "--method", "tinylora", "--params", "13", "--trainer", "grpo",
                 "--task", "chain_sum", "--task-param", "max_digits=2", "--steps", "2", "--batch-size", "2",
                 "--generations", "2", "--max-new-tokens", "6", "--eval-limit", "2", "--eval-max-new-tokens", "4",
                 "--lr", "0.01", "--results", str(tmp_path)])
    out = capsys.readouterr().out
    printed = out.strip().splitlines()[-1]
    assert code == 0, out
    doc = results.read_result(printed)
    assert doc["method"]["trainable_params"] == 13 and doc["config"]["params_target"] == 13
    assert doc["config"]["task"]["max_digits"] == 2 and doc["budget"]["spent"]["optimizer_steps"] == 2


def test_pefthub_train_bad_input_is_one_line(tmp_path, capsys):
    code = main(["train", "--model", "tiny-random", "--steps", "0", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: budget.steps: must be a positive integer (got 0)"
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []

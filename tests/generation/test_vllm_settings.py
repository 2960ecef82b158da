"""A run's ``vllm`` settings: checked in suites and configs before anything loads, carried by run
configs only when set, handed to the engines a run starts, and never a completion cut short."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest

from pefthub import suites
from pefthub.errors import ConfigError
from pefthub.generation import vllm_engine

REPO = Path(__file__).resolve().parents[2]

SUITE = """
model = "tiny-random"
{vllm}
[task]
name = "chain_sum"
[budget]
steps = 1
batch_size = 2
max_new_tokens = 32
max_seq_len = 96
[trainer_options.grpo]
rollout_backend = "vllm"
[eval]
limit = 2
backend = "vllm"
max_new_tokens = 48
[grid]
methods = ["lora"]
trainers = ["grpo"]
learning_rates = [1e-3]
"""


def write_suite(tmp_path, vllm=""):
    (tmp_path / "suite.toml").write_text(SUITE.format(vllm=vllm))
    return tmp_path


def test_settings_are_checked_with_one_line_naming_the_key():
    assert vllm_engine.check_settings({"gpu_memory_utilization": 0.5, "max_model_len": 8192}) == {
        "gpu_memory_utilization": 0.5, "max_model_len": 8192}
    cases = [({"gpu_memory_utilization": 1.5}, "vllm.gpu_memory_utilization: must be a number in (0, 1] (got 1.5)"),
             ({"gpu_memory_utilization": "most"}, "vllm.gpu_memory_utilization: must be a number"),
             ({"max_model_len": 8}, "vllm.max_model_len: must be an integer >= 16 (got 8)"),
             ({"max_model_len": 4096.5}, "vllm.max_model_len: must be an integer"),
             ({"kv_cache_gib": 2}, "vllm.kv_cache_gib: unknown key (allowed: gpu_memory_utilization, max_model_len)"),
             (0.3, "vllm: must be a table")]
    for value, message in cases:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            vllm_engine.check_settings(value)


def test_a_max_model_len_below_the_run_is_refused_before_loading():
    with pytest.raises(ConfigError, match="config.vllm.max_model_len: 4096 is below the 4608 tokens the run's "
                                          r"vLLM rollouts need \(budget.max_seq_len\)"):
        vllm_engine.check_run_settings({"max_model_len": 4096}, rollout_len=4608, eval_new_tokens=None)
    with pytest.raises(ConfigError, match="leaves no room for a prompt before the 4096 new tokens"):
        vllm_engine.check_run_settings({"max_model_len": 4096}, rollout_len=None, eval_new_tokens=4096)
    assert vllm_engine.check_run_settings(None, rollout_len=4608, eval_new_tokens=4096) == {}
    assert vllm_engine.check_run_settings({"max_model_len": 8192}, rollout_len=4608, eval_new_tokens=4096) == {
        "max_model_len": 8192}


def test_suite_configs_carry_vllm_only_when_set(tmp_path):
    (tmp_path / "a").mkdir()
    plain = suites.load(write_suite(tmp_path / "a"))
    assert plain.vllm == {} and all("vllm" not in e.config for e in suites.expand(plain))
    (tmp_path / "b").mkdir()
    set_ = suites.load(write_suite(tmp_path / "b", "vllm = { gpu_memory_utilization = 0.6, max_model_len = 256 }"))
    runs = suites.expand(set_)
    assert [e.config["vllm"] for e in runs] == [{"gpu_memory_utilization": 0.6, "max_model_len": 256}] * len(runs)
    assert len(runs) == 2  # the base row (evaluated on vLLM) and lora/grpo
    # A different setting is a different run.
    assert {e.run_id for e in runs}.isdisjoint({e.run_id for e in suites.expand(plain)})


def test_suite_max_model_len_below_max_seq_len_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"suite.toml: vllm.max_model_len: 64 is below the 96 tokens"):
        suites.load(write_suite(tmp_path, "vllm = { max_model_len = 64 }"))
    with pytest.raises(ConfigError, match=r"suite.toml: vllm.bogus: unknown key"):
        suites.load(write_suite(tmp_path, "vllm = { bogus = 1 }"))


def test_runner_refuses_a_short_max_model_len_before_loading(tmp_path, monkeypatch):
    from pefthub import runner

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded a model")

    monkeypatch.setattr("pefthub.models.load_model", no_loading)
    (config,) = [e.config for e in suites.expand(suites.load(write_suite(tmp_path))) if e.config["method"] == "lora"]
    runner.prepare(config)
    with pytest.raises(ConfigError, match="config.vllm.max_model_len: 80 is below the 96 tokens"):
        runner.run_experiment({**config, "vllm": {"max_model_len": 80}}, results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_engines_take_the_run_settings_and_length(tmp_path):
    """Inside a run, the rollout engine is sized to the run's longest sequence and the evaluation
    engine to the model's context, both with the run's memory share; outside, the defaults."""
    from pefthub.evaluation.vllm_backend import lm_eval_model_args
    from pefthub.models import load_model

    lm = load_model("tiny-random")
    lm.model.config.save_pretrained(tmp_path)
    gpu = dict(device="cuda")  # resolved without vLLM: only the arguments are built, no engine
    with vllm_engine.run_settings({"gpu_memory_utilization": 0.55}, rollout_len=96):
        rollout = vllm_engine.engine_kwargs(tmp_path, dataclasses.replace(vllm_engine.run_options("rollout"), **gpu))
        evaluation = lm_eval_model_args(tmp_path, max_new_tokens=48,
                                        options=dataclasses.replace(vllm_engine.run_options("eval"), **gpu))
    assert rollout["max_model_len"] == 96 and rollout["gpu_memory_utilization"] == 0.55
    assert evaluation["max_model_len"] == lm.model.config.max_position_embeddings == 512
    assert evaluation["gpu_memory_utilization"] == 0.55
    outside = vllm_engine.engine_kwargs(tmp_path, dataclasses.replace(vllm_engine.run_options("rollout"), **gpu))
    assert outside["max_model_len"] == 512 and outside["gpu_memory_utilization"] == 0.3
    with vllm_engine.run_settings({"max_model_len": 400}, rollout_len=96):
        assert vllm_engine.run_options("rollout").max_model_len == 400  # a set length wins (checked >= 96)


def test_a_prompt_and_its_completion_must_fit_the_engine():
    llm = SimpleNamespace(llm_engine=SimpleNamespace(model_config=SimpleNamespace(max_model_len=100)))
    vllm_engine.check_fits(llm, [[1] * 60, [2] * 10], 40)
    with pytest.raises(ConfigError, match="a 61-token prompt plus 40 new tokens exceeds the engine's 100"):
        vllm_engine.check_fits(llm, [[1] * 61], 40)

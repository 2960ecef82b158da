"""The TRL-backed trainers (``trl-sft``, ``trl-grpo``) on the tiny random model: they agree with the
built-in trainers where the algorithms are the same computation, account what they spend, and turn
bad input into one-line errors."""

from __future__ import annotations

import pytest
import torch

from pefthub import plugins
from pefthub.errors import ConfigError, UnsupportedError
from pefthub.models import base_model
from pefthub.trainers.sft import SFTOptions, SFTTrainer
from pefthub.trainers.trl_engine import TRLGRPOOptions, TRLGRPOTrainer, TRLSFTOptions, TRLSFTTrainer

from test_trainers import (METHODS, LettersTask, adapt, budget, frozen_state, one_thread,  # noqa: F401 (autouse)
                           tiny_lm, trainable_state)


def test_trl_trainers_are_registered_as_engines_of_the_built_in_algorithms():
    registry = plugins.trainers()
    assert registry.get("trl-sft").algorithm() == "sft" and registry.get("trl-grpo").algorithm() == "grpo"
    method = plugins.methods().get("lora")()
    method.check_trainer("trl-grpo", "grpo")  # the methods that support grpo support its TRL engine
    with pytest.raises(UnsupportedError, match=r"^method 'lora' does not support trainer 'trl-x' \(a ppo trainer\)"):
        method.check_trainer("trl-x", "ppo")


def _sft_run(trainer_cls, method_name):
    lm = tiny_lm()
    method, model = adapt(lm, method_name)
    options = (SFTOptions if trainer_cls is SFTTrainer else TRLSFTOptions)(micro_batch_size=2)
    outcome = trainer_cls(options).train(
        model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
        budget=budget(steps=3, schedule="cosine", warmup_ratio=0.34), learning_rate=1e-2, seed=0)
    assert outcome.status == "success", outcome.error
    return outcome, trainable_state(model)


@pytest.mark.parametrize("method_name", METHODS)
def test_trl_sft_matches_the_built_in_sft(method_name):
    """Same examples, batches, loss, schedule and AdamW: the same curves and parameters, to float
    rounding (TRL with its default gradient checkpointing, which recomputes the same values)."""
    ours, ours_params = _sft_run(SFTTrainer, method_name)
    trl, trl_params = _sft_run(TRLSFTTrainer, method_name)
    for a, b in zip(ours.curves, trl.curves, strict=True):
        assert a["step"] == b["step"] and a["lr"] == pytest.approx(b["lr"], abs=1e-12)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert ours_params.keys() == trl_params.keys()
    assert all(torch.allclose(ours_params[k], trl_params[k], atol=1e-4) for k in ours_params)
    assert (trl.spent.optimizer_steps, trl.spent.examples) == (3, 12)
    assert trl.spent.tokens_trained == ours.spent.tokens_trained > 0
    assert trl.spent.seconds_train > 0 and trl.spent.train_flops > 0


def test_trl_grpo_raises_mean_reward_and_leaves_frozen_weights_bit_identical():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    frozen = frozen_state(model)
    events = []
    outcome = TRLGRPOTrainer().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                     budget=budget(steps=8), learning_rate=1e-2, seed=0, progress=events.append)
    assert outcome.status == "success", outcome.error
    rewards = [c["reward"] for c in outcome.curves]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:2]) / 2 + 0.3, rewards
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert [e["step"] for e in events] == list(range(1, 9)) and all("reward" in e for e in events)
    assert not base_model(model).is_gradient_checkpointing  # TRL's checkpointing is switched off again


def test_trl_grpo_records_what_it_spent():
    lm = tiny_lm()
    method, model = adapt(lm, "tinylora")
    b = budget(steps=3, batch_size=2, generations=3)
    outcome = TRLGRPOTrainer(TRLGRPOOptions(micro_batch_size=3)).train(
        model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), budget=b, learning_rate=1e-2, seed=0)
    assert outcome.status == "success", outcome.error
    s = outcome.spent
    assert (s.optimizer_steps, s.prompts, s.completions, s.examples) == (3, 6, 18, 0)
    assert 0 < s.tokens_generated <= 18 * 12 and s.tokens_trained == s.tokens_generated
    assert sum(round(c["completion_length"] * 6) for c in outcome.curves) == s.tokens_generated
    assert s.seconds_generation > 0 and s.seconds_train > 0
    assert s.train_flops > 2 * 1e5 * s.tokens_generated
    assert s.zero_advantage_groups == sum(c["zero_advantage_groups"] for c in outcome.curves)
    assert [c["rollout_backend"] for c in outcome.curves] == ["trl-generate"] * 3


def test_a_non_finite_gradient_fails_before_the_optimizer_step():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
    outcome = TRLSFTTrainer().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                    budget=budget(steps=3), learning_rate=1e-2, seed=0)
    assert outcome.status == "failed" and outcome.error == "NaN gradient norm at step 1"
    assert outcome.spent.optimizer_steps == 0 and outcome.curves == []


def test_bad_input_is_a_one_line_error_naming_what_is_wrong():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    train = dict(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), learning_rate=1e-2, seed=0)
    with pytest.raises(ConfigError, match=r"^trainer_options\.micro_batch_size: trl-grpo needs it to divide "
                                          r"batch_size × generations \(16\); got 5$"):
        TRLGRPOTrainer(TRLGRPOOptions(micro_batch_size=5)).train(budget=budget(steps=1), **train)
    with pytest.raises(ConfigError, match=r"^trl-grpo cannot cut prompts: example train-\d+ has \d+ prompt tokens, "
                                          r"more than budget\.max_seq_len − budget\.max_new_tokens = 4$"):
        TRLGRPOTrainer().train(budget=budget(steps=1, max_seq_len=16), **train)
    with pytest.raises(ConfigError, match=r"^budget\.generations: trl-grpo needs at least 2"):
        TRLGRPOTrainer().train(budget=budget(steps=1, generations=1), **train)
    with pytest.raises(ConfigError, match=r"^trainer_options\.loss_type: must be one of dapo, grpo, dr_grpo"):
        TRLGRPOOptions(loss_type="sapo")


def test_trl_grpo_scores_each_completion_against_its_own_example_in_pefthub_order(monkeypatch):
    """TRL sees the prompts in the order pefthub's seeded batch stream draws them, each repeated
    ``generations`` times, and the reward gets the example each completion was sampled for."""
    from pefthub.trainers import trl_engine
    from pefthub.trainers.common import BatchStream

    scored: list[str] = []
    original = trl_engine.score_completions

    def spy(name, fn, texts, rows, step, device):
        scored.extend(ex.id for ex in rows)
        return original(name, fn, texts, rows, step, device)

    monkeypatch.setattr(trl_engine, "score_completions", spy)
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    task, b = LettersTask(), budget(steps=3, batch_size=2, generations=3)
    outcome = TRLGRPOTrainer(TRLGRPOOptions(micro_batch_size=3)).train(
        model=model, tokenizer=lm.tokenizer, method=method, task=task, budget=b, learning_rate=1e-2, seed=5)
    assert outcome.status == "success", outcome.error
    stream = BatchStream(task.examples("train", 6), 2, 5)
    assert scored == [ex.id for _ in range(3) for ex in next(stream) for _ in range(3)]


def test_cli_trainers_lists_each_engine_with_its_algorithm_and_options(capsys):
    import json

    from pefthub.cli import main

    assert main(["trainers", "--json"]) == 0
    listed = {t["name"]: t for t in json.loads(capsys.readouterr().out)}
    assert {n: t["algorithm"] for n, t in listed.items()} == {"sft": "sft", "grpo": "grpo", "trl-sft": "sft",
                                                               "trl-grpo": "grpo"}
    options = {o["name"]: o for o in listed["trl-grpo"]["options"]}
    assert options["gradient_checkpointing"]["default"] is True and options["loss_type"]["help"]
    assert "rollout_backend" in {o["name"] for o in listed["grpo"]["options"]} - set(options)
    assert main(["trainers", "no-such-trainer"]) == 2
    assert "no-such-trainer" in capsys.readouterr().err


def test_a_trl_run_that_ends_short_of_the_budget_is_a_failure():
    """TRL's SFTTrainer runs no step at all when every row is longer than max_length; the engine
    records that as a failed run instead of a success that trained nothing."""
    from pefthub.tasks import DEFAULT_TASK, task_from_config

    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    outcome = TRLSFTTrainer(TRLSFTOptions()).train(
        model=model, tokenizer=lm.tokenizer, method=method, task=task_from_config(dict(DEFAULT_TASK)),
        budget=budget(steps=1, batch_size=2, max_seq_len=160), learning_rate=1e-3, seed=0)
    assert outcome.status == "failed" and outcome.spent.optimizer_steps == 0
    assert outcome.error == "trl-sft ran 0 of the budget's 1 optimizer steps (TRL ended training early)"

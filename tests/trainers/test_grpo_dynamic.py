"""GRPO dynamic sampling (DAPO) and the early stop on collapse: options that stay out of existing
run ids, groups whose rewards are known, the collapse rule on the issue's figures, the result field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pefthub import results, suites
from pefthub.errors import ConfigError
from pefthub.tasks import Example
from pefthub.trainers.grpo import CollapseWatch, GRPOOptions, GRPOTrainer, StepHealth

from test_trainers import LettersTask, adapt, budget, one_thread, tiny_lm  # noqa: F401 (autouse fixture)

REPO = Path(__file__).resolve().parents[2]
NEW_OPTIONS = {"dynamic_sampling", "max_sampling_rounds", "stop_on_collapse", "collapse_patience"}


# ---- options and run identity ------------------------------------------------------------------
def test_committed_quick_runs_keep_their_ids():
    """The chain_sum quick board (cpu-pilots-quick-v1) expands to exactly the committed results' run ids,
    and re-resolving a committed GRPO config gives it back unchanged: the new options are not in it."""
    from pefthub.runner import resolve_config

    committed = {p.stem: results.read_result(p) for p in (REPO / "leaderboards" / "cpu-pilots" / "quick-v1" / "results").glob("*.json")}
    runs = suites.expand(suites.load(REPO / "benchmarks" / "cpu-pilots" / "quick-v1"))
    assert len(runs) == 15 and {r.run_id for r in runs} == set(committed)
    grpo = [doc for doc in committed.values() if doc["config"]["trainer"] == "grpo"]
    assert grpo
    for doc in grpo:
        assert not NEW_OPTIONS & set(doc["config"]["trainer_options"])
        assert results.run_id(resolve_config(doc["config"])) == doc["run_id"]


def test_new_options_appear_only_when_set():
    assert not NEW_OPTIONS & set(GRPOOptions().to_dict())
    assert not NEW_OPTIONS & set(GRPOOptions(dynamic_sampling=False, stop_on_collapse=True).to_dict())
    on = GRPOOptions(dynamic_sampling=True, max_sampling_rounds=3, stop_on_collapse=False).to_dict()
    assert (on["dynamic_sampling"], on["max_sampling_rounds"], on["stop_on_collapse"]) == (True, 3, False)
    assert "collapse_patience" not in on
    assert GRPOOptions.from_dict(on) == GRPOOptions(dynamic_sampling=True, max_sampling_rounds=3,
                                                    stop_on_collapse=False)


@pytest.mark.parametrize("options,field", [
    ({"dynamic_sampling": 1}, "dynamic_sampling"),
    ({"dynamic_sampling": True, "max_sampling_rounds": 0}, "max_sampling_rounds"),
    ({"max_sampling_rounds": 2}, "max_sampling_rounds"),  # changes nothing without dynamic sampling
    ({"stop_on_collapse": False, "collapse_patience": 3}, "collapse_patience"),
    ({"collapse_patience": 0}, "collapse_patience"),
])
def test_new_options_are_validated_naming_the_field(options, field):
    with pytest.raises(ConfigError, match=f"trainer_options.{field}"):
        GRPOOptions(**options)


def test_trl_grpo_does_not_take_dynamic_sampling():
    from pefthub.trainers.trl_engine import TRLGRPOOptions

    with pytest.raises(ConfigError, match="unknown field.*dynamic_sampling"):
        TRLGRPOOptions.from_dict({"dynamic_sampling": True})


# ---- dynamic sampling on groups whose rewards are known ----------------------------------------
class KnownGroupsTask(LettersTask):
    """Prompts whose reward does not depend on the completion: 'easy' ones always 1, 'hard' ones
    always 0 (zero-variance groups), 'mixed' ones 1 on odd-length completions, else 0."""

    name = "known_groups"
    kinds = ["easy", "hard", "hard", "easy", "mixed", "hard", "easy", "mixed", "hard", "hard", "easy", "mixed"]

    def examples(self, split, n=None):
        xs = [Example(id=f"{split}-{i}-{kind}", question=f"Write some letters, please ({i}).", answer=kind,
                      solution="abcdefghij") for i, kind in enumerate(self.kinds)]
        return xs[:n] if n else xs

    def score(self, completion, example):
        if example.answer == "mixed":
            return float(len(completion) % 2)
        return 1.0 if example.answer == "easy" else 0.0


def _train(task, options, **kw):
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    trainer = GRPOTrainer(GRPOOptions(**options))
    return trainer.train(model=model, tokenizer=lm.tokenizer, method=method, task=task, learning_rate=1e-2, seed=0,
                         budget=budget(**kw))


def test_dynamic_sampling_trains_only_on_informative_groups_and_counts_what_it_sampled():
    task = KnownGroupsTask()
    mixed = {ex.id for ex in task.examples("train") if ex.answer == "mixed"}
    seen_trained = []
    original = GRPOTrainer._optimise_parts

    def spy(self, model, method, reference, parts, *args, **kwargs):
        seen_trained.append([ex.id for _, prompts, _ in parts for ex in prompts])
        return original(self, model, method, reference, parts, *args, **kwargs)

    GRPOTrainer._optimise_parts = spy
    try:
        out = _train(task, {"dynamic_sampling": True, "max_sampling_rounds": 3, "stop_on_collapse": False},
                     steps=3, batch_size=2, generations=4, max_new_tokens=8)
    finally:
        GRPOTrainer._optimise_parts = original
    assert out.status == "success", out.error
    s, curves = out.spent, out.curves
    # Only 'mixed' prompts can be informative, and only when their 4 completions' lengths differ in parity.
    assert all(set(ids) <= mixed for ids in seen_trained)
    for c, ids in zip(curves, seen_trained):
        assert c["prompts_trained"] == len(ids) <= 2
        assert 1 <= c["sampling_rounds"] <= 3 and c["prompts_sampled"] == 2 * c["sampling_rounds"]
        # a step stops sampling as soon as it holds batch_size informative groups
        assert c["sampling_rounds"] == 3 or c["prompts_trained"] == 2
        assert c["zero_advantage_groups"] >= c["prompts_sampled"] - c["prompts_trained"] - 1
    assert s.optimizer_steps == 3
    assert s.prompts == sum(c["prompts_sampled"] for c in curves) > s.prompts_trained
    assert s.prompts_trained == sum(c["prompts_trained"] for c in curves) == sum(map(len, seen_trained))
    assert s.completions == 4 * s.prompts
    assert s.tokens_generated == sum(round(c["completion_length"] * 4 * c["prompts_sampled"]) for c in curves)
    assert s.tokens_trained <= s.tokens_generated


def test_without_informative_groups_dynamic_sampling_stops_at_the_cap():
    class AllEqual(KnownGroupsTask):
        kinds = ["easy", "hard"] * 6

    out = _train(AllEqual(), {"dynamic_sampling": True, "max_sampling_rounds": 2}, steps=2, batch_size=2,
                 generations=2, max_new_tokens=6)
    assert out.status == "success", out.error
    assert [c["sampling_rounds"] for c in out.curves] == [2, 2]
    assert [c["prompts_trained"] for c in out.curves] == [0, 0]
    assert (out.spent.prompts, out.spent.prompts_trained, out.spent.tokens_trained) == (8, 0, 0)
    assert out.spent.zero_advantage_groups == 8


def test_without_dynamic_sampling_every_group_trains():
    out = _train(KnownGroupsTask(), {}, steps=2, batch_size=3, generations=2, max_new_tokens=6)
    s = out.spent
    assert (s.prompts, s.prompts_trained, s.completions) == (6, 6, 12)
    assert "sampling_rounds" not in out.curves[0]


def test_dynamic_sampling_with_multi_round_parts_gives_the_gradient_of_one_batch():
    """Training on rows kept from two rounds (each with its own padding) gives the same loss and
    gradient as training on the same rows as one rollout."""
    from pefthub.trainers.common import encode, render_prompt
    from pefthub.trainers.grpo import group_advantages
    from pefthub.generation.rollout import HFGenerateBackend
    from pefthub.trainers.budget import Spent

    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    task = LettersTask()
    prompts = [encode(lm.tokenizer, render_prompt(lm.tokenizer, task.messages(ex))) for ex in task.examples("train", 4)]
    ro = HFGenerateBackend(model, lm.tokenizer, method).generate(prompts, generations=3, max_new_tokens=10,
                                                                 temperature=1.0, seed=0)
    rewards = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 0.2, 0.2, 0.9, 0.3, 0.1, 0.0])
    advantages, _ = group_advantages(rewards, 3, "batch")
    trainer = GRPOTrainer(GRPOOptions(micro_batch_size=4))
    grads, losses = [], []
    for parts in ([(ro, None, rewards)],
                  [(ro.take(torch.arange(0, 6)), None, rewards[:6]), (ro.take(torch.arange(6, 12)), None, rewards[6:])]):
        model.zero_grad(set_to_none=True)
        stats = trainer._optimise_parts(model, method, None, parts, advantages, "none", budget(max_new_tokens=10),
                                        1, 1, Spent())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        losses.append(stats["loss"])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-7, rtol=1e-5) for n in grads[0])


# ---- collapse ----------------------------------------------------------------------------------
def _feed(watch, rows):
    for step, (reward, zero, unanswered) in enumerate(rows, start=1):
        stop = watch.observe(step, StepHealth(reward=reward, zero_share=zero, unanswered_share=unanswered))
        if stop is not None:
            return stop
    return None


def test_a_run_that_degenerates_is_stopped_as_collapsed():
    """The issue's collapsed run: reward ~0.03 throughout, ~90% of groups at zero advantage, and
    completions that stop giving an answer after a healthy start."""
    start = [(0.03, 0.875, 0.15), (0.03, 0.875, 0.20)]
    collapsing = [(0.03, 0.875, 0.45), (0.0, 1.0, 0.8), (0.03, 0.875, 0.9), (0.0, 1.0, 0.95), (0.03, 0.875, 1.0),
                  (0.0, 1.0, 1.0), (0.0, 1.0, 1.0)]
    stop = _feed(CollapseWatch(patience=5), start + collapsing)
    assert stop is not None and stop["reason"] == "collapsed"
    assert stop["step"] == 7  # steps 3-7 average 82% unanswered, past the half-way mark of 17.5% -> 100%
    assert "\n" not in stop["detail"] and "zero advantage" in stop["detail"]


def test_a_hard_task_with_many_zero_advantage_groups_from_the_start_is_not_collapsed():
    """Healthy on a hard task: most groups teach nothing and reward stays low, but the completions
    keep answering as they did at the start."""
    rows = [(0.02, 0.95, 0.30), (0.03, 0.9, 0.35)] + [(0.03, 0.95, 0.33)] * 30
    assert _feed(CollapseWatch(patience=5), rows) is None


def test_longer_completions_with_rising_reward_are_not_collapsed():
    rows = [(0.1, 0.8, 0.1), (0.1, 0.8, 0.1)] + [(0.3, 0.6, 0.8)] * 10
    assert _feed(CollapseWatch(patience=5), rows) is None


def test_a_model_that_never_answers_is_not_called_collapsed():
    rows = [(0.0, 1.0, 1.0)] * 20  # nothing to lose: no degeneration relative to its own start
    assert _feed(CollapseWatch(patience=5), rows) is None


class DegeneratingTask(LettersTask):
    """Completions 'answer' during the first ``healthy_calls`` extractions, then none does; the
    reward is 0 throughout (every group at zero advantage)."""

    healthy_calls = 2 * 4 * 2  # two steps of 4 prompts x 2 generations

    def __init__(self):
        super().__init__()
        self.calls = 0

    def extract(self, completion):
        self.calls += 1
        return completion if self.calls <= self.healthy_calls else None

    def score(self, completion, example):
        return 0.0


def test_grpo_stops_early_when_its_rollouts_degenerate():
    out = _train(DegeneratingTask(), {"collapse_patience": 2}, steps=8, batch_size=4, generations=2,
                 max_new_tokens=6)
    assert out.status == "success", out.error
    assert out.stopped_early is not None and out.stopped_early["reason"] == "collapsed"
    assert out.stopped_early["step"] == 4 == out.spent.optimizer_steps == len(out.curves)
    assert [c["unanswered_completions"] for c in out.curves][2:] == [8, 8]


def test_the_early_stop_can_be_turned_off():
    out = _train(DegeneratingTask(), {"stop_on_collapse": False}, steps=8, batch_size=4, generations=2,
                 max_new_tokens=6)
    assert out.stopped_early is None and out.spent.optimizer_steps == 8


def test_the_runner_records_an_early_stop_and_still_evaluates(tmp_path, monkeypatch):
    from pefthub.runner import run_experiment
    from test_runner import config

    def degenerate(self, **kwargs):
        kwargs["curves"].append({"step": 1})
        kwargs["spent"].optimizer_steps = 1
        return {"reason": "collapsed", "step": 1, "detail": "steps 1-1: everything at the token cap"}

    monkeypatch.setattr(GRPOTrainer, "run_steps", degenerate)
    doc = run_experiment(config(), results_dir=tmp_path)
    assert doc["status"] == "success", doc["error"]
    stored = results.read_result(results.result_path(tmp_path, doc["run_id"]))
    assert stored["training"] == {"stopped_early": {"reason": "collapsed", "step": 1,
                                                    "detail": "steps 1-1: everything at the token cap"}}
    assert stored["evaluation"]["test"]["n"] == 3
    plain = dict(stored)
    plain["training"] = {"stopped_early": {"reason": "collapsed", "step": "one", "detail": ""}}
    with pytest.raises(results.InvalidResult, match="training.stopped_early"):
        results.validate(plain)

"""The generic ``reasoning_gym`` task: splits, scoring with the dataset's own ``score_answer``,
extraction, and one-line errors for datasets it cannot serve."""

from __future__ import annotations

import pytest

from pefthub.errors import ConfigError
from pefthub.tasks import get_task, task_from_config

LEGS = {"dataset": "leg_counting", "options": {"min_animals": 1, "max_animals": 2},
        "test_size": 20, "validation_size": 10, "train_size": 30}


@pytest.fixture(scope="module")
def legs():
    return get_task("reasoning_gym", **LEGS)


def test_splits_are_disjoint_deterministic_and_short(legs):
    splits = {s: legs.examples(s) for s in ("test", "validation", "train")}
    assert [len(v) for v in splits.values()] == [20, 10, 30]
    questions = [ex.question for v in splits.values() for ex in v]
    assert len(set(questions)) == len(questions)
    again = get_task("reasoning_gym", **LEGS).examples("train")
    assert [ex.question for ex in again] == [ex.question for ex in splits["train"]]
    assert all(0 < len(ex.answer) <= 40 and "\n" not in ex.answer for ex in splits["test"])
    assert legs.config() == {"name": "reasoning_gym", "seed": 0, "test_size": 20, "validation_size": 10,
                             "train_size": 30, "dataset": "leg_counting",
                             "options": {"min_animals": 1, "max_animals": 2}}
    assert task_from_config(legs.config()).examples("test", 3) == splits["test"][:3]


def test_scored_by_the_datasets_own_score_answer(legs):
    import reasoning_gym

    scorer = reasoning_gym.create_dataset("leg_counting", seed=0, size=1, min_animals=1, max_animals=2)
    for ex in legs.examples("test"):
        wrong = str(int(ex.answer) + 2)
        assert legs.score(legs.target(ex), ex) == 1.0
        assert legs.score(f"I count them.\nThe answer is **{ex.answer}**. Done.", ex) == 1.0
        assert legs.score(f"The answer is {wrong}.", ex) == 0.0
        # partial credit from reasoning-gym (gold inside a longer answer) is not a correct answer
        assert 0 < scorer.score_answer(f"{ex.answer} legs", {"answer": ex.answer}) < 1
        assert legs.score(f"The answer is {ex.answer} legs", ex) == 0.0


def test_extraction_strict_then_last_number_then_last_line(legs):
    assert legs.extract_strict("so 4 + 4\nThe answer is: 8.") == "8"
    assert legs.extract_strict("8 legs") is None
    assert legs.extract("4 + 4 = 8 legs") == "8"
    words = get_task("reasoning_gym", dataset="spell_backward", test_size=5, validation_size=0, train_size=0)
    assert words.extract("Backwards it reads\n`tac`") == "tac"
    assert words.extract_strict("The answer is \"tac\".") == "tac"
    ex = words.examples("test")[0]
    assert words.score(f"The answer is {ex.answer}.", ex) == 1.0
    assert words.score(f"The answer is {ex.answer[::-1]}x.", ex) == 0.0


def test_grpo_rewards_with_the_tasks_scorer(legs):
    grpo = pytest.importorskip("pefthub.trainers.grpo")
    name, fn = grpo.resolve_reward(legs, "")
    examples = legs.examples("test", 4)
    completions = [f"The answer is {ex.answer}." if i % 2 else "The answer is 1." for i, ex in enumerate(examples)]
    assert name == "reasoning_gym.score"
    assert fn(completions=completions, example=examples) == [legs.score(c, ex) for c, ex in zip(completions, examples)]


@pytest.mark.parametrize("params, message", [
    ({"dataset": "leg_count"}, r"parameter dataset='leg_count' is not a reasoning-gym dataset \(did you mean leg_counting"),
    ({"dataset": "number_sorting"}, "'number_sorting' scores answers with item metadata"),
    ({"dataset": "modulo_grid"}, "'modulo_grid' has no one-line answers of at most 40 characters"),
    ({"dataset": "leg_counting", "options": {"legs": 3}}, "invalid options for reasoning-gym 'leg_counting' \\(legs=3\\)"),
    ({"dataset": "simple_equations", "options": {"operators": ["+"]}},
     "'simple_equations' cannot generate items with options .*weights"),
    ({"dataset": "gcd", "options": {"seed": 3}}, "parameter options=.* may not set seed or size"),
    ({"dataset": 3}, r"parameter dataset: must be a string \(got 3\)"),
])
def test_bad_settings_are_one_line_config_errors(params, message):
    with pytest.raises(ConfigError, match=message) as info:
        get_task("reasoning_gym", **params)
    assert "\n" not in str(info.value)


def test_a_scorer_that_raises_on_malformed_text_counts_it_wrong():
    task = get_task("reasoning_gym", dataset="prime_factorization", options={"min_value": 2, "max_value": 100},
                    test_size=5, validation_size=0, train_size=0)
    ex = task.examples("test")[0]
    assert task.score("The answer is not 2.", ex) == 0.0  # reasoning-gym's scorer raises ValueError on it
    assert task.score(f"The answer is {ex.answer}.", ex) == 1.0

"""Reward functions: TRL's signature, both completion forms, tolerance, format reward off by default."""

from __future__ import annotations

import pytest

from pefthub import plugins
from pefthub.errors import ConfigError
from pefthub.rewards import reward_for_task
from pefthub.tasks import get_task
from pefthub.tasks.answers import NUMERIC, completion_text, last_boxed


def test_builtin_rewards_register_through_the_plugin_hook():
    registry = plugins.rewards()
    for name in ("exact_match", "math_verify", "format_answer", "format_boxed"):
        assert name in registry and registry.owner[name] == "rewards"


def test_exact_match_follows_trls_signature_and_ignores_other_columns():
    reward = plugins.rewards().get("exact_match")
    completions = ["3 + 4 = 7.\nThe answer is 7.", "The answer is 8.", "I think it is 7", "no idea"]
    values = reward(completions=completions, answer=["7", "7", "7", "7"], prompts=["p"] * 4,
                    question=["q"] * 4, trainer_state=None)
    assert values == [1.0, 0.0, 1.0, 0.0]
    assert all(isinstance(v, float) for v in values)


def test_conversational_completions_are_scored_like_strings():
    reward = plugins.rewards().get("exact_match")
    conversational = [[{"role": "assistant", "content": "The answer is 12."}],
                      [{"role": "user", "content": "The answer is 12."}, {"role": "assistant", "content": "It is 5."}]]
    assert reward(completions=conversational, answer=["12", "12"]) == [1.0, 0.0]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "hi"}]}]) == "hi"


@pytest.mark.parametrize("completion,gold,expected", [
    ("The answer is 1,200.", "1200", 1.0),
    ("The answer is $1200.00", "1200", 1.0),
    ("The answer is 0.30000000000000004.", "0.3", 1.0),  # relative tolerance 1e-6
    ("The answer is 0.3001.", "0.3", 0.0),
    ("The answer is -4.", "-4", 1.0),
    ("The answer is **42**.", "42", 1.0),
    ("The answer is 7. Check: 7 + 1 = 8", "7", 1.0),  # the answer line wins over later numbers
    ("5 - 3 = 2, 2 - 6 = -4", "-4", 1.0),  # no answer line: the last number
    ("", "0", 0.0),
])
def test_numeric_exact_match(completion, gold, expected):
    assert plugins.rewards().get("exact_match")(completions=[completion], answer=[gold]) == [expected]


def test_strict_and_flexible_extraction():
    assert NUMERIC.extract_strict("so 3 + 4 = 7") is None
    assert NUMERIC.extract("so 3 + 4 = 7") == "7"
    assert NUMERIC.extract_strict("The final answer is: 1,024.") == "1024"


def test_math_verify_reward_on_latex_answers():
    reward = plugins.rewards().get("math_verify")
    completions = ["so $\\boxed{\\frac{1}{2}}$", "\\boxed{0.5}", "\\boxed{\\frac{1}{3}}", "I don't know"]
    assert reward(completions=completions, answer=["\\frac{1}{2}"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert last_boxed("a \\boxed{x} then \\boxed{\\frac{a}{b}} end") == "\\frac{a}{b}"


def test_format_rewards_check_form_not_correctness():
    assert plugins.rewards().get("format_answer")(completions=["The answer is 3.", "3"]) == [1.0, 0.0]
    assert plugins.rewards().get("format_boxed")(completions=["\\boxed{9}", "9"]) == [1.0, 0.0]


def test_format_reward_is_off_by_default():
    task = get_task("chain_sum")
    assert [name for name, _ in reward_for_task(task)] == ["exact_match"]
    assert [name for name, _ in reward_for_task(task, with_format=True)] == ["exact_match", "format_answer"]
    assert get_task("math500").reward == "math_verify"


def test_reward_without_gold_column_is_a_clear_error():
    with pytest.raises(ConfigError, match="reward 'exact_match' needs an 'answer' column"):
        plugins.rewards().get("exact_match")(completions=["The answer is 1."])


def test_reward_equals_task_score_on_generated_examples():
    task = get_task("basic_arithmetic", test_size=30, validation_size=0, train_size=0)
    examples = task.examples("test")
    completions = [task.target(ex) if i % 3 else f"The answer is {int(ex.answer) + 1}." for i, ex in enumerate(examples)]
    reward = plugins.rewards().get(task.reward)
    assert reward(completions=completions, answer=[ex.answer for ex in examples]) == \
        [task.score(c, ex) for c, ex in zip(completions, examples)]


def test_grpo_trainer_resolves_the_tasks_registered_reward():
    grpo = pytest.importorskip("pefthub.trainers.grpo")
    name, fn = grpo.resolve_reward(get_task("chain_sum"), "")
    assert name == "exact_match" and fn is plugins.rewards().get("exact_match")

"""Task registry, parameters, determinism, disjoint splits and correct worked solutions."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pefthub import plugins
from pefthub.errors import ConfigError
from pefthub.tasks import DEFAULT_TASK, SPLITS, Task, default_task, get_task, task_from_config
from pefthub.tasks.answers import NUMERIC

SMALL = {"test_size": 40, "validation_size": 15, "train_size": 60}


def questions(task: Task, split: str) -> set[str]:
    return {ex.question for ex in task.examples(split)}


def test_builtin_tasks_register_through_the_plugin_hook():
    registry = plugins.tasks()
    for name in ("chain_sum", "basic_arithmetic", "gsm_symbolic", "gsm8k", "math500"):
        assert name in registry
        assert registry.owner[name].startswith("tasks_")  # registered by a built-in plugin module
        assert issubclass(registry.get(name), Task)


def test_unknown_task_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"unknown task 'sudoku' \(known: .*chain_sum"):
        get_task("sudoku")


@pytest.mark.parametrize("name,params,match", [
    ("chain_sum", {"min_terms": 0}, r"task 'chain_sum': parameter min_terms: must be a positive integer \(got 0\)"),
    ("chain_sum", {"max_digits": 1, "min_digits": 3}, r"task 'chain_sum': parameter max_digits=1 must be >= min_digits"),
    ("chain_sum", {"colour": "red"}, r"task 'chain_sum': unknown parameter\(s\) colour \(known: .*min_terms"),
    ("chain_sum", {"max_terms": "3"}, r"task 'chain_sum': parameter max_terms: must be a positive integer \(got '3'\)"),
    ("chain_sum", {"allow_negation": 1}, r"parameter allow_negation: must be true or false \(got 1\)"),
    ("basic_arithmetic", {"operators": ["+", "^"]}, r"task 'basic_arithmetic': parameter operators: must be a list of \+, -, \*, / \(got \['\+', '\^'\]\)"),
    ("basic_arithmetic", {"whitespace": "tabs"}, r"parameter whitespace: must be one of single, no_space, random \(got 'tabs'\)"),
    ("gsm_symbolic", {"difficulty": 2.0}, r"task 'gsm_symbolic': parameter difficulty=2.0 is not supported"),
    ("gsm8k", {"data_files": {"test": "x.txt"}}, r"task 'gsm8k': parameter data_files=.*supported file types"),
    ("math500", {"levels": [0]}, r"task 'math500': parameter levels: must be a list of 1, 2, 3, 4, 5 \(got \[0\]\)"),
])
def test_invalid_parameters_name_the_task_and_the_parameter(name, params, match):
    with pytest.raises(ConfigError, match=match) as info:
        get_task(name, **params)
    assert "\n" not in str(info.value)


def test_generator_rejections_become_one_line_naming_the_task(monkeypatch):
    """A constraint only reasoning-gym knows (its own assertion) still ends as one ConfigError line."""
    import reasoning_gym

    def refuse(name, **kwargs):
        raise AssertionError("max_terms must be >= min_terms")

    monkeypatch.setattr(reasoning_gym, "create_dataset", refuse)
    with pytest.raises(ConfigError, match=r"task 'chain_sum': invalid generator parameters for reasoning-gym "
                                          r"'chain_sum' \(.*\): max_terms must be >= min_terms"):
        get_task("chain_sum")


@pytest.mark.parametrize("name", ["chain_sum", "basic_arithmetic", "gsm_symbolic"])
def test_procedural_splits_are_deterministic_and_disjoint(name):
    a, b = get_task(name, **SMALL), get_task(name, **SMALL)
    for split in SPLITS:
        assert a.examples(split) == b.examples(split)
    test, val, train = (questions(a, s) for s in ("test", "validation", "train"))
    assert (len(test), len(val), len(train)) == (40, 15, 60)  # distinct within each split too
    assert not test & val and not test & train and not val & train
    other_seed = get_task(name, **SMALL, seed=1)
    assert questions(other_seed, "test") != test


def test_first_n_examples_are_a_prefix_and_ids_name_the_split():
    task = get_task("chain_sum", **SMALL)
    ten = task.examples("test", 10)
    assert get_task("chain_sum", **SMALL).examples("test", 4) == ten[:4]
    assert [ex.id for ex in ten[:3]] == ["chain_sum-test-0", "chain_sum-test-1", "chain_sum-test-2"]
    assert task.examples("train", 2)[0].id == "chain_sum-train-0"
    assert task.examples("test", 0) == []


def test_exhausted_question_space_gives_a_clear_empty_split_error():
    # one-digit two-term sums: only 10 * 10 * 2 = 200 distinct questions exist
    task = get_task("chain_sum", min_terms=2, max_terms=2, min_digits=1, max_digits=1, test_size=150,
                    validation_size=100)
    assert len(task.examples("test")) == 150
    assert 0 < len(task.examples("validation")) <= 50
    with pytest.raises(ConfigError, match=r"task 'chain_sum': the train split is empty: these parameters give only "
                                          r"\d+ distinct questions.*widen the difficulty ranges"):
        task.examples("train", 8)


def test_unknown_split_and_bad_counts_are_rejected():
    task = get_task("chain_sum", **SMALL)
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        task.examples("dev")
    with pytest.raises(ConfigError, match="non-negative integer"):
        task.examples("test", -1)


@pytest.mark.parametrize("name,params", [
    ("chain_sum", {}),
    ("chain_sum", {"allow_negation": True}),
    ("basic_arithmetic", {}),
    ("basic_arithmetic", {"whitespace": "no_space", "format_style": "natural"}),
])
def test_arithmetic_gold_answers_and_worked_solutions_are_exactly_right(name, params):
    task = get_task(name, **SMALL, **params)
    for ex in task.examples("test") + task.examples("train"):
        expression = ex.metadata["expression"]
        # independent check: evaluate with exact fractions (true division, not the generator's floor)
        exact = eval(expression.replace("/", "*Fraction(1)/"), {"Fraction": Fraction})  # noqa: S307
        assert exact == Fraction(int(ex.answer)), (expression, ex.answer)
        target = task.target(ex)
        assert target.endswith(f"The answer is {ex.answer}.")
        assert task.extract_strict(target) == ex.answer and task.score(target, ex) == 1.0
        # every step of the worked solution is itself correct
        for part in target.splitlines()[0].rstrip(".").split(" = ") if "=" in target else []:
            assert eval(part.replace("/", "*Fraction(1)/"), {"Fraction": Fraction}) == exact  # noqa: S307


def test_gsm_symbolic_targets_are_the_templates_solutions_ending_in_the_gold_answer():
    task = get_task("gsm_symbolic", **SMALL)
    for ex in task.examples("test"):
        target = task.target(ex)
        assert "####" not in target
        assert target.endswith(f"\nThe answer is {ex.answer}.")
        assert len(target.splitlines()) >= 2  # reasoning, then the answer line
        assert task.score(target, ex) == 1.0


def test_messages_are_system_instruction_plus_question():
    task = get_task("chain_sum", **SMALL)
    ex = task.examples("test", 1)[0]
    messages = task.messages(ex)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "The answer is N." in messages[0]["content"]
    assert messages[1]["content"] == ex.question


def test_config_holds_every_parameter_and_rebuilds_the_same_task():
    task = get_task("basic_arithmetic", **SMALL, operators=["+", "-"])
    config = task.config()
    assert config["name"] == "basic_arithmetic" and config["operators"] == ["+", "-"]
    assert config["test_size"] == 40 and "allow_parentheses" in config
    again = task_from_config(config)
    assert again.examples("test") == task.examples("test")


def test_default_task_is_registered_and_cheap_to_build():
    task = default_task()
    assert task.name == DEFAULT_TASK["name"]
    assert {k: v for k, v in task.config().items() if k in DEFAULT_TASK} == DEFAULT_TASK
    assert len(task.examples("test", 400)) == 400  # the documented measurement uses 400 test problems
    assert all(task.score(task.target(ex), ex) == 1.0 for ex in task.examples("train", 50))


def test_answer_format_is_shared_by_the_numeric_tasks():
    for name in ("chain_sum", "basic_arithmetic", "gsm_symbolic", "gsm8k"):
        assert plugins.tasks().get(name).answer_format is NUMERIC


def test_reworded_expressions_stay_in_one_split():
    """basic_arithmetic's natural wording gives one expression several question texts; splits are
    disjoint by expression, not only by text."""
    task = get_task("basic_arithmetic", **SMALL, format_style="natural", min_terms=2, max_terms=2, max_digits=1,
                    operators=["+"], allow_parentheses=False, allow_negation=False)
    expressions = {split: ["".join(ex.metadata["expression"].split()) for ex in task.examples(split)]
                   for split in SPLITS}
    assert len(set(expressions["test"])) == len(expressions["test"]) == 40
    assert not set(expressions["test"]) & set(expressions["train"])
    assert not set(expressions["validation"]) & set(expressions["train"] + expressions["test"])
    assert len({ex.question.split()[0] for ex in task.examples("test")}) > 1  # the wording does vary

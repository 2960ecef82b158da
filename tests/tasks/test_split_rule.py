"""The procedural tasks' split rules: ``hash`` gives train, validation and test one difficulty mix
(a chi-square test on their stratum counts), ``stream`` (the default) keeps every committed config,
and both stay disjoint and deterministic."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import chi2_contingency

from pefthub.errors import ConfigError
from pefthub.tasks import DEFAULT_TASK, get_task, strata_of

SIZES = {"test_size": 400, "validation_size": 200, "train_size": 2000}
#: chain_sum 2-3 one-digit terms: 200 two-term questions among ~4,000 three-term ones.
CHAIN_SUM = {"name": "chain_sum", "min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}
#: aiw with up to 3 entities: about 1,500 distinct questions in 2,000 draws, three task types.
AIW = {"name": "reasoning_gym", "dataset": "aiw", "options": {"max_entities": 3}}
#: Below this p the splits' difficulty mixes differ by more than sampling noise.
ALPHA = 0.01


def _mix_p(config: dict, split_rule: str) -> float:
    """p of the chi-square test of independence between split and stratum (3 splits x strata)."""
    task = get_task(**config, **SIZES, split_rule=split_rule)
    counts = {split: Counter(task.stratum(ex) for ex in task.examples(split))
              for split in ("test", "validation", "train")}
    assert {split: sum(c.values()) for split, c in counts.items()} == \
        {"test": 400, "validation": 200, "train": 2000}
    strata = sorted(set().union(*counts.values()))
    assert len(strata) >= 2 and None not in strata
    return chi2_contingency([[c[s] for s in strata] for c in counts.values()])[1]


@pytest.mark.parametrize("config", [CHAIN_SUM, AIW], ids=["chain_sum", "aiw"])
def test_hash_rule_gives_every_split_the_same_difficulty_mix(config):
    assert _mix_p(config, "hash") > ALPHA


def test_the_v2_boards_own_splits_share_one_mix():
    """cpu-paper-shape-v2's task at its own sizes (400 test, 200 validation, train up to 20,000: the distinct
    questions run out near 11,000): the three splits' task-type mixes agree within sampling noise."""
    from pefthub import suites

    def mix_p(config: dict) -> float:
        task = get_task(**config)
        counts = {split: Counter(task.stratum(ex) for ex in task.examples(split))
                  for split in ("test", "validation", "train")}
        assert (sum(counts["test"].values()), sum(counts["validation"].values())) == (400, 200)
        assert sum(counts["train"].values()) > 10_000
        strata = sorted(set().union(*counts.values()))
        return chi2_contingency([[c[s] for s in strata] for c in counts.values()])[1]

    config = dict(suites.load(Path(__file__).resolve().parents[2] / "benchmarks" / "cpu-paper-shape-v2").task)
    assert config["split_rule"] == "hash" and mix_p(config) > ALPHA
    assert mix_p(dict(config, split_rule="stream")) < 1e-6     # the default rule, at the same sizes, fails it


@pytest.mark.parametrize("config", [CHAIN_SUM, AIW], ids=["chain_sum", "aiw"])
def test_stream_rule_fails_the_same_check(config):
    # The check has power: the default rule hands the small sub-space to test and validation.
    assert _mix_p(config, "stream") < 1e-6


def test_hash_rule_is_disjoint_deterministic_and_prefix_stable():
    task = get_task(**CHAIN_SUM, **SIZES, split_rule="hash")
    again = get_task(**CHAIN_SUM, **SIZES, split_rule="hash")
    keys = {}
    for split in ("test", "validation", "train"):
        examples = task.examples(split)
        assert [(e.id, e.question, e.answer) for e in examples] == \
            [(e.id, e.question, e.answer) for e in again.examples(split)]
        assert [e.id for e in examples] == [f"chain_sum-{split}-{i}" for i in range(len(examples))]
        assert task.examples(split, 50) == examples[:50]
        keys[split] = {task.dedupe_key(e) for e in examples}
        assert len(keys[split]) == len(examples)
    assert not keys["test"] & keys["validation"] and not keys["test"] & keys["train"] \
        and not keys["validation"] & keys["train"]
    # Another seed deals other questions to test.
    other = get_task(**CHAIN_SUM, **SIZES, split_rule="hash", seed=1)
    assert {task.dedupe_key(e) for e in other.examples("test")} != keys["test"]


def test_split_rule_enters_the_config_only_when_not_default():
    assert "split_rule" not in get_task(**DEFAULT_TASK).config()
    assert "split_rule" not in get_task(**DEFAULT_TASK, split_rule="stream").config()
    assert get_task(**DEFAULT_TASK, split_rule="hash").config()["split_rule"] == "hash"
    assert "split_rule" not in get_task(**AIW).config()
    with pytest.raises(ConfigError, match=r"parameter split_rule: must be one of stream, hash \(got 'random'\)"):
        get_task(**DEFAULT_TASK, split_rule="random")


def test_strata_strings():
    chain = get_task(**CHAIN_SUM, test_size=50)
    assert {chain.stratum(e) for e in chain.examples("test")} == {"2 terms", "3 terms"}
    arithmetic = get_task(name="basic_arithmetic", min_terms=2, max_terms=4, max_digits=1, test_size=60)
    assert {arithmetic.stratum(e) for e in arithmetic.examples("test")} == {"2 terms", "3 terms", "4 terms"}
    aiw = get_task(**AIW, test_size=60)
    assert {aiw.stratum(e) for e in aiw.examples("test")} == {"siblings", "friends", "colleagues"}
    # A dataset whose items carry neither a task type nor a level of their own has no strata.
    plain = get_task(name="reasoning_gym", dataset="leg_counting", test_size=10)
    assert {plain.stratum(e) for e in plain.examples("test")} == {None}


def test_strata_of_regenerates_committed_items():
    task = get_task(**DEFAULT_TASK)
    examples = task.examples("test", 20)
    by_id = {e.id: task.stratum(e) for e in examples}
    assert strata_of(dict(DEFAULT_TASK), "test", ["chain_sum-test-12", "chain_sum-test-3"]) == \
        {"chain_sum-test-12": by_id["chain_sum-test-12"], "chain_sum-test-3": by_id["chain_sum-test-3"]}
    assert set(by_id.values()) == {"2 terms", "3 terms"}
    hashed = get_task(**DEFAULT_TASK, split_rule="hash", train_size=100)
    assert strata_of(hashed.config(), "validation", ["chain_sum-validation-5"]) == \
        {"chain_sum-validation-5": hashed.stratum(hashed.examples("validation")[5])}
    assert strata_of(task, "test", []) == {}
    with pytest.raises(ConfigError, match="has no item 'chain_sum-test-100000'"):
        strata_of(task, "test", ["chain_sum-test-100000"])
    with pytest.raises(ConfigError, match="has no item 'other-7'"):
        strata_of(task, "test", ["other-7"])

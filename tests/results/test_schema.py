"""The one config schema: its defaults reach every reader, and committed run ids never move."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import pytest

from pefthub import runner, schema, suites
from pefthub.cli import build_parser
from pefthub.errors import ConfigError
from pefthub.results import canonical_json, run_id
from pefthub.schema import Budget, Evaluation

REPO = Path(__file__).resolve().parents[2]
COMMITTED = sorted([*REPO.glob("leaderboards/*/results/*.json"), *REPO.glob("leaderboards/*/*/results/*.json")])

SUITE = """
model = "tiny-random"
[task]
name = "basic_arithmetic"
[budget]
steps = 2
[grid]
methods = ["lora"]
learning_rates = [1e-3]
"""


def _field(cls: type, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _readers(tmp_path: Path) -> dict[str, tuple]:
    """(budget batch size, eval max_new_tokens) as suites, the runner and `pefthub train` see them."""
    (tmp_path / "suite.toml").write_text(textwrap.dedent(SUITE))
    suite = suites.load(tmp_path)
    prepared = runner.prepare({"model": "tiny-random", "method": "lora", "trainer": "sft",
                               "task": {"name": "basic_arithmetic"}, "budget": {"steps": 2}, "eval": {}})
    args = build_parser().parse_args(["train"])
    return {"suite": (suite.budget["batch_size"], suite.eval["max_new_tokens"]),
            "runner": (prepared.budget.batch_size, prepared.evaluation["max_new_tokens"]),
            "cli": (args.batch_size, args.eval_max_new_tokens)}


def test_a_default_changed_in_the_schema_changes_everywhere(tmp_path, monkeypatch):
    before = _readers(tmp_path)
    assert set(before.values()) == {(_field(Budget, "batch_size").default,
                                     _field(Evaluation, "max_new_tokens").default)}
    monkeypatch.setattr(_field(Budget, "batch_size"), "default", 3)
    monkeypatch.setattr(_field(Evaluation, "max_new_tokens"), "default", 17)
    assert set(_readers(tmp_path).values()) == {(3, 17)}


def test_a_bound_and_its_message_come_from_the_schema():
    with pytest.raises(ConfigError, match=r"^eval\.validation_limit: must be a non-negative integer \(got -1\)$"):
        Evaluation.from_dict({"validation_limit": -1})
    with pytest.raises(ConfigError, match=r"^config\.eval\.limit: must be a positive integer \(got 0\)$"):
        runner.prepare({"model": "tiny-random", "method": "base", "trainer": "none",
                        "task": {"name": "basic_arithmetic"}, "eval": {"limit": 0}})
    with pytest.raises(ConfigError, match=r"budget\.warmup_ratio: must be a number in \[0, 1\) \(got 1\.0\)$"):
        Budget.from_dict({"warmup_ratio": 1.0})
    with pytest.raises(ConfigError, match=r"^budget: unknown field\(s\) stepz \(known: batch_size, "):
        Budget.from_dict({"stepz": 1})


def test_floats_given_as_integers_are_one_setting():
    assert Budget.from_dict({"warmup_ratio": 0}).to_dict() == Budget.from_dict({"warmup_ratio": 0.0}).to_dict()
    assert isinstance(Budget.from_dict({"warmup_ratio": 0}).warmup_ratio, float)
    assert Evaluation.from_dict({"limit": None}).limit is None  # the whole split


def test_committed_results_keep_their_run_ids():
    assert COMMITTED, "no committed result files found"
    for path in COMMITTED:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert run_id(doc["config"]) == doc["run_id"] == path.name.removesuffix(".json"), path


def test_the_runner_resolves_committed_configs_to_themselves():
    """What `pefthub train` hashes for a committed run's settings is that run's config, byte for byte
    (the base row and one run per trainer; expanding a committed suite checks every run, in
    test_bench_cli.py)."""
    configs = [json.loads(path.read_text(encoding="utf-8"))["config"] for path in COMMITTED]
    picked = {config["trainer"]: config for config in configs}
    assert {"none", "sft", "grpo"} <= set(picked)
    for config in picked.values():
        assert canonical_json(runner.resolve_config(config)) == canonical_json(config), config


def test_schema_fields_all_carry_help():
    for cls in (Budget, Evaluation):
        assert all(help for _, help, _ in schema.field_help(cls)), cls

"""``grid.exclude``: rows a suite names in its grid but does not run; the other rows and every run id are
unchanged, and a bad entry is one line naming what is wrong."""

from __future__ import annotations

import re

import pytest

from pefthub import suites
from pefthub.commands.bench_command import _planned_runs
from pefthub.errors import ConfigError
from test_bench_cli import tiny_suite

GRID = """
methods = ["lora", "tinylora"]
trainers = ["sft", "grpo"]
seeds = [0, 1]
tune_on_first_seed = true
learning_rates = [1e-3, 1e-2]
"""
PRIMARY = 'primary = ["tinylora/grpo - tinylora/sft"]\npositive_control = "lora/sft"'


def test_excluded_rows_do_not_run_and_the_others_keep_their_ids(tmp_path):
    plain = suites.load(tiny_suite(tmp_path / "a", GRID, extra=PRIMARY))
    suite = suites.load(tiny_suite(tmp_path / "b", GRID + 'exclude = ["lora/grpo"]', extra=PRIMARY))
    assert suite.exclude == ["lora/grpo"] and plain.exclude == []
    ran, all_runs = suites.expand(suite), suites.expand(plain)
    assert {e.group_label for e in ran} == {e.group_label for e in all_runs} - {"lora/grpo"}
    assert [e.run_id for e in ran] == [e.run_id for e in all_runs if e.group_label != "lora/grpo"]
    assert _planned_runs(suite, 2, "lora/grpo") == 0 and _planned_runs(plain, 2, "lora/grpo") == 2 + 1
    assert _planned_runs(suite, 2, "lora/sft") == 3


@pytest.mark.parametrize("exclude, message", [
    ('["vera/grpo"]', r"grid.exclude: 'vera/grpo' is not a row of this suite \(rows: lora/sft, lora/grpo, "),
    ('["lora/grpo", "lora/grpo"]', r"grid.exclude: has duplicates"),
    ('["tinylora/grpo"]', r"grid.exclude: 'tinylora/grpo' is declared in primary or positive_control"),
    ('["lora/sft"]', r"grid.exclude: 'lora/sft' is declared in primary or positive_control"),
    ('"lora/grpo"', r"grid.exclude: must be a"),
])
def test_bad_exclusions_are_one_line(tmp_path, exclude, message):
    with pytest.raises(ConfigError, match=message) as err:
        suites.load(tiny_suite(tmp_path, GRID + f"exclude = {exclude}", extra=PRIMARY))
    assert "\n" not in str(err.value)


def test_excluding_every_row_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="grid.exclude: excludes every row of the grid"):
        suites.load(tiny_suite(tmp_path, GRID + 'exclude = ["lora/sft", "lora/grpo", "tinylora/sft", '
                                                '"tinylora/grpo"]'))


def test_bench_and_plan_name_the_rows_not_run(tmp_path, capsys):
    from pefthub.cli import main

    path = tiny_suite(tmp_path, GRID + 'exclude = ["lora/grpo"]', extra=PRIMARY)
    results = tmp_path / "results"
    assert main(["bench", str(path), "--dry-run", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "not run (grid.exclude): lora/grpo" in out and "tinylora/grpo/lr" in out
    assert not re.search(r"(?<!tiny)lora/grpo/lr", out)
    assert main(["plan", str(path)]) == 0
    assert "not run (grid.exclude): lora/grpo" in capsys.readouterr().out

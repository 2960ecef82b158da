"""``grid.primary_seeds``: the rows of a suite's primary comparison run more seeds than the rest, tuned on
the same first seed; the other rows and every run id are unchanged."""

from __future__ import annotations

import pytest

from pefthub import grid, suites
from pefthub.commands.bench_command import _planned_runs
from pefthub.errors import ConfigError
from test_bench_cli import tiny_suite
from test_tuning import finish, labels

GRID = """
methods = ["lora", "tinylora"]
trainers = ["sft"]
seeds = [0, 1]
tune_on_first_seed = true
learning_rates = [1e-3, 1e-2]
"""
PRIMARY = 'primary = ["tinylora/sft - lora/sft"]'


def test_primary_rows_run_the_extra_seeds_at_the_chosen_rate(tmp_path):
    plain = suites.load(tiny_suite(tmp_path / "a", GRID, extra=PRIMARY))
    more = GRID.replace("seeds = [0, 1]", "seeds = [0, 1]\nprimary_seeds = [0, 1, 2, 3]")
    suite = suites.load(tiny_suite(tmp_path / "b", more,
                                   extra=PRIMARY))
    assert suite.seeds_for("tinylora/sft") == [0, 1, 2, 3] and suite.seeds_for("base/none") == [0, 1]
    resolution, store = suites.resolve(suite), tmp_path / "results"
    first = grid.tuned_grid(suite, resolution, store)
    # Before the choice: the same seed-0 runs, with the same ids, as without primary_seeds.
    assert [e.run_id for e in first] == [e.run_id for e in grid.tuned_grid(plain, suites.resolve(plain), store)]
    for e in first[1:]:
        finish(store, e, 0.6 if e.config["learning_rate"] == 1e-2 else 0.3)
    grown = set(labels(grid.tuned_grid(suite, resolution, store))) - set(labels(first))
    assert grown == {"lora/sft/lr=0.01/seed=1", "lora/sft/lr=0.01/seed=2", "lora/sft/lr=0.01/seed=3",
                     "tinylora/sft/lr=0.01/seed=1", "tinylora/sft/lr=0.01/seed=2", "tinylora/sft/lr=0.01/seed=3"}
    assert _planned_runs(suite, 2, "lora/sft") == 2 + 3 and _planned_runs(plain, 2, "lora/sft") == 2 + 1


def test_a_row_outside_the_primary_keeps_the_grid_seeds(tmp_path):
    text = GRID.replace('"tinylora"]', '"tinylora", "vera"]').replace("seeds = [0, 1]", "seeds = [0, 1]\nprimary_seeds = [0, 1, 2]")
    suite = suites.load(tiny_suite(tmp_path, text, extra=PRIMARY))
    assert suite.seeds_for("vera/sft") == [0, 1] and _planned_runs(suite, 2, "vera/sft") == 3


@pytest.mark.parametrize("seeds, extra, message", [
    ("primary_seeds = [0, 1, 2]", "", r"grid.primary_seeds: needs primary"),
    ("primary_seeds = [1, 0, 2]", PRIMARY, r"grid.primary_seeds: must be grid.seeds \[0, 1\] followed by more"),
    ("primary_seeds = [0, 1]", PRIMARY, r"grid.primary_seeds: must be grid.seeds \[0, 1\] followed by more"),
    ("primary_seeds = [0, 1, 1]", PRIMARY, r"grid.primary_seeds: has duplicates"),
])
def test_bad_primary_seeds_are_one_line(tmp_path, seeds, extra, message):
    with pytest.raises(ConfigError, match=message):
        suites.load(tiny_suite(tmp_path, GRID.replace("seeds = [0, 1]", f"seeds = [0, 1]\n{seeds}"), extra=extra))

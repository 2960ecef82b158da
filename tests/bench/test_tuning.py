"""Learning-rate grids per trainer, and suites tuned on their first seed: rates compared at seed 0,
the other seeds only at the chosen rate, rates added beyond a grid edge the choice lands on."""

from __future__ import annotations

import pytest

from pefthub import grid, suites
from pefthub.report import stats
from pefthub import results as R
from pefthub.errors import ConfigError
from test_bench_cli import bench_cli, tiny_suite

TUNED = """
methods = ["lora"]
trainers = ["sft"]
seeds = [0, 1, 2]
tune_on_first_seed = true
learning_rates = [1e-3, 1e-2, 1e-1]
"""


def finish(results_dir, experiment, validation, status="success", answers=None):
    """A result file for ``experiment`` as a finished run would leave it (no model involved); with
    ``answers`` its validation samples give them, scored against :data:`GOLD`."""
    doc = R.new_result(experiment.config, suite="tiny", status=status, finished_at=R.utc_now(),
                       **({"error": "loss is NaN"} if status == "failed" else {}))
    if status == "success":
        doc["method"] = {"name": experiment.config["method"], "trainable_params": 10}
        doc["evaluation"] = {split: {"accuracy": validation, "n": 3, "ci_low": 0.0, "ci_high": 1.0,
                                     "ci_method": "wilson"} for split in ("validation", "test")}
    samples = [{"split": "test", "id": "q0", "correct": True}]
    samples += [{"split": "validation", "id": f"v{i}", "correct": a == g, "extracted": a, "gold": g}
                for i, (a, g) in enumerate(zip(answers or [], GOLD))]
    R.write_result(results_dir, doc, samples)


#: Ten validation items whose gold answers are seven "2" and three "3".
GOLD = ["2"] * 7 + ["3"] * 3


def labels(experiments):
    return [e.label for e in experiments if e.config["method"] != "base"]


def test_per_trainer_grids_and_their_errors(tmp_path):
    suite = suites.load(tiny_suite(tmp_path, """
        methods = ["lora", "tinylora"]
        learning_rates = { sft = [1e-3], grpo = [1e-4, 1e-3] }
        [methods.tinylora]
        learning_rates = { grpo = [1e-2] }
    """))
    lora, tiny = suite.methods
    assert lora.rates("sft") == [1e-3] and lora.rates("grpo") == [1e-4, 1e-3]
    assert tiny.rates("sft") == [1e-3] and tiny.rates("grpo") == [1e-2]  # its table overrides grpo only
    assert labels(suites.expand(suite)) == [
        "lora/sft/lr=0.001/seed=0", "lora/grpo/lr=0.0001/seed=0", "lora/grpo/lr=0.001/seed=0",
        "tinylora/sft/lr=0.001/seed=0", "tinylora/grpo/lr=0.01/seed=0"]
    with pytest.raises(ConfigError, match=r"grid.learning_rates: no learning rates for trainer 'grpo'"):
        suites.load(tiny_suite(tmp_path / "b", 'methods = ["lora"]\nlearning_rates = { sft = [1e-3] }'))
    with pytest.raises(ConfigError, match=r"grid.extend_edges: needs tune_on_first_seed"):
        suites.load(tiny_suite(tmp_path / "c", 'methods = ["lora"]\nlearning_rates = [1e-3]\nextend_edges = 1'))


def test_other_seeds_wait_for_the_first_seeds_choice(tmp_path):
    suite = suites.load(tiny_suite(tmp_path, TUNED))
    resolution, store = suites.resolve(suite), tmp_path / "results"
    first = grid.tuned_grid(suite, resolution, store)
    assert labels(first) == [f"lora/sft/lr={lr}/seed=0" for lr in ("0.001", "0.01", "0.1")]
    assert grid.awaiting_selection(suite, first) == 1
    for e, val in zip(first[1:], (0.2, 0.7, 0.4)):
        if e.config["learning_rate"] != 0.1:
            finish(store, e, val)
    assert labels(grid.tuned_grid(suite, resolution, store)) == labels(first)  # one rate still running
    finish(store, first[3], 0.4, status="failed")  # a failed rate is finished: it cannot be chosen
    grown = grid.tuned_grid(suite, resolution, store)
    assert set(labels(grown)) - set(labels(first)) == {"lora/sft/lr=0.01/seed=1", "lora/sft/lr=0.01/seed=2"}
    assert grid.awaiting_selection(suite, grown) == 0


def test_a_choice_at_the_edge_adds_the_next_rate_first(tmp_path):
    suite = suites.load(tiny_suite(tmp_path, TUNED.replace("learning_rates = [1e-3, 1e-2, 1e-1]",
                                                           "learning_rates = [1e-3, 1e-2]\nextend_edges = 1")))
    resolution, store = suites.resolve(suite), tmp_path / "results"
    first = grid.tuned_grid(suite, resolution, store)
    finish(store, first[1], 0.3)
    finish(store, first[2], 0.5)  # the largest rate wins: try one grid step further (x10)
    grown = grid.tuned_grid(suite, resolution, store)
    assert labels(grown)[2:] == ["lora/sft/lr=0.1/seed=0"]  # added after the grid's own rates
    finish(store, grown[3], 0.6)  # wins again, at the new edge, but the one extension allowed is spent
    done = grid.tuned_grid(suite, resolution, store)
    assert labels(done)[2:] == ["lora/sft/lr=0.1/seed=0", "lora/sft/lr=0.1/seed=1", "lora/sft/lr=0.1/seed=2"]


def test_a_rate_whose_run_gives_one_answer_on_validation_is_passed_over(tmp_path):
    """Answering "2" to every validation item scores 70% here without learning anything: its rate is passed
    over, by the bench's tuning and by the report alike, and the findings say why."""
    from pefthub.report.findings import tuning_lines
    from pefthub.report.floor import one_answer_runs
    from pefthub.report.records import read_records
    from pefthub.report.table import read_table

    suite = suites.load(tiny_suite(tmp_path, TUNED))
    resolution, store = suites.resolve(suite), tmp_path / "results"
    first = grid.tuned_grid(suite, resolution, store)
    mixed = ["2", "3", "1", "2", "4", "1", "2", "3", "1", "5"]          # 4 of 10 right
    finish(store, first[1], 0.3, answers=["1"] * 3 + mixed[3:])        # 3 of 10: no answer reaches 90%
    finish(store, first[2], 0.7, answers=["2"] * 10)                   # the same answer to all ten
    finish(store, first[3], 0.4, answers=mixed)
    grown = grid.tuned_grid(suite, resolution, store)
    assert set(labels(grown)) - set(labels(first)) == {"lora/sft/lr=0.1/seed=1", "lora/sft/lr=0.1/seed=2"}
    row = read_table(store).row("lora/sft")
    assert row.learning_rate == 0.1 and row.lr_one_answer == [0.01] and row.lr_at_edge == "high"
    records = read_records(store)
    assert one_answer_runs(records) == {first[2].run_id}
    text = "\n".join(tuning_lines(records))
    assert "0.001: 30.0%; 0.01: 70.0% (one answer); **0.1: 40.0%**" in text
    # when every rate gave one answer, the choice is on validation accuracy as before
    docs = [r.doc for r in records]
    every = stats.select_learning_rate(docs, None, {d["run_id"] for d in docs})
    assert list(every.chosen) == [0.01] and every.one_answer == []


def test_selection_compares_rates_on_the_seeds_they_share():
    def doc(lr, seed, val):
        return {"config": {"learning_rate": lr, "seed": seed},
                "evaluation": {"validation": {"accuracy": val}, "test": {"accuracy": val}}}

    # 1e-2 won on seed 0 and then ran seeds 1 and 2, which scored lower: the choice stays with seed 0.
    docs = [doc(1e-3, 0, 0.5), doc(1e-2, 0, 0.6), doc(1e-2, 1, 0.3), doc(1e-2, 2, 0.3)]
    selection = stats.select_learning_rate(docs)
    assert selection.rule == stats.LR_SELECTED and list(selection.chosen) == [1e-2]
    # With every seed shared it is the mean over all of them, as before.
    docs = [doc(1e-3, 0, 0.5), doc(1e-3, 1, 0.5), doc(1e-2, 0, 0.6), doc(1e-2, 1, 0.3)]
    assert list(stats.select_learning_rate(docs).chosen) == [1e-3]


def test_bench_runs_the_chosen_rate_on_the_remaining_seeds(tmp_path):
    path = tiny_suite(tmp_path, TUNED.replace("seeds = [0, 1, 2]", "seeds = [0, 1]")
                      .replace("[1e-3, 1e-2, 1e-1]", "[1e-3, 1e-2]"))
    store = tmp_path / "results"
    dry = bench_cli(str(path), "--results", str(store), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 row(s) still choose their learning rate on seed 0" in dry.stdout
    done = bench_cli(str(path), "--results", str(store))
    assert done.returncode == 0, done.stderr
    assert "learning rates selected on seed 0: 1 more run(s)" in done.stdout
    docs = [R.read_result(p) for p in store.glob("*.json") if not p.name.endswith(".samples.json")]
    trained = sorted((d["config"]["seed"], d["config"]["learning_rate"]) for d in docs if d["config"]["method"] != "base")
    assert len(trained) == 3 and [s for s, _ in trained] == [0, 0, 1]
    from pefthub.report.records import RunRecord
    from pefthub.report.rows import build_rows

    row = next(r for r in build_rows(RunRecord(d, None) for d in docs) if r.method == "lora")
    assert trained[2][1] == row.learning_rate and row.seeds == 2  # seed 1 ran at the rate seed 0 chose

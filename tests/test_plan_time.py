"""`pefthub plan SUITE --timings-from DIR`: a suite's wall time from runs measured here, by hand."""

from __future__ import annotations

import json

import pytest

from pefthub.cli import main
from pefthub.runtime_plan import measured, plan_time, read_measurements

BUDGET = {"steps": 10, "batch_size": 8, "generations": 4, "max_new_tokens": 64, "max_seq_len": 320}
EVAL = {"limit": 400, "validation_limit": 100, "max_new_tokens": 64}


def doc(method="lora", trainer="grpo", steps=10, train=100.0, generation=200.0, evaluation=50.0, total=360.0,
        checkpoint_eval=0.0, checkpoints=()):
    config = {"method": method, "trainer": trainer, "budget": dict(BUDGET, steps=steps), "eval": dict(EVAL)}
    return {"status": "success", "config": config,
            "budget": {"spent": {"optimizer_steps": steps, "seconds_total": total, "seconds_train": train,
                                 "seconds_generation": generation, "seconds_eval": evaluation,
                                 "seconds_checkpoint_eval": checkpoint_eval}},
            "evaluation": {"test": {"n": 400}, "validation": {"n": 100}},
            "checkpoints": [{"step": s, "n": 100} for s in checkpoints],
            "environment": {"load_average": {"start": [1.0, 1, 1], "end": [3.0, 1, 1]}}}


def test_costs_read_off_a_run_by_hand():
    m = measured(doc(checkpoints=(5,), checkpoint_eval=10.0, total=370.0))
    assert m.step_seconds == pytest.approx(30.0)               # (100 + 200) / 10 steps
    assert m.item_seconds == pytest.approx(60.0 / 600)         # (50 + 10) s over 400 + 100 + 100 items
    assert m.fixed_seconds == pytest.approx(10.0)              # 370 - 300 - 60
    assert m.load_average == pytest.approx(2.0)
    assert measured(dict(doc(), status="failed")) is None


def test_a_planned_run_at_other_steps_and_checkpoints_by_hand():
    refs = [measured(doc()), measured(doc(method="tinylora", train=40.0, generation=160.0, total=260.0))]
    config = {"method": "lora", "trainer": "grpo", "budget": dict(BUDGET, steps=40),
              "eval": dict(EVAL, checkpoints=[10, 20, 40])}
    row = plan_time(config, "lora/grpo", 3, refs)
    # 40 steps x 30 s + (400 + 100 + 2 checkpoints x 100) items x 0.1 s + 10 s fixed
    assert row.seconds_per_run == pytest.approx(40 * 30 + 700 * 0.1 + 10)
    assert row.hours == pytest.approx(3 * row.seconds_per_run / 3600)
    other = plan_time(dict(config, method="vera"), "vera/grpo", 1, refs)   # no vera run: the grpo peers' median
    assert other.seconds_per_run == pytest.approx(40 * 25 + 700 * 0.1 + 10) and "other grpo" in other.source
    shape = plan_time(dict(config, budget=dict(BUDGET, steps=40, max_new_tokens=128)), "lora/grpo", 1, refs)
    assert shape.seconds_per_run is None                        # another budget shape is not extrapolated


def test_cli_prints_the_plan_and_refuses_an_empty_directory(tmp_path, capsys):
    store = tmp_path / "store"
    store.mkdir()
    assert main(["plan", "benchmarks/cpu-paper-shape", "--timings-from", str(store)]) == 2
    assert "--timings-from: no finished runs in" in capsys.readouterr().err
    assert main(["plan", "benchmarks/cpu-paper-shape", "--json",
                 "--timings-from", "leaderboards/cpu-paper-shape/results"]) == 0
    plan = json.loads(capsys.readouterr().out)["time"]
    assert plan["references"] == len(read_measurements(["leaderboards/cpu-paper-shape/results"])) > 90
    assert not plan["missing"] and 2 < plan["hours"] < 6     # the suite's own runs took 4.1 h for 101 runs


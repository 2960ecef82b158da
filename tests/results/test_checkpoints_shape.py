"""``results.validate`` checks the shape of a result's ``checkpoints`` (validation at optimizer steps):
a malformed entry is refused in one line naming the entry and the field."""

from __future__ import annotations

import json

import pytest

from pefthub import results as R

CONFIG = {"model": "tiny-random", "task": {"name": "basic_arithmetic"}, "trainer": "sft", "method": "lora",
          "method_config": {"r": 2}, "params_target": None, "learning_rate": 1e-3, "seed": 0,
          "budget": {"steps": 4}, "eval": {"split": "test", "limit": 4, "validation_limit": 4, "checkpoints": [2, 4]}}


def point(step: int, right: int, **overrides) -> dict:
    return {"step": step, "split": "validation", "accuracy": right / 4, "ci_low": 0.0, "ci_high": 0.9, "n": 4,
            "correct": right, "strict_accuracy": None, "backend": "hf", "seconds_eval": 1.5,
            "seconds_train_so_far": 3.0 * step, "examples": 8 * step, "prompts": 0, "prompts_trained": 0,
            "completions": 0, "tokens_trained": 100 * step, "tokens_generated": 0, "train_flops": 1e9 * step,
            **overrides}


def doc_with(points, status="success") -> dict:
    doc = R.new_result(CONFIG, suite="unit", status=status, error=None if status == "success" else "stopped",
                       finished_at=R.utc_now())
    doc.update({"method": {"name": "lora", "trainable_params": 128},
                "evaluation": {"test": {"accuracy": 0.25, "ci_low": 0.1, "ci_high": 0.5, "n": 4, "correct": 1}},
                "checkpoints": points})
    return doc


def test_well_formed_checkpoints_round_trip(tmp_path):
    points = [point(2, 1), point(4, 3)]
    back = R.read_result(R.write_result(tmp_path, doc_with(points)))
    assert back["checkpoints"] == points
    R.validate(doc_with([point(2, 1)], status="failed"))  # a run that stopped keeps the checkpoints it reached


@pytest.mark.parametrize("points, reason", [
    ({"step": 2}, "'checkpoints' is not a list"),
    (["step 2"], "checkpoints[0] is not an object"),
    ([{k: v for k, v in point(2, 1).items() if k != "tokens_trained"}], "checkpoints[0] has no 'tokens_trained'"),
    ([point(0, 1)], "checkpoints[0].step is not a positive integer"),
    ([point(2, 1), point(2, 1)], "checkpoints[1].step 2 does not come after step 2"),
    ([point(2, 1, accuracy=1.25)], "checkpoints[0].accuracy is not a number in [0, 1]"),
    ([point(2, 1, correct=5)], "checkpoints[0].correct is not an integer in [0, n]"),
    ([point(2, 1, accuracy=0.5)], "checkpoints[0].accuracy is not correct / n"),
    ([point(2, 1), point(4, 1, seconds_train_so_far=-1.0)],
     "checkpoints[1].seconds_train_so_far is not a non-negative number"),
    ([point(2, 1, ci_high="0.9")], "checkpoints[0].ci_high is not a number"),
    ([point(2, 1, split="")], "checkpoints[0].split is not a non-empty string"),
])
def test_a_malformed_entry_is_one_line_naming_it(tmp_path, points, reason):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc_with(points)))
    with pytest.raises(R.ResultFileError) as info:
        R.read_result(path)
    assert reason in info.value.reason and "\n" not in info.value.reason
    with pytest.raises(R.InvalidResult):
        R.write_result(tmp_path / "out", doc_with(points))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []

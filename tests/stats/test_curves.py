"""Budget curves (:mod:`pefthub.report.curves`): a row's validation accuracy at each checkpoint step
over its seeds, checked against numbers computed by hand here. The documents are TEST INPUTS."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from pefthub.report.curves import budget_curves

T_975_DF2 = 4.302652729911275     # Student t, 97.5% quantile, 2 degrees of freedom
T_975_DF1 = 12.706204736174707    # ... 1 degree of freedom


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def point(step: int, correct: int, *, n=200, tokens_trained=0, tokens_generated=0, seconds=0.0) -> dict:
    low, high = wilson(correct, n)
    return {"step": step, "split": "validation", "accuracy": correct / n, "ci_low": low, "ci_high": high, "n": n,
            "correct": correct, "seconds_train_so_far": seconds, "tokens_trained": tokens_trained,
            "tokens_generated": tokens_generated}


def run(method, trainer, seed, points=None, validation=None, params=None):
    doc = {"config": {"method": method, "trainer": trainer, "params_target": params, "seed": seed},
           "evaluation": {"test": {"accuracy": 0.5}}}
    if points is not None:
        doc["checkpoints"] = points
    if validation is not None:
        low, high = wilson(*validation)
        doc["evaluation"]["validation"] = {"accuracy": validation[0] / validation[1], "ci_low": low, "ci_high": high,
                                           "n": validation[1], "correct": validation[0], "ci_method": "wilson"}
    return SimpleNamespace(doc=doc)


def row(label, *runs, is_base=False):
    return SimpleNamespace(label=label, is_base=is_base, runs=list(runs))


def test_seed_means_t_intervals_tokens_and_seconds_by_hand():
    lora = row("lora/sft",
               run("lora", "sft", 0, [point(2, 40, tokens_trained=1000, seconds=10.0),
                                      point(4, 100, tokens_trained=2000, seconds=20.0)]),
               run("lora", "sft", 1, [point(2, 60, tokens_trained=1100, seconds=12.0),
                                      point(4, 100, tokens_trained=2100, seconds=23.0)]),
               run("lora", "sft", 2, [point(2, 80, tokens_trained=1200, seconds=14.0)]))  # stopped before step 4
    grpo = row("tinylora@13/grpo", run("tinylora", "grpo", 0, [point(3, 30, tokens_trained=50, tokens_generated=950,
                                                                     seconds=7.5)], params=13))
    base = row("base", run("base", "none", 0, validation=(44, 200)), is_base=True)
    plain = row("bitfit/sft", run("bitfit", "sft", 0))
    result = budget_curves([base, lora, plain, grpo], base)

    assert [c.label for c in result.curves] == ["lora/sft", "tinylora@13/grpo"]  # no base, no empty curve
    two, four = result.curves[0].points
    # Step 2, three seeds at 20%, 30%, 40%: mean 30%, sd 10 points, t interval 30 ± 4.3027 × 10 / √3.
    assert (two.step, two.seeds, two.n) == (2, 3, 200)
    assert two.accuracy == pytest.approx(0.3)
    half = T_975_DF2 * 0.1 / math.sqrt(3)
    assert (two.low, two.high) == (pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    assert two.interval == "t over 3 seeds"
    assert two.tokens == pytest.approx(1100.0) and two.seconds == pytest.approx(12.0)
    # Step 4, two seeds both at 50%: zero spread, so the interval is the runs' mean Wilson interval.
    assert (four.seeds, four.accuracy) == (2, pytest.approx(0.5))
    assert (four.low, four.high) == (pytest.approx(wilson(100, 200)[0]), pytest.approx(wilson(100, 200)[1]))
    assert four.interval == "t over 2 seeds, widened to the per-run interval"
    assert four.tokens == pytest.approx(2050.0) and four.seconds == pytest.approx(21.5)
    # One run: its own Wilson interval; tokens are trained + generated.
    (only,) = result.curves[1].points
    assert (only.step, only.seeds, only.accuracy) == (3, 1, pytest.approx(0.15))
    assert (only.low, only.high) == wilson(30, 200) and only.interval == "wilson"
    assert only.tokens == pytest.approx(1000.0) and only.seconds == pytest.approx(7.5)
    assert (result.curves[1].name, result.curves[1].trainer, result.curves[1].params_target) == ("tinylora", "grpo", 13)
    # The reference: the base model's validation accuracy and its interval.
    assert result.base.accuracy == pytest.approx(0.22) and (result.base.ci_low, result.base.ci_high) == wilson(44, 200)


def test_two_seeds_far_apart_use_t_with_one_degree_of_freedom():
    curves = budget_curves([row("lora/grpo", run("lora", "grpo", 0, [point(5, 20)]),
                                run("lora", "grpo", 1, [point(5, 60)]))])
    (p,) = curves.curves[0].points
    half = T_975_DF1 * math.sqrt(((0.1 - 0.2) ** 2 + (0.3 - 0.2) ** 2) / 1) / math.sqrt(2)
    assert p.accuracy == pytest.approx(0.2)
    assert (p.low, p.high) == (0.0, pytest.approx(min(1.0, 0.2 + half)))  # clipped to [0, 1]
    assert curves.base is None


def test_no_checkpoints_anywhere_is_no_curves():
    base = row("base", run("base", "none", 0, validation=(44, 200)), is_base=True)
    assert budget_curves([row("lora/sft", run("lora", "sft", 0)), base], base) is None

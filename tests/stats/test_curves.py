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


def test_a_change_between_checkpoints_is_newcombes_interval_from_the_literature():
    """Newcombe (1998), Statistics in Medicine 17:873, Table II example (a): 56/70 vs 48/80, difference
    +0.2000, method 10 (hybrid score) interval 0.0524 to 0.3339."""
    from pefthub.report.curves import change

    docs = [run("lora", "sft", 0, [point(10, 48, n=80), point(20, 56, n=70)]).doc]
    c = change(docs, 10, 20)
    assert (c.start, c.end, c.seeds) == (10, 20, 1)
    assert c.delta == pytest.approx(0.2) and (round(c.low, 4), round(c.high, 4)) == (0.0524, 0.3339)
    assert c.verdict == "still improving"
    assert change(docs, 10, 40) is None    # no run scored step 40


def test_several_seeds_widen_the_change_to_t_over_their_own_differences():
    from pefthub.report.curves import change

    docs = [run("lora", "sft", s, [point(10, a), point(20, b)]).doc for s, (a, b) in enumerate([(40, 80), (60, 76)])]
    c = change(docs, 10, 20)
    diffs = [0.2, 0.08]
    half = T_975_DF1 * (abs(diffs[0] - diffs[1]) / math.sqrt(2)) / math.sqrt(2)
    assert c.delta == pytest.approx(56 / 400) and c.seeds == 2
    assert c.low == pytest.approx(0.14 - half) and c.high == pytest.approx(0.14 + half)
    assert c.verdict == "no detectable change"


def test_a_change_interval_stops_at_100_points():
    # Two seeds that rose by 95 and 5 points: t(1) = 12.7 times their spread runs far past ±100 points, and no
    # change in accuracy can; the interval is cut there.
    from pefthub.report.curves import change

    docs = [run("lora", "sft", s, [point(10, a), point(20, b)]).doc for s, (a, b) in enumerate([(5, 195), (90, 100)])]
    c = change(docs, 10, 20)
    half = T_975_DF1 * (abs(0.95 - 0.05) / math.sqrt(2)) / math.sqrt(2)
    assert 0.5 - half < -1.0 and 0.5 + half > 1.0
    assert (c.low, c.high) == (-1.0, 1.0) and c.delta == pytest.approx(0.5)


def test_the_budget_rule_separates_rising_stopped_and_past_peak_rows():
    from pefthub.report.curves import PAST_PEAK, RISING, ROSE_THEN_FLAT, plateau, plateaus

    def one(*correct):
        return [run("lora", "sft", 0, [point(s, k) for s, k in zip((10, 20, 40), correct)]).doc]

    improving = plateau("a", one(20, 40, 90))
    assert not improving.stopped and improving.verdict() == "still improving"
    rising = plateau("b", one(38, 50, 58))       # 50 → 58 items: no detectable last change, but highest after a rise
    assert rising.recent.verdict == "no detectable change" and rising.overall.low > 0
    assert rising.from_peak is None and not rising.stopped and rising.verdict() == RISING
    flat = plateau("c", one(50, 52, 50))
    assert flat.stopped and flat.verdict() == "no detectable change" and not flat.past_peak
    # the lora_xs/sft shape on cpu-paper-shape-v2: a detectable rise, then the same score twice (peak at step 20)
    levelled = plateau("f", one(106, 190, 190))
    assert levelled.stopped and levelled.peak.step == 20 and levelled.overall.low > 0
    assert levelled.verdict() == ROSE_THEN_FLAT == "rose over the run, then no detectable change"
    peaked = plateau("d", one(81, 67, 55))       # the tinylora@13/sft shape: best at step 10
    assert peaked.stopped and peaked.past_peak and peaked.verdict() == PAST_PEAK and peaked.peak.step == 10
    assert peaked.from_peak.high < 0
    assert plateau("e", one(50)) is None         # one checkpoint: nothing to say
    rows = [row("base", run("base", "none", 0), is_base=True), row("d", *[SimpleNamespace(doc=d) for d in one(81, 67, 55)])]
    assert [p.label for p in plateaus(rows)] == ["d"]


def test_the_findings_page_says_which_rows_stopped_and_which_may_want_more_steps():
    from pefthub.report.findings import BUDGET_QUESTION, budget_lines

    def shaped(label, *correct, selection="validation"):
        docs = [run("lora", "sft", 0, [point(s, k) for s, k in zip((10, 20, 40), correct)])]
        return SimpleNamespace(label=label, is_base=False, runs=docs, lr_selection=selection)

    rows = [shaped("lora/sft", 81, 67, 55), shaped("lora/grpo", 38, 50, 58),
            shaped("lora/grpo/lr=0.01", 10, 10, 10, selection="unselected")]
    text = "\n".join(budget_lines(rows))
    assert text.startswith(f"## {BUDGET_QUESTION}") and "lr=0.01" not in text
    assert "| `lora/sft` | 40.5% | 33.5% | 27.5% |" in text and "past its peak (-13.0 [" in text
    assert ("- Not improving at the last checkpoint (stopped, or never detectably improved): 1 of 2 rows: "
            "`lora/sft` (past its peak). Not shown to have stopped, so the "
            "budget may be short for them: `lora/grpo` (rose over the run, highest at the last checkpoint).") in text
    assert budget_lines([shaped("x", 1)]) == []

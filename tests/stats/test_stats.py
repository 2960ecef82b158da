"""pefthub.report.stats: known answers computed by hand, the interval's coverage by simulation, refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from pefthub.report import stats
from pefthub.report.power import detectable_difference, mcnemar_power

REPO = Path(__file__).resolve().parents[2]
#: The chain_sum `quick` board, kept as a fixture under benchmarks/cpu-pilots/quick-v1.
QUICK_V1 = "cpu-pilots-quick-v1"
QUICK = REPO / "leaderboards" / "cpu-pilots" / "quick-v1" / "results"


# ---- known answers ----------------------------------------------------------------------------------
def test_mcnemar_exact_by_hand():
    # 1 vs 6 discordant pairs: P(X <= 1 | 7, 1/2) = (1 + 7) / 128, doubled.
    assert stats.mcnemar_p(1, 6) == pytest.approx(16 / 128)
    assert stats.mcnemar_p(6, 1) == pytest.approx(16 / 128)
    assert stats.mcnemar_p(0, 5) == pytest.approx(2 / 32)
    assert stats.mcnemar_p(0, 0) == 1.0


def test_a_t_interval_past_what_a_difference_can_be_is_cut_at_100_points():
    # cpu-paper-shape-v2's tinylora@120/sft scored 91.5%, 49.0% and 93.2% on its 3 seeds: Δ ± t(2) × SE runs past
    # +100 points, which no difference of two accuracies can reach. The interval is cut there, on either side;
    # Δ, SE, df and p stay the t test's.
    from pefthub.report.table import read_table

    rows = {r.label: r for r in read_table(REPO / "leaderboards" / "cpu-paper-shape-v2" / "results").rows}
    up, down = (stats.compare_rows(rows["tinylora@120/sft"], rows["base"]),
                stats.compare_rows(rows["base"], rows["tinylora@120/sft"]))
    half = stats.t_quantile(up.df) * up.se
    assert up.delta + half > 1.0                                   # what the t interval alone says
    assert (up.low, up.high) == (pytest.approx(up.delta - half), 1.0)
    assert (down.low, down.high) == (-1.0, pytest.approx(down.delta + half))
    assert up.interval == down.interval == stats.CLIPPED_INTERVAL and up.p_value == down.p_value < 0.05
    lora = stats.compare_rows(rows["lora/sft"], rows["base"])    # well inside ±1: left as t gives it
    assert lora.interval == "t, items × seeds"
    assert lora.high == pytest.approx(lora.delta + stats.t_quantile(lora.df) * lora.se)


def test_holm_by_hand():
    # sorted: .005*4 = .02, .01*3 = .03, .03*2 = .06, .04*1 = .04 -> running max .06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_exact_interval_by_hand():
    # Clopper–Pearson at k = 0 or k = m has a closed form: 0 of m -> [0, 1 - 0.025 ** (1 / m)].
    q = 0.025 ** (1 / 5)
    # 5 of 5 items won by A, none by B: pi in [q, 1], psi in [q, 1]; 2q - 1 < 0 takes the larger psi.
    assert stats.exact_paired_interval(5, 0, 5) == pytest.approx((2 * q - 1, 1.0))
    assert stats.exact_paired_interval(0, 5, 5) == pytest.approx((-1.0, 1 - 2 * q))
    # No discordant item of 64: pi undefined, |delta| <= psi_high = 1 - 0.025 ** (1 / 64).
    assert stats.exact_paired_interval(0, 0, 64) == pytest.approx((-(1 - 0.025 ** (1 / 64)), 1 - 0.025 ** (1 / 64)))
    # p = 2/32 >= .05 and the interval holds 0; 6 of 6 gives p = 2/64 < .05 and excludes it.
    assert stats.mcnemar_p(5, 0) == pytest.approx(2 / 32)
    # (2 q6 - 1 > 0 takes the smaller psi, q6 of 6 of 6.)
    q6 = 0.025 ** (1 / 6)
    assert stats.mcnemar_p(6, 0) == pytest.approx(2 / 64)
    assert stats.exact_paired_interval(6, 0, 6) == pytest.approx(((2 * q6 - 1) * q6, 1.0)) and 2 * q6 - 1 > 0


def test_exact_interval_agrees_with_the_mcnemar_p_for_every_split():
    """0 is inside the interval exactly when p >= .05, for every split of up to 40 discordant items, and
    scipy's two-sided p ("minlike") equals twice the smaller tail (what the equal-tailed interval inverts)."""
    from scipy.stats import binom

    n = 100
    for m in range(1, 41):
        for b in range(m + 1):
            p = stats.mcnemar_p(b, m - b)
            low, high = stats.exact_paired_interval(b, m - b, n)
            assert (low <= 0 <= high) == (p >= 0.05), (b, m, p, low, high)
            assert low <= (2 * b - m) / n <= high
            assert p == pytest.approx(min(1.0, 2 * min(binom.cdf(b, m, 0.5), binom.sf(b - 1, m, 0.5))), rel=1e-9)


def test_single_seed_variance_is_millers_paired_difference_variance():
    a = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0], float)[:, None]
    b = np.array([0, 1, 0, 0, 0, 1, 0, 0, 0, 1], float)[:, None]
    delta, var, df = stats.paired_variance(a, b)
    # d = (1,0,1,0,0,0,0,0,0,-1): mean .1, s^2 = (3 - 10 * .01) / 9
    assert delta == pytest.approx(0.1)
    assert var == pytest.approx((3 - 0.1) / 9 / 10)
    assert df == pytest.approx(9)


def test_multi_seed_variance_and_satterthwaite_df_by_hand():
    a = np.array([[1, 0], [1, 0], [0, 0]], float)    # 3 items x 2 seeds
    b = np.array([[0], [0], [1]], float)             # a single greedy run, broadcast over seeds
    delta, var, df = stats.paired_variance(a, b)
    # item part: d-bar = (.5, .5, -1), s^2 = .75, / 3 = .25.
    # seed part of a: MS_seed = 3 * 2 * (1/3)^2 = 2/3, MS_resid = (1/3) / 2 = 1/6 -> (2/3 - 1/6) / 6 = 1/12
    assert delta == pytest.approx(0.0)
    assert var == pytest.approx(0.25 + 1 / 12)
    denominator = 0.25 ** 2 / 2 + (2 / 3 / 6) ** 2 / 1 + (1 / 6 / 6) ** 2 / 2
    assert df == pytest.approx((0.25 + 1 / 12) ** 2 / denominator)


def test_broadcast_single_run_equals_the_crossed_design_on_differences():
    rng = np.random.default_rng(3)
    a = (rng.random((40, 3)) < 0.5).astype(float)
    b = (rng.random((40, 1)) < 0.4).astype(float)
    _, var, _ = stats.paired_variance(a, b)
    d = a - b                                          # items x seeds, crossed
    n, s = d.shape
    ms_item = s * d.mean(1).var(ddof=1)
    ms_seed, ms_resid = stats._seed_components(d)
    assert var == pytest.approx(max(ms_item + ms_seed - ms_resid, ms_item) / (n * s))


def test_power_is_larger_when_errors_move_one_way():
    one_way = detectable_difference(64, 0.25, assumption="one-way")
    independent = detectable_difference(64, 0.25, assumption="independent")
    assert 0 < one_way < independent < 0.5
    assert detectable_difference(400, 0.25, assumption="independent") < independent
    # one-way at n = 64: 6 discordant pairs all one way reach p = 2 / 64 < .05; power .8 needs P(m >= 6) >= .8
    assert mcnemar_power(64, one_way, one_way) >= 0.8
    assert mcnemar_power(64, one_way - 0.005, one_way - 0.005) < 0.8


# ---- coverage by simulation ---------------------------------------------------------------------------
def simulate(rng, datasets, n, seeds_a, seeds_b, *, item_sd=1.0, shift_sd=0.5, seed_sd=0.2, mu=-0.3, effect=0.3):
    """Probit model: item difficulty shared by both rows, a row-specific item shift, a per-seed run effect.
    The population accuracy of a row is Φ(m / sqrt(1 + total latent variance)), so Δ is known exactly."""
    theta = rng.normal(0, item_sd, (datasets, n, 1))
    def row(mean, s):
        latent = theta + rng.normal(0, shift_sd, (datasets, n, 1)) + rng.normal(0, seed_sd if s > 1 else 0.0,
                                                                                 (datasets, 1, s)) + mean
        return (rng.random((datasets, n, s)) < norm.cdf(latent)).astype(float)
    a, b = row(mu + effect, seeds_a), row(mu, seeds_b)
    truth = (norm.cdf((mu + effect) / math.sqrt(1 + item_sd ** 2 + shift_sd ** 2 + (seed_sd ** 2 if seeds_a > 1 else 0)))
             - norm.cdf(mu / math.sqrt(1 + item_sd ** 2 + shift_sd ** 2 + (seed_sd ** 2 if seeds_b > 1 else 0))))
    return a, b, truth


@pytest.mark.parametrize("n, seeds_a, seeds_b", [(200, 3, 3), (150, 4, 1), (100, 3, 5)])
def test_interval_covers_the_true_difference_95_percent_of_the_time(n, seeds_a, seeds_b):
    rng = np.random.default_rng(20261203)
    a, b, truth = simulate(rng, 2000, n, seeds_a, seeds_b)
    delta, var, df = stats.paired_variance(a, b)
    from scipy.stats import t

    half = t.ppf(0.975, df) * np.sqrt(var)
    covered = np.mean((delta - half <= truth) & (truth <= delta + half))
    assert 0.93 <= covered <= 0.97, covered


@pytest.mark.parametrize("n, effect, shift_sd, bound", [(150, 0.3, 0.5, 0.99), (100, 0.0, 0.5, 0.985),
                                                        (64, 1.0, 0.1, 0.999)])
def test_single_seed_exact_interval_is_conservative(n, effect, shift_sd, bound):
    """One run against one (or the greedy base): the exact interval covers the true difference in at least
    95% of 4,000 data sets (both Clopper–Pearson ranges are conservative) and at most ``bound``, the
    ceiling measured for that setting with a little room: lowest with no effect (only π's range
    matters), highest for a large one-way effect (ψ's range widens it most). π's interval times the
    observed m/n alone, which ignores the chance in m, falls below 95% in the large-effect setting."""
    from functools import lru_cache

    from scipy.stats import binomtest

    interval = lru_cache(maxsize=None)(stats.exact_paired_interval)
    rng = np.random.default_rng(20261203)
    a, b, truth = simulate(rng, 4000, n, 1, 1, effect=effect, shift_sd=shift_sd)
    a_only = ((a == 1) & (b == 0)).sum(axis=(1, 2))
    b_only = ((a == 0) & (b == 1)).sum(axis=(1, 2))
    bounds = np.array([interval(int(x), int(y), n) for x, y in zip(a_only, b_only)])
    covered = np.mean((bounds[:, 0] <= truth) & (truth <= bounds[:, 1]))
    assert 0.95 <= covered <= bound, covered
    if effect >= 1.0:
        @lru_cache(maxsize=None)
        def conditional_only(x, y):
            ci = binomtest(x, x + y).proportion_ci(method="exact")
            return (x + y) / n * (2 * ci.low - 1), (x + y) / n * (2 * ci.high - 1)
        naive = np.array([conditional_only(int(x), int(y)) for x, y in zip(a_only, b_only)])
        assert np.mean((naive[:, 0] <= truth) & (truth <= naive[:, 1])) < 0.95


# ---- on the committed chain_sum quick results ---------------------------------------------------------
def quick_rows(directory=QUICK):
    from pefthub.report.table import read_table

    return read_table(directory).rows


def test_quick_rows_against_base_are_paired_and_holm_corrected():
    from pefthub.report.health import did_not_train
    from pefthub.report.table import versus_base

    rows = quick_rows()
    base = next(r for r in rows if r.is_base)
    out = versus_base(rows, base)
    assert len(out) == 14 and all(isinstance(c, stats.Comparison) for c in out.values())
    trained = [out[r.label] for r in rows if not r.is_base and not did_not_train(r.flags)]
    assert 0 < len(trained) < 14 and all(c.p_holm is not None for c in trained)
    assert all(c.p_holm is None and c.verdict is None for c in out.values() if c not in trained)
    assert stats.holm([c.p_value for c in trained]) == [c.p_holm for c in trained]
    for c in trained:
        assert c.both_right + c.a_only + c.b_only + c.both_wrong == 64
        assert c.delta == pytest.approx((c.a_only - c.b_only) / 64)
        assert c.p_value == pytest.approx(stats.mcnemar_p(c.a_only, c.b_only))
        assert (c.low, c.high) == stats.exact_paired_interval(c.a_only, c.b_only, 64)
        assert (c.low <= 0 <= c.high) == (c.p_value >= 0.05) and c.interval == stats.EXACT_INTERVAL
        assert c.p_holm >= c.p_value
        assert c.verdict in (stats.BETTER, stats.WORSE, stats.SAME)
        assert len(c.disagreements) == c.a_only + c.b_only


def test_rows_on_different_items_refuse_with_one_reason(tmp_path):
    from pefthub.report.records import record_of
    from pefthub.report.rows import one_run_row

    rows = quick_rows()
    base = next(r for r in rows if r.is_base)
    other = next(r for r in rows if r.label == "lora/sft")

    def row_of(doc, samples):
        return one_run_row(record_of(doc, samples=samples), other.label)

    moved = tmp_path / "moved.samples.jsonl"
    lines = other.records[0].samples_file.read_text().splitlines()
    records = [json.loads(x) for x in lines]
    records[0]["id"] = "chain_sum-test-9999"
    moved.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    changed = row_of(other.docs[0], moved)
    with pytest.raises(stats.PairingError, match="different items.*1 of 64"):
        stats.compare_rows(changed, base)
    doc = json.loads(json.dumps(other.docs[0]))
    doc["config"]["task"]["max_terms"] = 4
    with pytest.raises(stats.PairingError, match="different task configs"):
        stats.compare_rows(row_of(doc, other.records[0].samples_file), base)
    doc = json.loads(json.dumps(other.docs[0]))
    doc["evaluation"]["test"]["protocol"]["max_new_tokens"] = 256
    with pytest.raises(stats.PairingError, match="evaluation protocol.*max_new_tokens"):
        stats.compare_rows(row_of(doc, other.records[0].samples_file), base)
    with pytest.raises(stats.PairingError, match="no samples file"):
        stats.compare_rows(row_of(other.docs[0], tmp_path / "none.jsonl"), base)


# ---- pefthub compare ------------------------------------------------------------------------------------
def run_cli(capsys, *argv):
    from pefthub.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_compare_rows_of_a_suite(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compare", "full/sft", "base", "--suite", QUICK_V1, "--results", str(QUICK),
                             "--show", "2")
    assert code == 0, err
    assert "19" in out and "6" in out and "McNemar exact, 19 vs 6 discordant items" in out
    assert "first 2; --json lists all" in out
    code, out, err = run_cli(capsys, "compare", "full/sft", "base", "--results", str(QUICK), "--json")
    doc = json.loads(out)
    assert (doc["a_only"], doc["b_only"], doc["both_right"], doc["both_wrong"]) == (19, 6, 9, 30)
    assert doc["p_value"] == pytest.approx(stats.mcnemar_p(19, 6))
    assert len(doc["disagreements"]) == 25 and doc["runs_b"] == ["e5501a31c81086e0"]


def test_compare_run_ids_and_bad_input(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compare", "a0b759edac48102c", "e5501a31c81086e0", "--results", str(QUICK))
    assert code == 0 and "lora/sft (run a0b759edac48102c)" in out
    for argv, message in [
        (("lora", "base"), "'lora' is not a run id (16 hex digits); row names need --suite"),
        (("lora/x", "base", "--suite", QUICK_V1, "--results", str(QUICK)), f"no row 'lora/x' in suite {QUICK_V1}"),
        (("base", "base", "--results", str(QUICK)), "the same run"),
        (("lora/sft", "base", "--results", str(tmp_path / "none")), "does not exist"),
    ]:
        code, out, err = run_cli(capsys, "compare", *argv)
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err, err


# ---- pefthub plan <suite>: power --------------------------------------------------------------------------
def test_plan_prints_the_suites_power_without_weights(capsys, monkeypatch, tmp_path):
    from pefthub import suites
    from pefthub.commands.plan_command import suite_power

    # The suite's results are found under leaderboards/<name>/results of the working directory.
    (tmp_path / "leaderboards" / QUICK_V1).mkdir(parents=True)
    (tmp_path / "leaderboards" / QUICK_V1 / "results").symlink_to(QUICK, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    suite_dir = str(REPO / "benchmarks" / "cpu-pilots" / "quick-v1")
    code, out, err = run_cli(capsys, "plan", suite_dir, "--json")
    assert code == 0, err
    power = json.loads(out)["power"]
    expected_one_way = detectable_difference(64, 15 / 64, assumption="one-way")
    assert power["test_items"] == 64 and power["seeds"] == 1 and power["base_accuracy"] == 15 / 64
    assert power["detectable_gain_one_way"] == expected_one_way and power["smoke"] is True
    assert "not methods a few points apart" in power["summary"]
    code, out, err = run_cli(capsys, "plan", suite_dir, "--base-accuracy", "1.5")
    assert code == 2 and err.startswith("error: --base-accuracy must be a fraction")
    suite = suites.load(suite_dir)
    monkeypatch.chdir(tmp_path / "leaderboards")   # no stored results: the base accuracy must be given
    assert suite_power(suite, None) is None
    given = suite_power(suite, 0.5)
    assert given.base_source == "given" and given.independent == detectable_difference(
        64, 0.5, assumption="independent")


def test_bench_table_prints_paired_delta_verdict_and_smoke_note():
    from types import SimpleNamespace

    from rich.console import Console

    from pefthub.commands.bench_command import print_results
    from pefthub.report.table import read_table

    table = read_table(QUICK)
    console = Console(record=True, width=220)
    print_results(console, SimpleNamespace(name=QUICK_V1, model="m", task={"name": "t"}), table, total=15, have=15)
    text = console.export_text()
    full = table.row("full/sft").vs_base
    family = sum(r.vs_base is not None and r.vs_base.p_holm is not None for r in table.rows)
    flat = " ".join(text.split())
    assert stats.interval_text(full) in text and "not tested" in text
    assert f"Holm's correction over the {family} rows that trained" in flat
    assert "the interval inverts the same test (it contains 0 exactly when p ≥ 0.05)" in flat
    assert "Smoke run: 64 test items, 1 seed" in flat


# ---- learning rate at the edge of its grid ------------------------------------------------------------------
def lr_docs(best: int, rates=(1e-4, 1e-3, 1e-2)):
    """Made-up result documents (test input): one point at three rates, the ``best``-th best on validation
    and the worst on test, so only validation can pick it."""
    docs = []
    for i, lr in enumerate(rates):
        config = {"method": "lora", "trainer": "sft", "model": "m", "task": {"name": "t"}, "learning_rate": lr, "seed": 0}
        docs.append({"run_id": f"{i:016x}", "status": "success", "config": config, "method": {"trainable_params": 8},
                     "evaluation": {"validation": {"accuracy": 0.6 if i == best else 0.3},
                                    "test": {"accuracy": 0.1 if i == best else 0.5, "ci_low": 0.0, "ci_high": 0.9}}})
    return docs


@pytest.mark.parametrize("best, edge", [(0, "low"), (1, None), (2, "high")])
def test_chosen_rate_at_the_edge_of_its_grid_is_flagged(best, edge):
    from types import SimpleNamespace

    from rich.console import Console

    from pefthub.commands.bench_command import print_results
    from pefthub.report.records import RunRecord
    from pefthub.report.table import suite_table

    docs = lr_docs(best)
    selection = stats.select_learning_rate(docs)
    assert selection.rule == stats.LR_SELECTED and list(selection.chosen) == [(1e-4, 1e-3, 1e-2)[best]]
    assert selection.at_edge == edge
    table = suite_table([RunRecord(d, None) for d in docs])
    (row,) = table.rows
    assert row.lr_at_edge == edge and row.learning_rate == (1e-4, 1e-3, 1e-2)[best]
    console = Console(record=True, width=220)
    print_results(console, SimpleNamespace(name="s", model="m", task={"name": "t"}), table, total=3, have=3)
    text = console.export_text()
    marked = {"low": "0.0001 ◂", "high": "0.01 ▸"}.get(edge)
    assert (marked in text) if edge else ("◂" not in text and "▸" not in text)
    assert ("lr ◂ / ▸: the rate chosen on validation is the smallest / largest" in " ".join(text.split())) == bool(edge)


def test_no_edge_without_a_choice_on_validation():
    docs = lr_docs(0)
    assert stats.select_learning_rate(docs[:1]).at_edge is None                 # one rate: nothing to be at the edge of
    del docs[1]["evaluation"]["validation"]
    assert stats.select_learning_rate(docs).rule == stats.LR_UNSELECTED
    assert stats.select_learning_rate(docs).at_edge is None

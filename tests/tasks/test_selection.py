"""The learning-rate selection simulation (pefthub.selection) against exact and closed-form cases,
and its generated docs section."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pefthub import selection

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n", [50, 200])
def test_two_independent_rates_match_the_exact_binomial_case(n):
    sim = selection.simulate(2, 0.05, 0.3, n, rho=0.0, trials=60_000, rng_seed=1)
    exact = selection.two_rates_exact(0.05, 0.3, n)
    assert abs(sim.p_best - exact) < 4 * sim.p_best_se
    # With two rates the loss is delta whenever the worse one is chosen.
    assert sim.expected_loss == pytest.approx(0.05 * (1 - sim.p_best))
    # The closed-form normal approximation agrees with the exact value at these sizes.
    assert selection.two_rates_normal(0.05, 0.3, n) == pytest.approx(exact, abs=0.01)


def test_paired_items_follow_the_closed_form_with_correlation():
    sim = selection.simulate(2, 0.04, 0.5, 300, rho=0.6, trials=60_000, rng_seed=2)
    independent = selection.simulate(2, 0.04, 0.5, 300, rho=0.0, trials=60_000, rng_seed=2)
    assert abs(sim.p_best - selection.two_rates_normal(0.04, 0.5, 300, rho=0.6)) < 4 * sim.p_best_se + 0.005
    assert sim.p_best > independent.p_best + 0.05  # pairing removes shared item noise


def test_more_items_and_more_seeds_choose_better():
    small = selection.simulate(3, 0.05, 0.5, 100, 0.5, trials=20_000)
    large = selection.simulate(3, 0.05, 0.5, 400, 0.5, trials=20_000)
    assert large.p_best > small.p_best and large.expected_loss < small.expected_loss
    one = selection.simulate(3, 0.05, 0.5, 100, 0.5, seeds=1, seed_sd=0.03, trials=20_000)
    three = selection.simulate(3, 0.05, 0.5, 100, 0.5, seeds=3, seed_sd=0.03, trials=20_000)
    assert three.p_best > one.p_best + 0.05
    with pytest.raises(ValueError, match="outside"):
        selection.true_accuracies(3, 0.02, 0.05)


def test_measured_inputs_and_generated_docs_section_are_current():
    m = selection.measured_inputs(ROOT / selection.DOC_RESULTS)
    assert 0 < m.rho < 1 and 0 < m.p < 1 and m.pairs > 0 and m.items > 0
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    block = re.search(re.escape(selection.BEGIN) + r".*?" + re.escape(selection.END), text, re.DOTALL)
    assert block, "docs/benchmarks.md lacks the generated 'Choosing a rate on validation' block"
    assert block.group(0) == selection.docs_section(ROOT / selection.DOC_RESULTS), \
        "regenerate it: python -m pefthub.selection --docs docs/benchmarks.md"

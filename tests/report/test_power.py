"""pefthub.report.power: variance components recovered from simulated suites, the detectable gain
counting both items and seeds, and the seeds a gain needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pefthub.report import power
from pefthub.report.records import Items, RunRecord
from pefthub.report.table import read_table, suite_table

ROOT = Path(__file__).resolve().parents[2]


def record(method: str, seed: int, correct: np.ndarray, rid: str) -> RunRecord:
    """A made-up run (test input) scored 0/1 on items t-0 … t-(n-1)."""
    n = len(correct)
    config = {"method": method, "trainer": "none" if method == "base" else "sft", "model": "m",
              "task": {"name": "t"}, "eval": {"limit": n}, "seed": seed, "learning_rate": None if method == "base" else 1e-3}
    acc = float(correct.mean())
    doc = {"run_id": rid, "status": "success", "config": config, "finished_at": "2026-01-01",
           "evaluation": {"test": {"accuracy": acc, "n": n, "ci_low": acc, "ci_high": acc}}}
    ids = tuple(f"t-{i}" for i in range(n))
    items = Items(ids, correct.astype(bool), np.zeros(n, dtype=np.int64), (None,) * n, (None,) * n, n, 0, 0)
    return RunRecord(doc, None, items={"test": items})


def simulated(rng, n=400, seeds=3, rows=6, seed_sd=0.06, gain=0.1):
    """Base at 30%; each row gains ``gain`` on average, each of its seeds shifted by N(0, seed_sd)."""
    difficulty = rng.random(n)
    base = difficulty < 0.3
    records = [record("base", 0, base, "base")]
    for r in range(rows):
        for s in range(seeds):
            shift = gain + rng.normal(0, seed_sd)
            records.append(record(f"m{r}", s, difficulty < 0.3 + shift, f"m{r}s{s}"))
    return suite_table(records)


def test_components_recover_the_seed_spread_and_more_seeds_lower_the_detectable_gain():
    rng = np.random.default_rng(1)
    table = simulated(rng)
    p = power.suite_power(table.rows, table.base)
    assert p.parts is not None and p.parts.rows == 6
    assert np.sqrt(p.parts.seed) == pytest.approx(0.06, abs=0.03)       # the simulated seed spread
    at = [power._detectable(p.parts, p.n_items, s) for s in (1, 3, 10, 100)]
    assert at == sorted(at, reverse=True) and at[-1] >= p.floor         # more seeds help, down to the floor
    assert p.detectable == pytest.approx(at[1]) and p.detectable > p.floor
    need = p.seeds_to_detect(0.08)
    assert need is not None and power._detectable(p.parts, p.n_items, need) <= 0.08
    assert need == 1 or power._detectable(p.parts, p.n_items, need - 1) > 0.08
    assert p.seeds_to_detect(p.floor / 2) is None                         # below the floor: more items, not seeds
    text = p.sentence()
    assert "a seed moves a row's accuracy by" in text and "would detect that" in text


def test_power_is_stated_at_the_seed_count_most_rows_have_and_names_the_smallest_gap():
    """cpu-paper-shape-v2: six rows at 3 seeds, two (the primary's) at 5: the figures are at 3 seeds, and the
    smallest |Δ| among the rows tested (tinylora@1/sft, +6.2) is named with the seeds it would need."""
    table = read_table(ROOT / "leaderboards" / "cpu-paper-shape-v2" / "results", control="lora/grpo")
    p = power.suite_power(table.rows, table.base)
    assert max(r.seeds for r in table.rows) == 5 and p.seeds == 3
    label, gap = p.smallest
    assert label == "tinylora@1/sft" and gap == pytest.approx(0.0617, abs=1e-4) and gap < p.observed
    assert p.seeds_to_detect(gap) is None and gap > p.floor     # above the floor, yet past 100 seeds
    assert "a row at 3 seeds is detected" in p.sentence() and "`tinylora@1/sft`'s 6.2 points" in p.sentence()
    assert p.as_record()["observed_smallest_row"] == "tinylora@1/sft"


def test_without_seed_spread_the_figures_say_it_is_not_measured():
    rng = np.random.default_rng(2)
    table = simulated(rng, seeds=1)
    p = power.suite_power(table.rows, table.base)
    assert p.parts is None and p.detectable is None and p.one_way is not None
    assert "not measured here" in p.sentence()
    given = power.suite_power(n_items=64, seeds=3, base_accuracy=0.25)
    assert given.base_source == "given" and given.one_way == power.detectable_difference(64, 0.25, assumption="one-way")


def test_the_committed_suite_needs_more_than_its_items_alone_say():
    """cpu-paper-shape: with its measured seed spread, 3 seeds detect less than items alone (best case) claim."""
    table = read_table(ROOT / "leaderboards" / "cpu-paper-shape" / "results")
    p = power.suite_power(table.rows, table.base)
    assert p.seeds == 3 and p.parts.rows >= 5
    assert p.detectable > p.floor > p.one_way                 # items alone (one way) are optimistic
    label, own = p.widest
    assert own.seed >= p.parts.seed and power._detectable(own, p.n_items, 3) > p.detectable

"""`pefthub compare` names each arm's run-health flags (pefthub/report/health.py) on the committed
cpu-paper-shape results, and gives no verdict for an arm that did not train (no-op or collapsed on a
majority of its seeds, or flat-reward)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pefthub.report import health
from pefthub.cli import main

PAPER = Path(__file__).resolve().parents[2] / "leaderboards" / "cpu-paper-shape" / "results"
NOOP_RUN = "64518c88de3a1cde"  # tinylora@13/grpo seed 0: flagged no-op


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err  # rich wraps long lines at the terminal width


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")


def test_compare_names_a_no_op_arm_and_qualifies_the_verdict(capsys):
    code, out, err = run_cli(capsys, "compare", "tinylora@13/grpo", "tinylora@13/sft", "--suite", "cpu-paper-shape",
                             "--results", str(PAPER))
    assert code == 0, err
    assert ("A (tinylora@13/grpo) is flagged no-op on 1 of 3 seeds: 380 of 400 test completions byte-identical to "
            "base; same score (the other seeds: 377/384 of 400 identical, score changed)") in out
    assert "no-op: the run did not change the model" in out  # the flag's meaning, from health.MEANING
    # the GRPO reward did not rise over the 8 steps (health.reward_rise), so the arm did not train
    assert "A (tinylora@13/grpo) is flagged flat-reward: reward rise (second half of 8 steps − first half)" in out
    assert "not tested: A is flagged flat-reward" in out and "different at α" not in out
    assert "B (tinylora@13/sft) is flagged" not in out

    code, out, err = run_cli(capsys, "compare", "tinylora@13/grpo", "tinylora@13/sft", "--results", str(PAPER), "--json")
    doc = json.loads(out)
    assert doc["tested"] is False and doc["flags_b"] == []
    noop, flat = doc["flags_a"]
    assert (noop["name"], noop["seeds_flagged"], noop["seeds"], noop["untested"]) == ("no-op", 1, 3, False)
    assert (flat["name"], flat["seeds_flagged"], flat["seeds"], flat["untested"]) == ("flat-reward", 3, 3, True)


def test_no_verdict_when_every_seed_of_an_arm_is_no_op(capsys):
    code, out, err = run_cli(capsys, "compare", NOOP_RUN, "tinylora@13/sft", "--suite", "cpu-paper-shape",
                             "--results", str(PAPER))
    assert code == 0, err
    assert (f"A (tinylora@13/grpo (run {NOOP_RUN})) is flagged no-op: 380 of 400 test completions byte-identical "
            "to base; same score — not tested") in out
    assert "not tested: A is flagged no-op" in out
    assert "different at α" not in out and "not distinguishable at α" not in out
    code, out, err = run_cli(capsys, "compare", NOOP_RUN, "tinylora@13/sft", "--suite", "cpu-paper-shape",
                             "--results", str(PAPER), "--json")
    assert json.loads(out)["tested"] is False


def test_row_flags_count_seeds_from_the_health_module():
    from pefthub.report.table import read_table

    rows = {r.label: r for r in read_table(PAPER).rows}
    flag, flat = rows["tinylora@1/grpo"].flags
    assert (flag.name, flag.flagged, flag.seeds) == (health.NO_OP, 2, 3)
    assert flag.severity == "warning" and flag.untested  # no-op on a majority of seeds: did not train
    assert flat.name == health.FLAT_REWARD and health.did_not_train([flag, flat]) == [flag, flat]
    [runaway] = rows["tinylora@120/sft"].flags
    assert runaway.name == health.RUNAWAY and not runaway.untested and health.did_not_train([runaway]) == []
    assert rows["base"].flags == []  # the base row is what the others are measured against

"""The constant-answer floor (pefthub.report.floor): on a task with few answers, a row that only learned to
give the most common one beats base without learning the task. The positive control must beat the floor
too, the findings show every row against it, and a run that gives one answer to every item is collapsed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pefthub.report import findings, health
from pefthub.report.floor import constant_answer
from pefthub.report.table import read_table
from test_findings import write_row

N = 300
GOLD = np.array(["2"] * 150 + ["3"] * 90 + ["4"] * 60)      # "2" is the most common answer: 50%


def write(directory: Path, method: str, params, trainer: str, answers: np.ndarray) -> None:
    """A run whose extracted answer on item i is ``answers[i]`` (``None``: no answer), scored against GOLD."""
    write_row(directory, method, params, trainer, answers == GOLD, answers=answers, gold=GOLD)


def mostly(answer: str, share: float, rng) -> np.ndarray:
    """``answer`` on a ``share`` of the items, the others a random one of 1-5."""
    out = rng.choice(["1", "2", "3", "4", "5"], size=N).astype(object)
    out[rng.random(N) < share] = answer
    return out


def suite(directory: Path, control: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    base = rng.choice(["1", "2", "3", "4", "5", None], size=N).astype(object)       # about 15% right
    write(directory, "base", None, "none", base)
    write(directory, "lora", None, "grpo", control)
    write(directory, "tinylora", 13, "grpo", mostly("3", 0.5, rng))
    write(directory, "tinylora", 13, "sft", mostly("2", 0.8, rng))                  # about the floor


def test_the_floor_is_the_most_common_gold_answer_scored_on_the_same_items(tmp_path):
    suite(tmp_path, mostly("2", 0.8, np.random.default_rng(2)))
    table = read_table(tmp_path, control="lora/grpo")
    floor = table.floor
    assert floor is not None and floor.answer == "2" and floor.distinct == 3 and floor.accuracy == 0.5
    again = constant_answer(table.base)
    assert (again.answer, again.accuracy) == (floor.answer, floor.accuracy) and floor.n_items == N
    row = table.row("tinylora@13/sft")
    c = row.vs_floor
    assert c.b == 'always "2"' and c.accuracy_b == 0.5 and c.accuracy_a == row.accuracy and c.n_items == N
    # paired on items: the floor is right exactly on the items whose gold is "2"
    assert c.b_only + c.both_right == 150


def test_a_control_that_beats_base_but_not_the_floor_does_not_pass(tmp_path):
    rng = np.random.default_rng(3)
    suite(tmp_path, mostly("2", 0.85, rng))       # answers "2" mostly: beats base, not the floor, not collapsed
    rows = read_table(tmp_path, control="lora/grpo").rows
    gate = findings.positive_control(rows, "lora/grpo")
    assert not gate.untrained and gate.comparison.low > 0          # it beat base ...
    assert gate.versus_floor.low <= 0 and not gate.passed          # ... but not the constant answer
    assert gate.note().startswith('the positive control lora/grpo did not beat the constant answer always "2" (50.0%)')
    found = {f.claim.key: f for _, fs in findings.check(rows, control=gate) for f in fs}
    assert found["grpo-vs-sft@13"].verdict == findings.NOT_TESTED
    text = findings.render_markdown("synthetic", rows, "x", control="lora/grpo")
    assert '| `lora/grpo` − always "2" |' in text and "**not above**" in text
    assert 'Δ vs always "2" [95% CI] |' in text
    head = findings.headline("synthetic", rows, control="lora/grpo")
    assert "it beat base but not the constant answer" in head
    assert "so no row is shown to have learned more than to give the most common answer" in head


def test_a_control_above_the_floor_passes_and_a_sft_row_at_the_floor_is_named(tmp_path):
    answers = GOLD.astype(object).copy()
    answers[np.random.default_rng(4).random(N) < 0.25] = "5"          # right on about 75% of the items
    suite(tmp_path, answers)
    rows = read_table(tmp_path, control="lora/grpo").rows
    gate = findings.positive_control(rows, "lora/grpo")
    assert gate.passed and gate.versus_floor.low > 0
    assert 'it beat base and always "2" (50.0%): Δ +' in gate.sentence()
    found = {f.claim.key: f for _, fs in findings.check(rows, control=gate, floor=gate.floor) for f in fs}
    sft = found["sft:13-vs-base"]
    assert sft.verdict == findings.SUPPORTED and sft.below_floor
    assert 'tinylora@13/sft is not above always "2" (50.0%)' in findings.statement(sft)
    from pefthub.site.pages import _verdict
    sft_row = next(r for r in rows if r.label == "tinylora@13/sft")
    assert _verdict(sft_row)["text"] == 'better than base, not above always "2"'
    assert _verdict(next(r for r in rows if r.label == "lora/grpo"))["text"] == "better than base"
    assert sft_row.as_record()["delta_vs_floor"] == sft_row.vs_floor.delta
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from pefthub.commands.bench_command import print_results
    out = io.StringIO()
    print_results(Console(file=out, width=400), SimpleNamespace(name="s", model="m", task={"name": "t"}),
                  read_table(tmp_path, control="lora/grpo"), total=4, have=4)
    assert ('Constant-answer floor: always answering "2", the most common of the 3 distinct answers among the 300 '
            'test items, scores 50.0%; of the 3 rows better than base, not shown above it: tinylora@13/sft, '
            'tinylora@13/grpo (they may only have learned') in out.getvalue()
    head = findings.headline("synthetic", rows, control="lora/grpo")
    assert 'only 1 of them also beats the constant answer (always answering "2", the most common of the 3 ' \
        'distinct answers among the 300 test items, scores 50.0%): `lora/grpo`' in head


def test_one_answer_to_every_item_is_collapsed_unless_the_gold_is_one_answer(tmp_path):
    suite(tmp_path, np.array(["2"] * N, dtype=object))
    table = read_table(tmp_path, control="lora/grpo")
    flags = table.row("lora/grpo").flags
    assert [f.name for f in flags] == [health.COLLAPSED]
    assert 'the same answer "2" to 300/300 test items (the most common gold answer covers 150)' == flags[0].detail
    gate = findings.positive_control(table.rows, "lora/grpo")
    assert gate.untrained == "collapsed" and not gate.passed
    c = gate.versus_floor
    assert c.delta == 0 and c.a_only == c.b_only == 0 and c.low < 0 < c.high
    # a task whose every gold answer is the same: answering it every time is not a collapse
    global GOLD
    saved, GOLD = GOLD, np.array(["2"] * N)
    try:
        suite(tmp_path / "one", np.array(["2"] * N, dtype=object))
        assert read_table(tmp_path / "one").row("lora/grpo").flags == []
    finally:
        GOLD = saved

"""A suite's positive control (suite.toml ``positive_control``): unless that row trained and beat base with
its interval above 0, no comparison with an arm of its trainer is tested (findings, versus-base table, headline)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pefthub.report import findings, stats
from pefthub.report.table import read_table
from test_findings import N, flat_curves, set_curves, write_row

GRPO = ("grpo-vs-sft@13", "grpo:13-vs-1", "grpo:13-vs-lora")     # each has a GRPO arm
SFT = ("sft:13-vs-1", "sft:13-vs-base", "sft:13-vs-lora")         # none has


def control_suite(directory: Path, control_gain: int | None) -> None:
    """Base at ~30%; lora/grpo (the control) right on ``control_gain`` more items than base (no row when
    ``None``); GRPO and SFT rows of TinyLoRA at 1 and 13 parameters and LoRA SFT, all above base."""
    rng = np.random.default_rng(4)
    base = rng.random(N) < 0.3
    wrong = np.flatnonzero(~base)

    def better(k: int) -> np.ndarray:
        y = base.copy()
        y[wrong[:k]] = True
        return y

    write_row(directory, "base", None, "none", base)
    if control_gain is not None:
        write_row(directory, "lora", None, "grpo", better(control_gain))
    write_row(directory, "tinylora", 1, "grpo", better(4))
    write_row(directory, "tinylora", 13, "grpo", better(30))
    write_row(directory, "tinylora", 1, "sft", better(3))
    write_row(directory, "tinylora", 13, "sft", better(12))
    write_row(directory, "lora", None, "sft", better(40))


def checked(rows, control: str | None, primary=()):
    gate = findings.positive_control(rows, control)
    results = findings.check(rows, primary=primary, control=gate)
    return gate, results, {f.claim.key: f for _, fs in results for f in fs}


def test_a_passing_control_leaves_every_comparison_as_before(tmp_path):
    control_suite(tmp_path, 40)
    rows = read_table(tmp_path).rows
    gate, results, found = checked(rows, "lora/grpo")
    assert gate.passed and gate.comparison.low > 0 and gate.comparison.b == "base"
    _, _, before = checked(rows, None)
    assert {k: (f.verdict, f.comparison and f.comparison.p_holm) for k, f in found.items()} == \
        {k: (f.verdict, f.comparison and f.comparison.p_holm) for k, f in before.items()}
    assert all(found[k].tested for k in GRPO + SFT)
    assert findings.tested_versus_base(rows, gate) == findings.tested_versus_base(rows)
    text = findings.render_markdown("synthetic", rows, "x", control="lora/grpo")
    assert text.index(f"## {findings.CONTROL_QUESTION}") < text.index("## GRPO vs SFT at 13 parameters")
    assert "| **passed** |" in text and "it beat base, so GRPO comparisons are tested" in text


def test_a_failing_control_leaves_the_grpo_comparisons_untested(tmp_path):
    control_suite(tmp_path, 2)     # 2 of 120 items better than base: the interval reaches below 0
    rows = read_table(tmp_path).rows
    primary = [("tinylora@13/grpo", "tinylora@13/sft")]
    gate, results, found = checked(rows, "lora/grpo", primary)
    c = gate.comparison
    assert c.delta > 0 and c.low <= 0 and not gate.passed
    note = (f"the positive control lora/grpo did not beat base (Δ {stats.fmt_pct(c.delta, sign=True)}, 95% CI "
            f"[{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}]); "
            "GRPO is not shown to learn on this model")
    assert gate.note() == note
    first = results[0][1][0]       # the primary comparison has a GRPO arm: not tested either
    assert first.family == findings.PRIMARY and first.verdict == findings.NOT_TESTED and first.note == note
    for key in GRPO[1:]:
        assert found[key].verdict == findings.NOT_TESTED and found[key].note == note
        assert found[key].comparison.p_holm is None
    family = findings.made(results)
    assert sorted(f.claim.key for f in family) == sorted(SFT)    # the GRPO ones left the Holm family
    assert [f.comparison.p_holm for f in family] == pytest.approx(stats.holm([f.comparison.p_value for f in family]))
    # the versus-base table: GRPO rows not tested, Holm over the SFT rows only
    outcomes = findings.tested_versus_base(rows, gate)
    sft = [outcomes[label] for label in ("tinylora@1/sft", "tinylora@13/sft", "lora/sft")]
    assert all(outcomes[label].p_holm is None for label in ("lora/grpo", "tinylora@1/grpo", "tinylora@13/grpo"))
    assert [x.p_holm for x in sft] == pytest.approx(stats.holm([x.p_value for x in sft]))
    assert next(r for r in rows if r.label == "lora/sft").vs_base.p_holm != sft[2].p_holm  # rows untouched
    lines = findings.versus_base_lines(rows, control=gate)
    row = next(x for x in lines if x.startswith("| `tinylora@13/grpo` |"))
    assert f"(not in the family) | not tested: {note} |" in row
    assert "(not in the family)" not in next(x for x in lines if x.startswith("| `lora/sft` |"))
    text = findings.render_markdown("synthetic", rows, "x", primary=primary, control="lora/grpo")
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[:2] == [f"## {findings.PRIMARY_QUESTION}", f"## {findings.CONTROL_QUESTION}"]
    assert f"| **not passed**: {note} |" in text and "3 rows tested" in text
    head = findings.headline("synthetic", rows, primary=primary, control="lora/grpo")
    assert head.startswith(f"Primary comparison `tinylora@13/grpo` − `tinylora@13/sft`: not tested: {note}")
    assert head.index(f". Positive control `lora/grpo` − `base`: {stats.interval_text(c)} points") < head.index(
        "it did not beat base, so GRPO is not shown to learn on this model")
    assert "3 GRPO rows that trained are not tested for want of a positive control" in head
    assert "over the 3 rows tested" in head


def test_a_control_that_did_not_train_or_is_not_measured_does_not_pass(tmp_path):
    control_suite(tmp_path, 40)
    set_curves(tmp_path, "lora/grpo", {0: flat_curves([0.1, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0, 0.1])})
    rows = read_table(tmp_path).rows
    gate, results, found = checked(rows, "lora/grpo")
    assert gate.comparison.low > 0 and gate.untrained == "flat-reward" and not gate.passed
    assert gate.note().startswith("the positive control lora/grpo did not train (flat-reward) (Δ +33.3")
    assert all(found[k].verdict == findings.NOT_TESTED for k in GRPO) and all(found[k].tested for k in SFT)
    control_suite(tmp_path / "none", None)
    rows = read_table(tmp_path / "none").rows
    gate, results, found = checked(rows, "lora/grpo")
    assert gate.comparison is None and not gate.passed
    assert gate.note() == "positive control not measured yet (no lora/grpo row); GRPO is not shown to learn on this model"
    assert found["grpo-vs-sft@13"].verdict == findings.NOT_TESTED and found["sft:13-vs-base"].tested
    assert findings.headline("synthetic", rows, control="lora/grpo").startswith(
        "Positive control `lora/grpo`: positive control not measured yet (no lora/grpo row)")


def test_the_suite_key_is_checked_and_reaches_the_findings_command(tmp_path, monkeypatch, capsys):
    from pefthub import suites
    from pefthub.cli import main
    from pefthub.errors import ConfigError

    data = {"model": "tiny-random", "task": {"name": "chain_sum"}, "budget": {"steps": 1},
            "grid": {"methods": ["lora", "tinylora"], "params": [], "learning_rates": [1e-3]},
            "methods": {"tinylora": {"params": [1, 13]}}}
    file = tmp_path / "suite.toml"
    assert suites.parse(dict(data), file).positive_control is None
    parsed = suites.parse(dict(data, positive_control="tinylora@13/grpo"), file)
    assert parsed.positive_control == "tinylora@13/grpo"
    ids = [e.run_id for e in suites.expand(suites.parse(dict(data), file))]
    assert [e.run_id for e in suites.expand(parsed)] == ids  # not part of any run's config
    for bad in ("lora/grpoo", "base", 3, ["lora/grpo"]):
        with pytest.raises(ConfigError) as err:
            suites.parse(dict(data, positive_control=bad), file)
        assert str(err.value) == (f"{file}: positive_control: {bad!r} is not a row of this suite (rows: lora/sft, "
                                  "lora/grpo, tinylora@1/sft, tinylora@1/grpo, tinylora@13/sft, tinylora@13/grpo)")
    # the command reads the key from benchmarks/<suite>/suite.toml
    (tmp_path / "benchmarks" / "synthetic").mkdir(parents=True)
    (tmp_path / "benchmarks" / "synthetic" / "suite.toml").write_text(
        'model = "tiny-random"\npositive_control = "lora/grpo"\n[task]\nname = "chain_sum"\n[budget]\nsteps = 1\n'
        '[grid]\nmethods = ["lora"]\nlearning_rates = [1e-3]\n', encoding="utf-8")
    control_suite(tmp_path / "results", 2)
    monkeypatch.chdir(tmp_path)
    assert findings.declared_control("synthetic") == "lora/grpo"
    assert main(["findings", "synthetic", "--results", "results", "--stdout"]) == 0
    out = capsys.readouterr().out
    assert f"## {findings.CONTROL_QUESTION}" in out and "not tested: the positive control lora/grpo" in out


def test_the_site_states_the_control_after_the_primary_and_gates_as_the_page_does(tmp_path, monkeypatch):
    from pefthub.site.aggregate import view_suite
    from pefthub.site.load import load_leaderboards
    from pefthub.site.pages import findings_context

    (tmp_path / "benchmarks" / "synthetic").mkdir(parents=True)
    (tmp_path / "benchmarks" / "synthetic" / "suite.toml").write_text(
        'model = "tiny-random"\npositive_control = "lora/grpo"\nprimary = ["tinylora@13/grpo - tinylora@13/sft"]\n[task]\nname = "chain_sum"\n[budget]\nsteps = 1\n'
        '[grid]\nmethods = ["lora"]\nlearning_rates = [1e-3]\n', encoding="utf-8")
    control_suite(tmp_path / "leaderboards" / "synthetic" / "results", 2)
    monkeypatch.chdir(tmp_path)
    (suite,) = load_leaderboards(tmp_path / "leaderboards")[0]
    questions = findings_context(view_suite(suite))
    assert [q["question"] for q in questions[:2]] == [findings.PRIMARY_QUESTION, findings.CONTROL_QUESTION]
    [control] = questions[1]["items"]
    assert (control["a"], control["b"], control["verdict"]) == ("lora/grpo", "base", "not passed")
    assert questions[0]["items"][0]["verdict"] == findings.NOT_TESTED
    items = {(f["a"], f["b"]): f for q in questions[2:] for f in q["items"]}
    assert items[("tinylora@13/grpo", "tinylora@13/sft")]["verdict"] == findings.COUNTED_ONCE
    assert items[("tinylora@13/grpo", "lora/grpo")]["verdict"] == findings.NOT_TESTED
    assert items[("tinylora@13/sft", "base")]["verdict"] != findings.NOT_TESTED


def test_the_table_gates_on_the_control_so_bench_site_and_power_agree(tmp_path):
    """`pefthub bench`'s table, the site's "vs base" cells and the power line read the rows of
    :func:`suite_table`: a failed control leaves its trainer's rows without a verdict there too."""
    import io

    from rich.console import Console

    from pefthub.commands.bench_command import print_results
    from pefthub.report.power import suite_power
    from pefthub.site.pages import _verdict
    from types import SimpleNamespace

    control_suite(tmp_path, 2)
    plain, gated = read_table(tmp_path), read_table(tmp_path, control="lora/grpo")
    assert plain.control is None and gated.control is not None and not gated.control.passed
    note = gated.control.note()
    grpo, sft = ("lora/grpo", "tinylora@1/grpo", "tinylora@13/grpo"), ("tinylora@1/sft", "tinylora@13/sft", "lora/sft")
    for label in grpo:
        row = gated.row(label)
        assert row.vs_base.verdict is None and row.vs_base.p_holm is None and row.untested == note
        assert plain.row(label).vs_base.verdict is not None and plain.row(label).untested == ""
        cell = _verdict(row)
        assert cell["text"] == "not tested" and cell["title"].startswith(f"not tested: {note}: ")
    family = [gated.row(label).vs_base for label in sft]
    assert [c.p_holm for c in family] == pytest.approx(stats.holm([c.p_value for c in family]))
    assert findings.tested_versus_base(gated.rows, gated.control)["lora/sft"].p_holm == family[2].p_holm
    assert suite_power(gated.rows, gated.base).family == 3 and suite_power(plain.rows, plain.base).family == 6
    out = io.StringIO()
    print_results(Console(file=out, width=250), SimpleNamespace(name="s", model="m", task={"name": "t"}), gated,
                  total=7, have=7)
    text = out.getvalue()
    assert "Holm's correction over the 3 rows" in text and "\nPositive control `lora/grpo` − `base`: " in text
    assert "Positive control: Positive control" not in text
    assert [line for line in text.splitlines() if "│ grpo " in line and "not tested" not in line] == []
    passing = tmp_path / "passing"
    control_suite(passing, 40)
    before, after = read_table(passing), read_table(passing, control="lora/grpo")
    assert after.control.passed
    assert [(r.label, r.vs_base and (r.vs_base.p_holm, r.vs_base.verdict)) for r in after.rows] == \
        [(r.label, r.vs_base and (r.vs_base.p_holm, r.vs_base.verdict)) for r in before.rows]

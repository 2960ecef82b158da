"""`pefthub findings`: the paper's questions answered from results, verdicts from paired statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pefthub import results
from pefthub.report import findings, health, stats
from pefthub.report.records import read_records
from pefthub.report.table import read_table, versus_base

REPO = Path(__file__).resolve().parents[2]
N = 120


def write_row(directory: Path, method: str, params, trainer: str, correct: np.ndarray, seed: int = 0,
              completions: list[str] | None = None, answered: bool = True, answers=None, gold=None) -> None:
    """A run right on the items where ``correct`` is true; with ``answers`` and ``gold`` its samples carry
    the extracted and gold answers too."""
    config = {"model": "tiny-random", "task": {"name": "t"}, "trainer": trainer, "trainer_options": {},
              "method": method, "method_config": {}, "params_target": params,
              "learning_rate": None if method == "base" else 1e-3, "seed": seed, "budget": {"steps": 2},
              "eval": {"split": "test", "limit": len(correct)}}
    doc = results.new_result(config, suite="synthetic", status="success", finished_at=results.utc_now())
    doc["method"] = {"name": method, "trainable_params": params or 0}
    acc = float(correct.mean())
    doc["evaluation"] = {"test": {"accuracy": acc, "n": len(correct), "ci_low": acc, "ci_high": acc,
                                  "ci_method": "wilson"}}
    samples = [{"split": "test", "id": f"t-{i}", "correct": bool(c)} for i, c in enumerate(correct)]
    if answers is not None:
        for sample, answer, truth in zip(samples, answers, gold):
            sample.update(gold=str(truth), extracted=answer, completion=f"{method} {trainer} {sample['id']} {answer}")
    for i, sample in enumerate(samples):
        if completions is not None:
            sample["completion"] = completions[i]
        if answered and completions is not None:
            sample["extracted"] = str(i)
    results.write_result(directory, doc, samples)


def synthetic_suite(directory: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.random(N) < 0.3
    def better(x, k):   # fix k of the wrong items
        y = x.copy()
        y[np.flatnonzero(~x)[:k]] = True
        return y
    def worse(x, k):
        y = x.copy()
        y[np.flatnonzero(x)[:k]] = False
        return y
    write_row(directory, "base", None, "none", base)
    write_row(directory, "tinylora", 1, "grpo", base)
    write_row(directory, "tinylora", 13, "grpo", better(base, 30))          # 13 > 1 under GRPO: supported
    write_row(directory, "tinylora", 120, "grpo", better(base, 31))         # ~120 vs 13: a null
    write_row(directory, "tinylora", 13, "sft", worse(base, 25))            # below base: contradicts +7
    write_row(directory, "lora", None, "sft", better(base, 40))             # tiny below LoRA under SFT: supported


def test_verdicts_on_a_synthetic_suite(tmp_path):
    synthetic_suite(tmp_path)
    rows = read_table(tmp_path).rows
    checked = {f.claim.key: f for _, fs in findings.check(rows) for f in fs}
    # tinylora@1/grpo answers exactly as base (no-op on its only seed): it did not train, so no verdict
    assert checked["grpo:13-vs-1"].verdict == findings.NOT_TESTED
    assert checked["grpo:13-vs-1"].note == "tinylora@1/grpo did not train (no-op)"
    assert checked["grpo:120-vs-13"].a == "tinylora@120/grpo"
    assert checked["sft:13-vs-base"].verdict == findings.CONTRADICTED
    assert checked["sft:13-vs-lora"].verdict == findings.SUPPORTED
    assert checked["grpo:13-vs-full"].verdict == findings.NOT_MEASURED
    assert checked["grpo:13-vs-full"].note == "no full/grpo row"
    made = [f for f in checked.values() if f.tested]
    assert len(made) == 4  # grpo:13-vs-1 is not tested (tinylora@1/grpo is a no-op); two are not measured
    assert [f.comparison.p_holm for f in made] == pytest.approx(stats.holm([f.comparison.p_value for f in made]))
    assert checked["grpo:120-vs-13"].verdict == f"{findings.NULL} (1 seed)"
    text = findings.render_markdown("synthetic", rows, "x")
    assert "not significant after Holm (1 seed)" in text and "**contradicted**" in text
    assert "No difference is detectable" not in text and "indistinguishable" not in text
    assert findings.PAPER["grpo-vs-sft@13"].text().startswith("+8.0 (91% vs 83%")


#: The chain_sum `quick` board, kept as a fixture (benchmarks/cpu-pilots/quick-v1) and its findings command.
QUICK_V1 = ["cpu-pilots-quick-v1", "--results", "leaderboards/cpu-pilots/quick-v1/results"]


def test_committed_quick_v1_findings_are_the_generated_ones(capsys, monkeypatch, tmp_path):
    from pefthub.cli import main

    monkeypatch.chdir(REPO)
    assert main(["findings", *QUICK_V1, "--stdout"]) == 0
    generated = capsys.readouterr().out
    assert generated == (REPO / "docs" / "findings" / "cpu-pilots-quick-v1.md").read_text(encoding="utf-8"), \
        f"stale: pefthub findings {' '.join(QUICK_V1)}"
    assert f"Generated by `pefthub findings {' '.join(QUICK_V1)}`" in generated  # the command that reruns it
    assert "Smoke run" in generated and "not measured in this suite" in generated
    assert main(["findings", *QUICK_V1, "-o", str(tmp_path / "q.md")]) == 0
    assert (tmp_path / "q.md").read_text(encoding="utf-8") == generated


#: The 6-step aiw quick board, kept as a record (benchmarks/cpu-pilots/quick-v2), and its findings command.
QUICK_V2 = ["cpu-pilots-quick-v2", "--results", "leaderboards/cpu-pilots/quick-v2/results"]


@pytest.mark.parametrize("command, page", [
    (["quick"], "quick"), (QUICK_V2, "cpu-pilots-quick-v2"),
    (["cpu-pilots-quick-rates", "--results", "leaderboards/cpu-pilots/quick-rates/results"], "cpu-pilots-quick-rates")])
def test_committed_quick_findings_are_the_generated_ones(capsys, monkeypatch, command, page):
    from pefthub.cli import main

    monkeypatch.chdir(REPO)
    assert main(["findings", *command, "--stdout"]) == 0
    assert capsys.readouterr().out == (REPO / "docs" / "findings" / f"{page}.md").read_text(encoding="utf-8"), \
        f"stale: pefthub findings {' '.join(command)}"


def test_the_quick_board_shows_a_newcomer_a_healthy_row_above_base_and_the_constant_answer():
    """Issue #24 F: what `make bench` shows has rows that trained and beat both base (after Holm) and the
    constant-answer floor; the 6-step board it replaced had none."""
    from pefthub.report.floor import above

    def clear(results_dir):
        rows = read_table(REPO / results_dir).rows
        return sorted(r.label for r in rows if not r.flags and r.vs_base is not None
                      and r.vs_base.verdict == stats.BETTER and above(r.vs_floor))

    assert clear("leaderboards/quick/results") == ["bitfit/sft", "full/sft", "lora/sft", "lora_xs/sft", "vera/sft"]
    assert clear("leaderboards/cpu-pilots/quick-v2/results") == []


def test_findings_of_a_suite_without_results_is_one_error(capsys, tmp_path):
    from pefthub.cli import main

    assert main(["findings", "nosuch", "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: results directory") and err.count("\n") == 1


def test_the_docs_worked_example_is_generated_from_the_quick_v1_results():
    rows = read_table(REPO / QUICK_V1[2]).rows
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    example = findings.worked_example(QUICK_V1[0], rows)
    assert findings.replace_worked_example(text, example) == text, \
        f"stale: pefthub findings {' '.join(QUICK_V1)} --worked-example docs/benchmarks.md"
    assert " ".join(QUICK_V1) in findings.EXAMPLE_START
    c = findings.tested_versus_base(rows)["full/sft"]
    assert f"({c.a_only} − {c.b_only}) / 64" in example and stats.fmt_p(c.p_holm) in example
    assert "rows that trained were compared with base" in example


def tuned_run(directory: Path, lr: float, seed: int, val: np.ndarray, steps: int = 2, status: str = "success",
              load: float = 2.0) -> dict:
    """A lora/sft run with validation and test samples, as a suite tuned on its first seed leaves them."""
    config = {"model": "tiny-random", "task": {"name": "t"}, "trainer": "sft", "trainer_options": {},
              "method": "lora", "method_config": {}, "params_target": None, "learning_rate": lr, "seed": seed,
              "budget": {"steps": steps, "batch_size": 8}, "eval": {"split": "test", "limit": N, "validation_limit": N}}
    doc = results.new_result(config, suite="synthetic", status=status, started_at="2026-12-03T10:00:00Z",
                             finished_at="2026-12-03T10:01:40Z", error=None if status == "success" else "boom")
    doc["budget"] = {"declared": config["budget"], "spent": {"seconds_total": 100.0, "seconds_train": 40.0,
                                                             "seconds_generation": 0.0, "seconds_eval": 50.0}}
    doc["environment"] = {"torch_threads": 2, "load_average": {"start": [load, 1, 1], "end": [load, 1, 1]}}
    if status == "success":
        doc["method"] = {"name": "lora", "trainable_params": 10}
        acc = float(val.mean())
        doc["evaluation"] = {split: {"accuracy": acc, "n": N, "ci_low": acc, "ci_high": acc, "ci_method": "wilson"}
                             for split in ("test", "validation")}
    samples = [{"split": s, "id": f"{s}-{i}", "correct": bool(c)} for s in ("test", "validation")
               for i, c in enumerate(val)]
    results.write_result(directory, doc, samples if status == "success" else None)
    return doc


def test_tuning_pilot_and_cost_sections(tmp_path):
    rng = np.random.default_rng(1)
    low, mid = rng.random(N) < 0.3, rng.random(N) < 0.6
    suite, pilot = tmp_path / "suite", tmp_path / "pilot"
    tuned_run(suite, 1e-4, 0, low)
    tuned_run(suite, 1e-3, 0, mid)
    tuned_run(suite, 1e-2, 0, low, status="failed", load=4.5)   # ran beside other work
    tuned_run(suite, 1e-3, 1, mid)
    tuned_run(suite, 1e-3, 2, mid)
    better = mid.copy()
    better[np.flatnonzero(~mid)[:30]] = True
    tuned_run(pilot, 1e-3, 0, better, steps=4)                 # twice the steps, 30 more items right
    table = read_table(suite)
    text = findings.render_markdown("synthetic", table.rows, "x", records=table.records,
                                    pilots=[("pilot", read_records(pilot))])
    row = next(line for line in text.splitlines() if line.startswith("| `lora/sft` |"))
    assert f"**0.001: {stats.fmt_pct(mid.mean())}%**" in row and "0.01: failed" in row
    # the largest rate that succeeded (1e-2 failed), paired with the rate inside on validation; 3 seeds
    assert row.endswith("| 0.001 | high (vs 0.0001: +30.0 [+14.1, +46.9]) | 3 |")
    pilot_row = next(line for line in text.splitlines() if "4 steps × 8" in line)
    assert "| 2 steps × 8 |" in pilot_row and "+25.0 [" in pilot_row  # 30 of 120 items: +25 points, paired
    assert "5 runs (4 successful) took 0.14 h" in text
    assert "1 of them ran beside other work" in text


def test_headline_counts_rows_against_base_and_states_nulls_as_nulls(tmp_path):
    from pefthub.errors import ConfigError

    synthetic_suite(tmp_path)
    rows = read_table(tmp_path).rows
    family = versus_base(rows, next(r for r in rows if r.is_base))
    text = findings.headline("synthetic", rows)
    better = [label for label, c in family.items() if c.verdict == stats.BETTER]
    worse = [label for label, c in family.items() if c.verdict == stats.WORSE]
    assert better and worse  # the synthetic suite has both, so both lists must be named
    assert f"{len(better)} beat the base model's" in text and all(f"`{label}`" in text for label in better + worse)
    assert f"{len(worse)} {'is' if len(worse) == 1 else 'are'} worse" in text
    assert "5 rows" in text and "1 seed each" in text and f"{N} paired test items" in text
    assert "not significant after Holm" in text and "indistinguishable" not in text
    c = stats.compare_rows(*(next(r for r in rows if r.label == f"tinylora@13/{t}") for t in ("grpo", "sft")))
    assert f"GRPO − SFT: {stats.interval_text(c)} points" in text and ", 91% vs 83% on GSM8K" in text
    start = findings.headline_start("synthetic")
    page = f"intro\n{start}\nold text\n{findings.HEADLINE_END}\noutro\n"
    updated = findings.replace_headline(page, "synthetic", text)
    assert updated == f"intro\n{start}\n{text}\n{findings.HEADLINE_END}\noutro\n"
    assert findings.replace_headline(updated, "synthetic", text) == updated
    with pytest.raises(ConfigError, match="no headline markers for suite other"):
        findings.replace_headline(page, "other", text)


def test_the_readme_headline_is_generated_from_the_sweep_results(monkeypatch):
    monkeypatch.chdir(REPO)
    rows = read_table(REPO / "leaderboards" / "cpu-paper-shape" / "results").rows
    text = (REPO / "README.md").read_text(encoding="utf-8")
    primary = findings.declared_primary("cpu-paper-shape")
    assert primary == [("tinylora@13/grpo", "tinylora@13/sft")]
    paragraph = findings.headline("cpu-paper-shape", rows, primary=primary)
    assert findings.replace_headline(text, "cpu-paper-shape", paragraph) == text, \
        "stale: pefthub findings cpu-paper-shape --pilot leaderboards/cpu-pilots/steps/results --headline README.md"


def test_the_readme_quick_headline_is_generated_from_its_results(monkeypatch):
    """The README's paragraph on what `make bench` shows comes from leaderboards/quick/results (an SFT-only
    board: no positive control to gate on)."""
    monkeypatch.chdir(REPO)
    control = findings.declared_control("quick")
    assert control is None
    rows = read_table(REPO / "leaderboards" / "quick" / "results", control=control).rows
    text = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = findings.headline("quick", rows, primary=findings.declared_primary("quick"), control=control)
    assert findings.headline_start("quick") in text
    assert findings.replace_headline(text, "quick", paragraph) == text, \
        "stale: pefthub findings quick --headline README.md"


def flagged_suite(directory: Path) -> None:
    """Base; tinylora@13/grpo whose seed 0 answers exactly as base (no-op) and seed 1 better; an
    unflagged tinylora@13/sft below base; lora/sft better than base but without extractable answers
    (collapsed)."""
    rng = np.random.default_rng(2)
    base = rng.random(N) < 0.3
    texts = [f"base answer {i}" for i in range(N)]
    better = base.copy()
    better[np.flatnonzero(~base)[:40]] = True
    worse = base.copy()
    worse[np.flatnonzero(base)[:20]] = False
    write_row(directory, "base", None, "none", base, completions=texts)
    write_row(directory, "tinylora", 13, "grpo", base, seed=0, completions=texts)
    write_row(directory, "tinylora", 13, "grpo", better, seed=1, completions=[f"grpo {i}" for i in range(N)])
    write_row(directory, "tinylora", 13, "sft", worse, completions=[f"sft {i}" for i in range(N)])
    write_row(directory, "lora", None, "sft", better, completions=[f"lora {i}" for i in range(N)], answered=False)


def test_findings_tables_name_each_rows_health_flags(tmp_path):
    flagged_suite(tmp_path)
    rows = read_table(tmp_path).rows
    flags = findings.flags_of(rows)
    assert [(f.name, f.flagged, f.seeds) for f in flags["tinylora@13/grpo"]] == [(health.NO_OP, 1, 2)]
    assert [f.name for f in flags["lora/sft"]] == [health.COLLAPSED] and flags["tinylora@13/sft"] == []
    lines = findings.render_markdown("synthetic", rows, "x").splitlines()

    def row(prefix: str) -> str:
        return next(line for line in lines if line.startswith(prefix))

    assert row("| `tinylora@13/grpo` |").endswith("| no-op on 1 of 2 seeds |")
    assert row("| `lora/sft` |").endswith("| collapsed |")
    assert row("| `tinylora@13/sft` |").endswith("| ok |")
    assert "| A: no-op on 1 of 2 seeds | +8.0 (91% vs 83%" in row("| `tinylora@13/grpo` − `tinylora@13/sft` |")
    assert "**not tested**: lora/sft did not train (collapsed)" in row("| `tinylora@13/sft` − `lora/sft` |")
    assert "| ok | +7.0 (83% vs 76%" in row("| `tinylora@13/sft` − `base` |")
    assert "| B: collapsed |" in row("| `tinylora@13/sft` − `lora/sft` |")
    # under each table with a flagged row: the flag with its measured detail and what it means
    notes = [line for line in lines if line.startswith("Run health")]
    assert len(notes) == 5  # every question (each names a flagged row) and every row vs base
    assert all(health.MEANING[health.NO_OP] in n for n in notes[:3]) and "lora/sft" in notes[3]
    assert ("`tinylora@13/grpo` is flagged no-op on 1 of 2 seeds: 120 of 120 test completions byte-identical "
            "to base; same score") in notes[0] and "lora/sft" not in notes[0]
    assert "`lora/sft` is flagged collapsed: no extractable answer in 120/120" in notes[-1]
    assert health.MEANING[health.COLLAPSED] in notes[-1]


def test_headline_names_the_flags_of_the_rows_it_mentions(tmp_path):
    flagged_suite(tmp_path)
    text = findings.headline("synthetic", read_table(tmp_path).rows)
    assert "TinyLoRA at 13 parameters, GRPO − SFT (`tinylora@13/grpo` flagged no-op on 1 of 2 seeds): " in text
    assert "1 row did not train and is not tested (collapsed: `lora/sft`)" in text  # it beat base, but collapsed
    synthetic_suite(tmp_path / "clean")
    clean = findings.headline("synthetic", read_table(tmp_path / "clean").rows)
    assert "GRPO − SFT: " in clean and "flagged" not in clean


def committed_page(capsys, monkeypatch, suite: str, pilot: str) -> tuple[list[str], str]:
    """The findings command of a committed suite, and the page it prints, checked equal to the committed one."""
    from pefthub.cli import main

    monkeypatch.chdir(REPO)
    command = ["findings", suite, "--pilot", pilot]
    assert main([*command, "--stdout"]) == 0
    generated = capsys.readouterr().out
    assert generated == (REPO / "docs" / "findings" / f"{suite}.md").read_text(encoding="utf-8"), \
        f"stale: pefthub {' '.join(command)}"
    return command, generated


def test_committed_cpu_paper_shape_findings_gate_the_untrained_grpo_arm(capsys, monkeypatch):
    _, generated = committed_page(capsys, monkeypatch, "cpu-paper-shape", "leaderboards/cpu-pilots/steps/results")
    sections = [line for line in generated.splitlines() if line.startswith("## ")]
    assert sections[0] == f"## {findings.PRIMARY_QUESTION}"
    primary = next(line for line in generated.splitlines() if line.startswith("| `tinylora@13/grpo` − `tinylora@13/sft`"))
    assert "**not tested**: tinylora@13/grpo did not train (flat-reward)" in primary
    assert "`tinylora@13/grpo` is flagged no-op on 1 of 3 seeds: 380 of 400 test completions" in generated
    assert "**counted once**: the same rows as the primary comparison" in generated
    assert "`lora/grpo` seed 1 8.8%" in generated and "`full/grpo` seed 0 12.0%" in generated
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme.split(findings.headline_start("cpu-paper-shape"))[1].lstrip().startswith(
        "Primary comparison `tinylora@13/grpo` − `tinylora@13/sft`: not tested: tinylora@13/grpo did not train")
    assert "neither confirms nor rules out" not in generated + readme and "indistinguishable" not in generated


def flat_curves(rewards: list[float]) -> list[dict]:
    return [{"step": i + 1, "reward": r} for i, r in enumerate(rewards)]


def set_curves(directory: Path, label: str, curves_by_seed: dict[int, list[dict]]) -> None:
    """Give the runs of ``label`` in ``directory`` a GRPO training log (their samples stay)."""
    import json

    for path in directory.glob("*.json"):
        doc = json.loads(path.read_text())
        if stats.row_label(doc["config"]) == label and doc["config"]["seed"] in curves_by_seed:
            doc["curves"] = curves_by_seed[doc["config"]["seed"]]
            path.write_text(json.dumps(doc))


def test_reward_rise_over_seeds_and_over_steps():
    rising = [{"curves": flat_curves([0.1, 0.1, 0.3, 0.35])}, {"curves": flat_curves([0.0, 0.1, 0.3, 0.3])},
              {"curves": flat_curves([0.1, 0.05, 0.25, 0.4])}]
    rise = health.reward_rise(rising)
    assert rise.basis == "seeds" and rise.seeds == 3 and rise.low > 0 and rise.rose()
    flat = [{"curves": flat_curves([0.1, 0.0, 0.1, 0.0])}, {"curves": flat_curves([0.0, 0.1, 0.1, 0.0])},
            {"curves": flat_curves([0.1, 0.1, 0.05, 0.1])}]
    rise = health.reward_rise(flat)
    assert rise.low <= 0 <= rise.high and not rise.rose()
    tiny = [{"curves": flat_curves([0.1, 0.1, 0.11, 0.11])}, {"curves": flat_curves([0.1, 0.1, 0.111, 0.111])}]
    assert health.reward_rise(tiny).low > 0 and not health.reward_rise(tiny).rose()  # above 0, under the threshold
    one = health.reward_rise([{"curves": flat_curves([0.0, 0.05, 0.0, 0.05, 0.6, 0.7, 0.65, 0.7, 0.2])}])
    assert one.basis == "steps" and one.steps == 9 and one.rose()  # odd count: the middle step is left out
    assert health.reward_rise([{"curves": flat_curves([0.1, 0.2, 0.3])}]) is None  # one seed, halves of one step
    assert health.reward_rise([{"curves": [{"step": 1, "loss": 0.3}]}]) is None  # SFT: no reward logged


def test_a_comparison_with_an_arm_that_did_not_train_is_not_tested(tmp_path):
    synthetic_suite(tmp_path)
    rows = read_table(tmp_path).rows
    before = findings.made(findings.check(rows))
    set_curves(tmp_path, "tinylora@13/grpo", {0: flat_curves([0.1, 0.0, 0.0, 0.1, 0.1, 0.0, 0.0, 0.1])})
    rows = read_table(tmp_path).rows
    flags = findings.flags_of(rows)
    assert [f.name for f in flags["tinylora@13/grpo"]] == [health.FLAT_REWARD] and flags["tinylora@13/grpo"][0].untested
    results = findings.check(rows, flags=flags)
    checked = {f.claim.key: f for _, fs in results for f in fs}
    for key in ("grpo-vs-sft@13", "grpo:13-vs-1", "grpo:120-vs-13"):  # 13-vs-1 was out already (1 is no-op)
        assert checked[key].verdict == findings.NOT_TESTED and checked[key].comparison.p_holm is None
        assert "tinylora@13/grpo did not train (flat-reward)" in checked[key].note
    after = findings.made(results)
    assert len(after) == len(before) - 2  # left out of the Holm family
    assert [f.comparison.p_holm for f in after] == pytest.approx(stats.holm([f.comparison.p_value for f in after]))
    assert "not tested: tinylora@13/grpo did not train" in findings.statement(checked["grpo:13-vs-1"])
    text = findings.headline("synthetic", rows, flags)
    assert "TinyLoRA at 13 parameters, GRPO − SFT: not tested: tinylora@13/grpo did not train (flat-reward)" in text
    assert "2 rows did not train and are not tested (no-op: `tinylora@1/grpo`; flat-reward: `tinylora@13/grpo`)" in text
    assert "over the 3 rows that trained" in text
    line = next(x for x in findings.versus_base_lines(rows, flags) if x.startswith("| `tinylora@13/grpo` |"))
    assert "(not in the family) | not tested: did not train (flat-reward) |" in line
    # a rising reward trains: the gate lifts
    set_curves(tmp_path, "tinylora@13/grpo", {0: flat_curves([0.0, 0.05, 0.0, 0.05, 0.6, 0.7, 0.65, 0.7])})
    rows = read_table(tmp_path).rows
    assert len(findings.made(findings.check(rows))) == len(before)


def test_primary_comparison_is_first_on_its_own_and_counted_once(tmp_path):
    synthetic_suite(tmp_path)
    rows = read_table(tmp_path).rows
    primary = [("tinylora@13/grpo", "tinylora@13/sft")]
    results = findings.check(rows, primary=primary)
    question, [first] = results[0]
    assert question == findings.PRIMARY_QUESTION and first.family == findings.PRIMARY
    assert first.claim.key == "grpo-vs-sft@13" and first.figure is findings.PAPER["grpo-vs-sft@13"]
    assert first.comparison.p_holm == first.comparison.p_value  # its own test, not corrected with the others
    again = next(f for _, fs in results[1:] for f in fs if f.claim.key == "grpo-vs-sft@13")
    assert again.verdict == findings.COUNTED_ONCE and again.comparison is None
    family = findings.made(results)
    pairs = [frozenset((f.a, f.b)) for f in family]
    assert len(pairs) == len(set(pairs)) and frozenset(primary[0]) not in pairs
    assert len(family) == len(findings.made(findings.check(rows))) - 1
    text = findings.render_markdown("synthetic", rows, "x", primary=primary)
    assert text.index(findings.PRIMARY_QUESTION) < text.index("## GRPO vs SFT at 13 parameters")
    assert "| own test) |" not in text and "(own test)" in text
    head = findings.headline("synthetic", rows, primary=primary)
    assert head.startswith("Primary comparison `tinylora@13/grpo` − `tinylora@13/sft`: ")
    assert "its own test" in head and "TinyLoRA at 13 parameters" not in head
    # a primary pair that is not among the questions has no paper sign: the verdict names the direction
    other = findings.check(rows, primary=[("lora/sft", "tinylora@120/grpo")])[0][1][0]
    assert other.claim.sign == 0 and other.verdict == "lora/sft higher"


def test_verdict_words_match_the_interval(tmp_path):
    synthetic_suite(tmp_path)
    rows = read_table(tmp_path).rows
    checked = {f.claim.key: f for _, fs in findings.check(rows) for f in fs}
    f = checked["sft:13-vs-base"]   # 25 items worse than base: the interval lies below 0, the paper has +7.0
    assert f.comparison.high < 0 and findings.figure_words(f) == "contradicts the published +7.0"
    assert "the interval contradicts the published +7.0" in findings.statement(f)
    g = checked["sft:13-vs-lora"]   # the published -47.3, against an interval on its side of 0 that misses it
    g.comparison.low, g.comparison.high = -0.30, -0.10
    assert findings.figure_words(g) == "excludes the published -47.3"
    h = checked["grpo-vs-sft@13"]
    h.comparison.low, h.comparison.high = -0.05, 0.10
    assert findings.figure_words(h) == "its interval contains the published +8.0"


def two_seed_suite(directory: Path) -> None:
    """Base; lora/sft far above base on both seeds but by different amounts; full/grpo worse on seed 1."""
    rng = np.random.default_rng(3)
    base = rng.random(N) < 0.3
    wrong, right = np.flatnonzero(~base), np.flatnonzero(base)
    write_row(directory, "base", None, "none", base)
    for seed, k in ((0, 12), (1, 40)):
        y = base.copy()
        y[wrong[:k]] = True
        write_row(directory, "lora", None, "sft", y, seed=seed)
    for seed, k in ((0, 0), (1, 20)):
        y = base.copy()
        y[right[:k]] = False
        write_row(directory, "full", None, "grpo", y, seed=seed)


def test_per_seed_results_list_seeds_worse_than_base(tmp_path):
    two_seed_suite(tmp_path)
    rows = read_table(tmp_path).rows
    seeds = findings.per_seed(rows)
    assert [r.seed for r in seeds["lora/sft"]] == [0, 1] and all(r.significant for r in seeds["lora/sft"])
    assert findings.every_seed_significant(seeds["lora/sft"]) == 1
    assert findings.every_seed_significant(seeds["full/grpo"]) == 0
    [(label, worst)] = findings.worse_seeds(seeds)
    assert (label, worst.seed) == ("full/grpo", 1) and worst.comparison.p_value == stats.mcnemar_p(0, 20)
    every = [r.comparison for found in seeds.values() for r in found]
    assert [c.p_holm for c in every] == pytest.approx(stats.holm([c.p_value for c in every]))
    lines = findings.per_seed_lines(rows, seeds)
    assert any(line.startswith("| `full/grpo` | 0: ") and "1: " in line and " ▼)" in line for line in lines)
    assert any(line.startswith("Seeds significantly worse than base") and "`full/grpo` seed 1" in line for line in lines)
    assert any(line.startswith("Significant on every seed: `lora/sft` (above base on all 2") for line in lines)
    text = findings.render_markdown("synthetic", rows, "x")
    assert "## Every seed against the base model" in text
    lora = next(line for line in text.splitlines() if line.startswith("| `lora/sft` | 0 |"))
    c = versus_base(rows, next(r for r in rows if r.is_base))["lora/sft"]
    if c.verdict == stats.SAME:  # the spread between seeds (12 vs 40 items) keeps it from significance
        assert "not significant after Holm (2 seeds); above base on every seed" in lora
    head = findings.headline("synthetic", rows)
    assert "seeds significantly worse than base: `full/grpo` seed 1" in head


def test_suite_primary_key_is_parsed_and_checked(tmp_path):
    from pefthub import suites
    from pefthub.errors import ConfigError

    data = {"model": "tiny-random", "task": {"name": "chain_sum"}, "budget": {"steps": 1},
            "grid": {"methods": ["lora"], "learning_rates": [1e-3]}}
    file = tmp_path / "suite.toml"
    assert suites.parse(dict(data), file).primary == []
    parsed = suites.parse(dict(data, primary=["lora/grpo - lora/sft", "lora/sft − base"]), file)
    assert parsed.primary == [("lora/grpo", "lora/sft"), ("lora/sft", "base")]
    ids = [e.run_id for e in suites.expand(suites.parse(dict(data), file))]
    assert [e.run_id for e in suites.expand(parsed)] == ids  # not part of any run's config
    for bad, why in (("lora/sft", "is not"), (["lora/sft"], "is not"), (["a - a"], "is not"),
                     (["a - b", "b - a"], "listed twice")):
        with pytest.raises(ConfigError, match=f"primary: .*{why}|primary: must be"):
            suites.parse(dict(data, primary=bad), file)


def test_rows_against_base_show_strict_match_beside_accuracy(tmp_path):
    import json

    synthetic_suite(tmp_path)
    for path in tmp_path.glob("*.json"):
        doc = json.loads(path.read_text())
        if stats.row_label(doc["config"]) in ("tinylora@13/sft", "base"):
            strict = 0.04 if doc["config"]["method"] == "tinylora" else 0.2
            doc["evaluation"]["test"]["metrics"] = {health.STRICT_METRIC: strict}
            path.write_text(json.dumps(doc))
    rows = read_table(tmp_path).rows
    lines = findings.versus_base_lines(rows)
    assert "| row | trained parameters | seeds | accuracy | strict-match |" in "\n".join(lines)
    assert next(x for x in lines if x.startswith("| `tinylora@13/sft` |")).split(" | ")[4] == "4.0%"
    assert next(x for x in lines if x.startswith("| `lora/sft` |")).split(" | ")[4] == "-"
    assert "(base: 20.0%)" in "\n".join(lines)


def test_rows_against_base_by_stratum_with_a_fake_mapping(tmp_path):
    """The strata section splits the paired items by the task's strata (here a made-up mapping standing in
    for pefthub.tasks.strata_of: even items "easy", odd "hard") and compares each part with base."""
    from pefthub.report import strata

    synthetic_suite(tmp_path)
    rows = read_table(tmp_path).rows
    calls = []

    def fake(task, split, ids):
        calls.append((task, split, len(ids)))
        return {i: ("easy" if int(i.split("-")[1]) % 2 == 0 else "hard") for i in ids}

    names, found = strata.by_stratum(rows, next(r for r in rows if r.is_base), fake)
    assert names == ["easy", "hard"] and calls == [({"name": "t"}, "test", N)]
    lora = {s.name: s for s in found["lora/sft"]}
    a = np.array([r.records[0].items["test"].correct for r in rows if r.label == "lora/sft"][0])
    b = np.array([r.records[0].items["test"].correct for r in rows if r.is_base][0])
    even = np.arange(N) % 2 == 0
    assert lora["easy"].n_items == even.sum() and lora["hard"].n_items == (~even).sum()
    assert lora["easy"].comparison.accuracy_a == pytest.approx(a[even].mean())
    assert lora["hard"].comparison.delta == pytest.approx(a[~even].mean() - b[~even].mean())
    lines = findings.strata_lines(rows, fake)
    assert lines[0] == "## Accuracy by stratum" and any("| easy (" in x and "| hard (" in x for x in lines)
    row = next(x for x in lines if x.startswith("| `lora/sft` |"))
    assert stats.interval_text(lora["easy"].comparison) in row and stats.interval_text(lora["hard"].comparison) in row
    # no strata (every stratum None), or a task the mapping cannot place: no section
    assert findings.strata_lines(rows, lambda task, split, ids: {i: None for i in ids}) == []

    def unknown(task, split, ids):
        from pefthub.errors import ConfigError
        raise ConfigError("no such task")
    assert findings.strata_lines(rows, unknown) == []


def test_committed_findings_show_the_format_change_by_stratum():
    text = (REPO / "docs" / "findings" / "cpu-paper-shape.md").read_text(encoding="utf-8")
    section = text.split("## Accuracy by stratum", 1)[1].split("\n## ", 1)[0]
    row = next(x for x in section.splitlines() if x.startswith("| `tinylora@13/sft` |"))
    assert "| 4.0% |" in row and "2 terms" in section and "3 terms" in section   # strict-match beside accuracy


def test_committed_cpu_paper_shape_v2_findings_state_the_primary_first_then_the_control(capsys, monkeypatch):
    """The second board's page is current, opens with its declared primary comparison and control, and gives
    no verdict on an arm that did not train or while the control has not passed (issue #24's bar)."""
    command, generated = committed_page(capsys, monkeypatch, "cpu-paper-shape-v2",
                                        "leaderboards/cpu-pilots/steps-v2/results")
    sections = [line for line in generated.splitlines() if line.startswith("## ")]
    assert sections[:2] == [f"## {findings.PRIMARY_QUESTION}", f"## {findings.CONTROL_QUESTION}"]
    # the rows the suite decided not to run are named, and comparisons with them are not measured, not tested
    assert ("Not run, by the suite's decision (`grid.exclude`; its suite.toml says why): `tinylora@1/grpo`, "
            "`tinylora@120/grpo`, `lora_xs/grpo`, `full/grpo`.") in generated
    assert "| `tinylora@13/grpo` − `full/grpo` | - | - | - | - | **not measured in this suite** |" in generated
    # the steps pilot pairs with the suite's run of its rate and seed though their checkpoints differ
    assert "| `lora/grpo` lr 0.001 seed 0 | 80 steps × 8 | 40 steps × 8 | 29.0% | 36.5% |" in generated
    table = read_table(REPO / "leaderboards" / "cpu-paper-shape-v2" / "results", control="lora/grpo")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    paragraph = findings.headline("cpu-paper-shape-v2", table.rows, control="lora/grpo",
                                  primary=findings.declared_primary("cpu-paper-shape-v2"))
    assert findings.replace_headline(readme, "cpu-paper-shape-v2", paragraph) == readme, \
        f"stale: pefthub {' '.join(command)} --headline README.md"
    untrained = {row.label for row in table.rows if health.did_not_train(row.flags)}
    gated = not table.control.passed
    for line in generated.splitlines():
        if not line.startswith("| `") or " − " not in line:
            continue
        arms = [a for a in line.split("|")[1].strip().split(" − ")]
        arms = [a.strip("` ") for a in arms]
        if any(a in untrained for a in arms) or (gated and any(a.endswith("/grpo") for a in arms)):
            verdict = line.split("**")[1] if "**" in line else ""
            assert verdict in ("not tested", "not passed", "not above", "counted once", "not measured in this suite"), line

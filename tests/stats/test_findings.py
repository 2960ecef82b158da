"""`pefthub findings`: the paper's questions answered from results, verdicts from paired statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pefthub import findings, health, results, stats

REPO = Path(__file__).resolve().parents[2]
N = 120


def write_row(directory: Path, method: str, params, trainer: str, correct: np.ndarray, seed: int = 0,
              completions: list[str] | None = None, answered: bool = True) -> None:
    config = {"model": "tiny-random", "task": {"name": "t"}, "trainer": trainer, "trainer_options": {},
              "method": method, "method_config": {}, "params_target": params,
              "learning_rate": None if method == "base" else 1e-3, "seed": seed, "budget": {"steps": 2},
              "eval": {"split": "test", "limit": N}}
    doc = results.new_result(config, suite="synthetic", status="success", finished_at=results.utc_now())
    doc["method"] = {"name": method, "trainable_params": params or 0}
    acc = float(correct.mean())
    doc["evaluation"] = {"test": {"accuracy": acc, "n": N, "ci_low": acc, "ci_high": acc, "ci_method": "wilson"}}
    samples = [{"split": "test", "id": f"t-{i}", "correct": bool(c)} for i, c in enumerate(correct)]
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
    rows = stats.rows_in(tmp_path)
    checked = {f.claim.key: f for _, fs in findings.check(rows) for f in fs}
    assert checked["grpo:13-vs-1"].verdict == findings.SUPPORTED
    assert checked["grpo:120-vs-13"].verdict == findings.NULL
    assert checked["grpo:120-vs-13"].a == "tinylora@120/grpo"
    assert checked["sft:13-vs-base"].verdict == findings.CONTRADICTED
    assert checked["sft:13-vs-lora"].verdict == findings.SUPPORTED
    assert checked["grpo:13-vs-full"].verdict == findings.NOT_MEASURED
    assert checked["grpo:13-vs-full"].note == "no full/grpo row"
    made = [f for f in checked.values() if f.comparison]
    assert [f.comparison.p_holm for f in made] == pytest.approx(stats.holm([f.comparison.p_value for f in made]))
    text = findings.render_markdown("synthetic", rows, "x")
    assert "No difference is detectable at this size" in text and "**contradicted**" in text
    assert findings.PAPER["grpo-vs-sft@13"].text().startswith("+8.0 (91% vs 83%")


def test_committed_quick_findings_are_the_generated_ones(capsys, monkeypatch, tmp_path):
    from pefthub.cli import main

    monkeypatch.chdir(REPO)
    assert main(["findings", "quick", "--stdout"]) == 0
    generated = capsys.readouterr().out
    assert generated == (REPO / "docs" / "findings" / "quick.md").read_text(encoding="utf-8")
    assert "Smoke run" in generated and "not measured in this suite" in generated
    assert main(["findings", "quick", "-o", str(tmp_path / "q.md")]) == 0
    assert (tmp_path / "q.md").read_text(encoding="utf-8") == generated


def test_findings_of_a_suite_without_results_is_one_error(capsys, tmp_path):
    from pefthub.cli import main

    assert main(["findings", "nosuch", "--results", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: results directory") and err.count("\n") == 1


def test_the_docs_worked_example_is_generated_from_the_quick_results():
    rows = stats.rows_in(REPO / "leaderboards" / "quick" / "results")
    text = (REPO / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    example = findings.worked_example("quick", rows)
    assert findings.replace_worked_example(text, example) == text, \
        "stale: pefthub findings quick --worked-example docs/benchmarks.md"
    c = stats.versus_base(rows, next(r for r in rows if r.is_base))["full/sft"]
    assert f"({c.a_only} − {c.b_only}) / 64" in example and stats.fmt_p(c.p_holm) in example


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
    docs, _ = results.load_results_dir(suite)
    pilots = [("pilot", [(d, results.samples_path(pilot, d["run_id"])) for _, d in
                         results.load_results_dir(pilot, with_paths=True)[0]])]
    text = findings.render_markdown("synthetic", stats.rows_in(suite), "x", docs=docs, pilots=pilots,
                                    results_dir=suite)
    row = next(line for line in text.splitlines() if line.startswith("| `lora/sft` |"))
    assert f"**0.001: {stats.fmt_pct(mid.mean())}%**" in row and "0.01: failed" in row
    assert row.endswith("| 0.001 | high | 3 |")  # the largest rate that succeeded (1e-2 failed); 3 seeds
    pilot_row = next(line for line in text.splitlines() if "4 steps × 8" in line)
    assert "| 2 steps × 8 |" in pilot_row and "+25.0 [" in pilot_row  # 30 of 120 items: +25 points, paired
    assert "5 runs (4 successful) took 0.14 h" in text
    assert "1 of them ran beside other work" in text


def test_headline_counts_rows_against_base_and_states_nulls_as_nulls(tmp_path):
    from pefthub.errors import ConfigError

    synthetic_suite(tmp_path)
    rows = stats.rows_in(tmp_path)
    family = stats.versus_base(rows, next(r for r in rows if r.is_base))
    text = findings.headline("synthetic", rows)
    better = [label for label, c in family.items() if c.verdict == stats.BETTER]
    worse = [label for label, c in family.items() if c.verdict == stats.WORSE]
    assert better and worse  # the synthetic suite has both, so both lists must be named
    assert f"{len(better)} beat the base model's" in text and all(f"`{label}`" in text for label in better + worse)
    assert f"{len(worse)} {'is' if len(worse) == 1 else 'are'} worse" in text
    assert "5 rows" in text and "1 seed each" in text and f"{N} paired test items" in text
    c = stats.compare_rows(*(next(r for r in rows if r.label == f"tinylora@13/{t}") for t in ("grpo", "sft")))
    assert f"GRPO − SFT: {stats.interval_text(c)} points" in text and "(published: +8.0, 91% vs 83%" in text
    start = findings.headline_start("synthetic")
    page = f"intro\n{start}\nold text\n{findings.HEADLINE_END}\noutro\n"
    updated = findings.replace_headline(page, "synthetic", text)
    assert updated == f"intro\n{start}\n{text}\n{findings.HEADLINE_END}\noutro\n"
    assert findings.replace_headline(updated, "synthetic", text) == updated
    with pytest.raises(ConfigError, match="no headline markers for suite other"):
        findings.replace_headline(page, "other", text)


def test_the_readme_headline_is_generated_from_the_sweep_results():
    rows = stats.rows_in(REPO / "leaderboards" / "cpu-paper-shape" / "results")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert findings.replace_headline(text, "cpu-paper-shape", findings.headline("cpu-paper-shape", rows)) == text, \
        "stale: pefthub findings cpu-paper-shape --pilot leaderboards/cpu-pilots/steps/results --headline README.md"


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
    rows = stats.rows_in(tmp_path)
    flags = health.rows_health(rows)
    assert [(f.name, f.flagged, f.seeds) for f in flags["tinylora@13/grpo"]] == [(health.NO_OP, 1, 2)]
    assert [f.name for f in flags["lora/sft"]] == [health.COLLAPSED] and flags["tinylora@13/sft"] == []
    lines = findings.render_markdown("synthetic", rows, "x").splitlines()

    def row(prefix: str) -> str:
        return next(line for line in lines if line.startswith(prefix))

    assert row("| `tinylora@13/grpo` |").endswith("| no-op on 1 of 2 seeds |")
    assert row("| `lora/sft` |").endswith("| collapsed |")
    assert row("| `tinylora@13/sft` |").endswith("| ok |")
    assert "| A: no-op on 1 of 2 seeds | +8.0 (91% vs 83%" in row("| `tinylora@13/grpo` − `tinylora@13/sft` |")
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
    text = findings.headline("synthetic", stats.rows_in(tmp_path))
    assert "TinyLoRA at 13 parameters, GRPO − SFT (GRPO arm flagged no-op on 1 of 2 seeds): " in text
    assert "`lora/sft` +" in text and "], flagged collapsed" in text  # a row beating base, but collapsed
    synthetic_suite(tmp_path / "clean")
    clean = findings.headline("synthetic", stats.rows_in(tmp_path / "clean"))
    assert "GRPO − SFT: " in clean and "flagged" not in clean


def test_committed_cpu_paper_shape_findings_name_the_no_op_arm(capsys, monkeypatch):
    from pefthub.cli import main

    monkeypatch.chdir(REPO)
    command = ["findings", "cpu-paper-shape", "--pilot", "leaderboards/cpu-pilots/steps/results"]
    assert main([*command, "--stdout"]) == 0
    generated = capsys.readouterr().out
    assert generated == (REPO / "docs" / "findings" / "cpu-paper-shape.md").read_text(encoding="utf-8"), \
        f"stale: pefthub {' '.join(command)}"
    assert "| A: no-op on 1 of 3 seeds | +8.0 (91% vs 83%" in generated
    assert "`tinylora@13/grpo` is flagged no-op on 1 of 3 seeds: 380 of 400 test completions" in generated
    assert "GRPO − SFT (GRPO arm flagged no-op on 1 of 3 seeds): " in (REPO / "README.md").read_text(encoding="utf-8")

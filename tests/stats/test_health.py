"""Run-health flags: known answers on small synthetic runs, the committed chain_sum quick board
(cpu-pilots-quick-v1), and every place the flags are shown (pefthub health, pefthub bench's table, the
site's downloads).

The documents and samples built here are TEST INPUTS (made up to have known answers), not results.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from pefthub import results as R
from pefthub.report import health
from pefthub.report.health import COLLAPSED, NO_OP, NO_SIGNAL, RUNAWAY, THRESHOLDS, Thresholds, assess, at_token_cap
from pefthub.report.records import RunRecord, eval_max_new_tokens, items_of
from pefthub.report.rows import build_rows
from pefthub.report.table import read_table

ROOT = Path(__file__).resolve().parents[2]
#: The chain_sum `quick` board, kept as a fixture under benchmarks/cpu-pilots/quick-v1.
QUICK = ROOT / "leaderboards" / "cpu-pilots" / "quick-v1" / "results"
EVAL = {"split": "test", "limit": 40, "max_new_tokens": 32, "backend": "hf"}


def make_doc(method="lora", trainer="sft", *, correct, n=40, strict=None, curves=None, training=None, eval_=None,
             batch_size=8, seed=0):
    config = {"model": "tiny-random", "task": {"name": "basic_arithmetic"}, "trainer": trainer,
              "trainer_options": {}, "method": method, "method_config": {}, "params_target": None,
              "learning_rate": None if method == "base" else 1e-3, "seed": seed,
              "budget": {"steps": 4, "batch_size": batch_size}, "eval": dict(eval_ or EVAL)}
    doc = R.new_result(config, suite="t", status="success", started_at="2026-12-01T00:00:00Z",
                       finished_at=f"2026-12-01T00:0{seed}:00Z")
    doc["method"] = {"name": method, "trainable_params": 0 if method == "base" else 13}
    acc = correct / n
    doc["evaluation"] = {"test": {"accuracy": acc, "n": n, "correct": correct,
                                  "metrics": {"exact_match,strict-match": acc if strict is None else strict,
                                              "exact_match,flexible-extract": acc}}}
    doc["curves"] = curves or []
    if training is not None:
        doc["training"] = training
    return doc


def make_samples(n=40, correct=10, *, completion=lambda i: f"The answer is {i}.", answer=lambda i: True):
    return [{"split": "test", "id": f"t-{i}", "completion": completion(i),
             "extracted": str(i) if answer(i) else None, "gold": str(i), "correct": i < correct} for i in range(n)]


@pytest.fixture
def base():
    return make_doc("base", "none", correct=10), make_samples(correct=10)


def names(h):
    return h.names


# ---- the proxy for "ran to the token cap" -----------------------------------------------------
def test_token_cap_proxy():
    assert at_token_cap("x" * 32, 32)                       # long enough, cut mid-word
    assert not at_token_cap("x" * 31, 32)                   # too short to hold 32 tokens
    assert not at_token_cap("x" * 40 + " The answer is 4.", 32)   # ended its sentence
    assert at_token_cap("The answer is 4.\n\nThis is a classic example of a", 32)
    assert not at_token_cap(None, 32) and not at_token_cap("x" * 40, None)


# ---- no-op ---------------------------------------------------------------------------------------
def test_noop_identical_completions_same_score(base):
    doc = make_doc(correct=10)
    samples = make_samples(correct=10, completion=lambda i: f"Other {i}." if i >= 37 else f"The answer is {i}.")
    h = assess(doc, samples, *base)
    assert names(h) == [NO_OP]
    assert h.flags[0].detail == "37/40 test completions byte-identical to base; same score (10/40)"
    assert (h.measures["identical"], h.measures["shared"]) == (37, 40)
    assert h.base_run_id == base[0]["run_id"]


def test_identical_but_a_different_score_is_not_a_noop(base):
    h = assess(make_doc(correct=11), make_samples(correct=11), *base)
    assert names(h) == [] and h.measures["identical"] == 40  # k/n is always reported


def test_same_score_from_mostly_different_text_is_not_a_noop(base):
    samples = make_samples(correct=10, completion=lambda i: f"The answer is {i}." if i < 19 else f"So: {i}.")
    h = assess(make_doc(correct=10), samples, *base)
    assert h.measures["identical"] == 19 and 19 / 40 < THRESHOLDS.noop_min_identical
    assert names(h) == []
    samples = make_samples(correct=10, completion=lambda i: f"The answer is {i}." if i < 20 else f"So: {i}.")
    assert names(assess(make_doc(correct=10), samples, *base)) == [NO_OP]  # exactly half: flagged


def test_items_are_matched_by_id_and_other_protocols_are_not_compared(base):
    # A run on a subset of the base's items is compared on the shared ones.
    h = assess(make_doc(correct=10, n=20, eval_=dict(EVAL, limit=20)), make_samples(n=20, correct=10), *base)
    assert (h.measures["identical"], h.measures["shared"]) == (20, 20)
    assert names(h) == [NO_OP]
    # Another generation length is another protocol: no comparison, no no-op.
    h = assess(make_doc(correct=10, eval_=dict(EVAL, max_new_tokens=64)), make_samples(correct=10), *base)
    assert h.base_run_id is None and h.measures["identical"] is None and names(h) == []


# ---- collapsed -----------------------------------------------------------------------------------
def pilot_shaped_collapse():
    """A fabricated run shaped like the collapsed pilot of issue 13: 400 items, 8 correct, 308 with
    no extractable answer ("The.The.The…" to the cap), strict-match 0, reward ~0.03, 90% zero advantage."""
    n, cap = 400, 64
    eval_ = dict(EVAL, limit=n, max_new_tokens=cap)
    curves = [{"step": s, "reward": 0.03, "reward_std": 0.1, "zero_advantage_groups": 9 if s % 2 else 27}
              for s in range(1, 11)]
    doc = make_doc("tinylora", "grpo", correct=8, n=n, strict=0.0, curves=curves, batch_size=20, eval_=eval_)
    samples = make_samples(n=n, correct=8, completion=lambda i: "The." * 40 + "The" if i < 308 else f"The answer is {i}.",
                           answer=lambda i: i >= 308)
    base_doc = make_doc("base", "none", correct=83, n=n, strict=0.19, eval_=eval_)
    base_samples = make_samples(n=n, correct=83)
    return doc, samples, base_doc, base_samples


def test_fabricated_pilot_collapse_is_flagged():
    h = assess(*pilot_shaped_collapse())
    assert names(h) == [COLLAPSED, NO_SIGNAL]
    detail = h.flags[0].detail
    assert "no extractable answer in 308/400 (base 0/400)" in detail
    assert "strict-match 0.0% (base 19.0%)" in detail
    assert "308/400 completions cut off by the token cap (base 0/400) and the score fell below base" in detail
    assert h.flags[1].detail == "mean training reward 0.030; 90% of groups at zero advantage"
    assert h.flags[0].severity == "error" and h.flags[1].severity == "warning"


def test_no_answer_alone_collapses_only_far_above_base(base):
    few = make_samples(correct=5, answer=lambda i: i >= 11)       # 11/40 = 27.5% without an answer
    assert names(assess(make_doc(correct=5), few, *base)) == []
    many = make_samples(correct=5, answer=lambda i: i >= 12)      # 12/40 = 30%
    h = assess(make_doc(correct=5), many, *base)
    assert names(h) == [COLLAPSED] and h.flags[0].detail == "no extractable answer in 12/40 (base 0/40)"


def test_strict_match_to_zero_collapses_unless_the_score_rose(base):
    h = assess(make_doc(correct=9, strict=0.0), make_samples(correct=9, completion=lambda i: f"{i}"), *base)
    assert names(h) == [COLLAPSED] and h.flags[0].detail == "strict-match 0.0% (base 25.0%)"
    # The same strict-match with a better flexible score is a format change, not a collapse.
    assert names(assess(make_doc(correct=14, strict=0.0), make_samples(correct=14, completion=lambda i: f"{i}"),
                        *base)) == []
    # A base that never used the strict format cannot make anything "collapse" on it.
    base_doc = make_doc("base", "none", correct=10, strict=0.05)
    assert names(assess(make_doc(correct=9, strict=0.0), make_samples(correct=9), base_doc, base[1])) == []


def test_trainer_early_stop_is_collapsed_even_without_a_base():
    stop = {"stopped_early": {"reason": "collapsed", "step": 7, "detail": "90% of rollouts without an answer"}}
    h = assess(make_doc("tinylora", "grpo", correct=3, training=stop), make_samples(correct=3))
    assert names(h) == [COLLAPSED]
    assert h.flags[0].detail == "trainer stopped early at step 7: 90% of rollouts without an answer"
    other = {"stopped_early": {"reason": "budget", "step": 7}}
    assert names(assess(make_doc(correct=3, training=other), make_samples(correct=3))) == []


def test_running_to_the_cap_is_runaway_unless_the_score_also_fell(base):
    long = lambda i: "The answer is 3 because " + "x" * 40   # noqa: E731  cut off, still answers
    runaway = make_samples(correct=10, completion=lambda i: long(i) if i < 10 else f"So it is {i}.")
    h = assess(make_doc(correct=10), runaway, *base)
    assert names(h) == [RUNAWAY] and h.flags[0].detail == "10/40 test completions cut off by the token cap (base 0/40)"
    assert names(assess(make_doc(correct=10), make_samples(correct=10, completion=lambda i: long(i) if i < 9 else "ok."),
                        *base)) == []
    most = make_samples(correct=6, completion=lambda i: long(i) if i < 20 else f"The answer is {i}.")
    assert names(assess(make_doc(correct=6), most, *base)) == [COLLAPSED]   # half cut off and the score fell
    assert names(assess(make_doc(correct=10), make_samples(correct=10, completion=lambda i: long(i) if i < 20 else "ok."),
                        *base)) == [RUNAWAY]   # half cut off, score held


def test_no_signal_needs_both_low_reward_and_zero_advantage():
    curves = lambda r, z: [{"step": s, "reward": r, "zero_advantage_groups": z} for s in (1, 2)]  # noqa: E731
    assert names(assess(make_doc(trainer="grpo", correct=5, curves=curves(0.05, 7)), None)) == [NO_SIGNAL]
    assert names(assess(make_doc(trainer="grpo", correct=5, curves=curves(0.06, 8)), None)) == []
    assert names(assess(make_doc(trainer="grpo", correct=5, curves=curves(0.0, 6)), None)) == []
    # Dynamic sampling: a step's groups are the prompts it sampled, not the batch size.
    dynamic = [{"step": s, "reward": 0.0, "zero_advantage_groups": 14, "prompts_sampled": 32} for s in (1, 2)]
    assert names(assess(make_doc(trainer="grpo", correct=5, curves=dynamic), None)) == []
    dynamic = [{"step": s, "reward": 0.0, "zero_advantage_groups": 30, "prompts_sampled": 32} for s in (1, 2)]
    assert names(assess(make_doc(trainer="grpo", correct=5, curves=dynamic), None)) == [NO_SIGNAL]


def test_a_healthy_run_has_no_flags(base):
    curves = [{"step": s, "reward": 0.4, "zero_advantage_groups": 3} for s in (1, 2, 3)]
    samples = make_samples(correct=18, completion=lambda i: f"{i} + 0 = {i}. The answer is {i}.")
    h = assess(make_doc(trainer="grpo", correct=18, curves=curves), samples, *base)
    assert h.flags == [] and h.measures["identical"] == 0 and h.measures["correct"] == 18


def record(doc, samples=None):
    """A run record as :func:`pefthub.report.records.read_records` makes it from a document and samples."""
    items = items_of(samples, "test", eval_max_new_tokens(doc)) if samples is not None else None
    return RunRecord(doc, None, items={"test": items} if items else {})


def test_suite_health_picks_the_comparable_base_and_skips_failed_runs(base):
    other_base = make_doc("base", "none", correct=10, eval_=dict(EVAL, max_new_tokens=64), seed=1)
    run = make_doc(correct=10)
    failed = dict(make_doc(correct=1, seed=2), status="failed")
    records = [record(other_base, make_samples(correct=0)), record(run, base[1]), record(*base), record(failed)]
    out = health.suite_health(records, build_rows(records))
    assert list(out) == [run["run_id"]]
    assert out[run["run_id"]].base_run_id == base[0]["run_id"] and out[run["run_id"]].names == [NO_OP]


def test_row_flags_count_seeds(base):
    a = assess(make_doc(correct=10), make_samples(correct=10), *base)
    b = assess(make_doc(correct=10, seed=1), make_samples(correct=12), *base)
    (flag,) = health.row_flags([a, b])
    assert flag.name == NO_OP and (flag.flagged, flag.seeds) == (1, 2) and flag.words() == "no-op on 1 of 2 seeds"
    assert flag.detail.startswith("40 of 40 test completions byte-identical to base; same score (the other seed: ")
    assert [f.name for f in health.row_flags([a])] == a.names and health.row_flags([None]) == []


def test_thresholds_live_in_one_frozen_dataclass_with_a_reason_each():
    with pytest.raises(dataclasses.FrozenInstanceError):
        THRESHOLDS.no_answer_excess = 0.9
    rows = THRESHOLDS.rationale()
    assert [n for n, _, _ in rows] == [f.name for f in dataclasses.fields(Thresholds)]
    assert all(len(why) > 40 for _, _, why in rows)
    stricter = Thresholds(noop_min_identical=0.95)
    samples = make_samples(correct=10, completion=lambda i: f"Other {i}." if i >= 37 else f"The answer is {i}.")
    base_doc, base_samples = make_doc("base", "none", correct=10), make_samples(correct=10)
    assert names(assess(make_doc(correct=10), samples, base_doc, base_samples, stricter)) == []


# ---- the committed chain_sum quick results -----------------------------------------------------
@pytest.fixture(scope="module")
def quick():
    skipped = []
    table = read_table(QUICK, skipped)
    assert not skipped
    label = lambda d: f"{d['config']['method']}/{d['config']['trainer']}"  # noqa: E731
    return {label(r.doc): table.health[r.run_id] for r in table.records if r.run_id in table.health}


def test_committed_quick_results_reproduce_the_identical_counts(quick):
    identical = {k: h.measures["identical"] for k, h in quick.items()}
    assert {k: identical[k] for k in ("vera/grpo", "lora_xs/grpo", "lora_xs/sft", "vera/sft", "full/grpo",
                                      "prompt_tuning/sft")} == {
        "vera/grpo": 62, "lora_xs/grpo": 62, "lora_xs/sft": 59, "vera/sft": 60, "full/grpo": 59, "prompt_tuning/sft": 50}
    noop = sorted(k for k, h in quick.items() if NO_OP in h.names)
    assert noop == ["full/grpo", "lora_xs/grpo", "lora_xs/sft", "prompt_tuning/sft", "vera/grpo", "vera/sft"]
    assert not any(COLLAPSED in h.names for h in quick.values())


#: What docs/run-health.md is generated from.
HEALTH_PAGE_SOURCE = "leaderboards/quick"


def test_generated_health_page_is_current(capsys, monkeypatch):
    from pefthub.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["health", HEALTH_PAGE_SOURCE, "--markdown"]) == 0
    assert (ROOT / "docs" / "run-health.md").read_text() == capsys.readouterr().out, \
        f"docs/run-health.md is stale: pefthub health {HEALTH_PAGE_SOURCE} --markdown > docs/run-health.md"


def test_benchmarks_doc_states_the_thresholds_in_the_code():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    for name, value, _ in THRESHOLDS.rationale():
        assert f"`{name}` = {value:g}" in text, f"docs/benchmarks.md does not state {name} = {value:g}"


@pytest.mark.slow
def test_token_cap_proxy_matches_the_tokenizer_on_committed_results():
    from transformers import AutoTokenizer

    from pefthub.models import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    docs, _ = R.load_results_dir(QUICK)
    hits = 0
    for doc in docs:
        cap = doc["config"]["eval"]["max_new_tokens"]
        for s in (r for r in R.read_samples(R.samples_path(QUICK, doc["run_id"])) if r.get("split", "test") == "test"):
            tokens = len(tok(s["completion"], add_special_tokens=False)["input_ids"])
            assert at_token_cap(s["completion"], cap) == (tokens >= cap), (doc["run_id"], s["id"])
            hits += tokens >= cap
    assert hits > 0  # the committed runs do reach the cap, so the check has teeth


# ---- where the flags are shown -----------------------------------------------------------------
def test_health_command_json_and_a_bad_suite_is_one_line(capsys):
    from pefthub.cli import main

    assert main(["health", str(QUICK), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["runs"]) == 14 and data["thresholds"]["noop_min_identical"] == THRESHOLDS.noop_min_identical
    assert main(["health", "no-such-suite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-suite" in err[0]


def test_bench_results_table_marks_flagged_rows():
    from rich.console import Console

    from pefthub.commands.bench_command import print_health, print_results

    console = Console(record=True, width=250)
    suite = SimpleNamespace(name="quick", model="smollm2-135m-instruct", task={"name": "basic_arithmetic"})
    table = read_table(QUICK)
    print_results(console, suite, table, total=15, have=15)
    print_health(console, table.rows)
    lines = console.export_text().splitlines()
    def flags_cell(name, trainer):
        line = next(x for x in lines if x.startswith(f"│ {name} ") and f"│ {trainer} " in x)
        return line.split("│")[-2].strip()

    assert flags_cell("vera", "grpo") == "no-op, flat-reward"  # as the findings page says of the same rows
    assert flags_cell("full", "grpo") == "no-op, no-signal, flat-reward"
    assert flags_cell("bitfit", "sft") == ""
    assert "⚑ no-op vera/grpo: 62 of 64 test completions byte-identical to base; same score" in lines
    assert "⚑ runaway lora/grpo: 19/64 test completions cut off by the token cap (base 0/64)" in lines
    assert any(x.startswith("⚑ flat-reward lora/grpo: reward rise (second half of 4 steps − first half)") for x in lines)


def test_site_downloads_carry_the_flags(tmp_path):
    from pefthub.site import build_site

    results_dir = tmp_path / "lb" / "t" / "results"
    doc, samples, base_doc, base_samples = pilot_shaped_collapse()
    R.write_result(results_dir, base_doc, base_samples)
    R.write_result(results_dir, doc, samples)
    build_site(tmp_path / "lb", tmp_path / "site")
    data = json.loads((tmp_path / "site" / "downloads" / "t.json").read_text())
    row = next(r for r in data["rows"] if r["method"] == "tinylora")
    assert row["flags"] == [COLLAPSED, NO_SIGNAL, health.FLAT_REWARD]  # the site row names flat-reward too
    assert data["health"]["runs"][doc["run_id"]]["measures"]["no_answer"] == 308
    with open(tmp_path / "site" / "downloads" / "t.csv", newline="") as fh:
        flags = {r["method"]: r["flags"] for r in csv.DictReader(fh)}
    assert flags == {"tinylora": "collapsed no-signal flat-reward", "base": ""}
    page = (tmp_path / "site" / "runs" / "t" / f"{doc['run_id']}.html").read_text()
    assert 'class="badge flag error"' in page and "no extractable answer in 308/400" in page


def test_row_flags_add_flat_reward_from_the_runs_training_logs():
    flat = [{"config": {"method": "lora"}, "curves": [{"step": i, "reward": r} for i, r in enumerate(rewards)]}
            for rewards in ([0.1, 0.0, 0.1, 0.0], [0.0, 0.1, 0.0, 0.1])]
    (flag,) = health.row_flags([None, None], flat)
    assert flag.name == health.FLAT_REWARD and flag.detail.startswith("reward rise (second half of 4 steps")
    rising = [dict(d, curves=[{"step": i, "reward": r} for i, r in enumerate(rewards)])
              for d, rewards in zip(flat, ([0.0, 0.1, 0.5, 0.6], [0.1, 0.0, 0.6, 0.5]))]
    assert health.row_flags([None, None], rising) == [] and health.row_flags([None]) == []

"""Run pages label figures in words (metrics.toml), never by their result-file keys: every key of a
committed result's budget blocks and training curves has a schema entry, and lm-eval's metric keys
are put in words with the key as the tooltip."""

from __future__ import annotations

import json
from pathlib import Path

from pefthub.site.metrics import load_metrics
from pefthub.site.pages import _budget_items, metric_label

LEADERBOARDS = Path(__file__).resolve().parents[2] / "leaderboards"
NOT_FIGURES = {"step", "rollout_backend"}  # the x axis, and a string label of the engine


def test_every_committed_budget_and_curve_key_has_words():
    known, missing = load_metrics(), set()
    files = sorted(LEADERBOARDS.glob("*/results/*.json"))
    assert files
    for path in files:
        doc = json.loads(path.read_text())
        budget = doc.get("budget") or {}
        keys = [k for part in ("declared", "spent") for k in (budget.get(part) or {})]
        keys += [k for point in doc.get("curves") or [] for k in point]
        missing |= {k for k in keys if k not in known and k not in NOT_FIGURES}
    assert not missing, f"add to pefthub/site/metrics.toml: {sorted(missing)}"


def test_budget_rows_are_words_with_the_key_as_tooltip():
    rows = _budget_items({"prompts_trained": 160, "schedule": "constant", "some_new_thing": 3})
    assert rows == [("Prompts trained", "160", "prompts_trained"), ("Learning-rate schedule", "constant", "schedule"),
                    ("Some new thing", "3", "some_new_thing")]


def test_lm_eval_metric_keys_in_words():
    assert metric_label("exact_match,strict-match") == "Exact match (strict-match)"
    assert metric_label("exact_match_stderr,flexible-extract") == "Exact match, standard error (flexible-extract)"
    assert metric_label("exact_match,none") == "Exact match"


def test_site_findings_name_each_compared_rows_health_flags():
    """The site's findings table has the findings page's health cell (one function computes both)."""
    from pefthub.site.aggregate import view_suite
    from pefthub.site.load import load_leaderboards
    from pefthub.site.pages import findings_context

    suites, _ = load_leaderboards(LEADERBOARDS)
    (suite,) = [s for s in suites if s.name == "cpu-paper-shape"]
    questions = findings_context(view_suite(suite))
    assert questions[0]["question"].startswith("Primary comparison")  # suite.toml's primary, stated first
    items = {}
    for f in (f for q in questions for f in q["items"]):
        items.setdefault((f["a"], f["b"]), f)
    assert items[("tinylora@13/grpo", "tinylora@13/sft")]["health"] == "A: no-op on 1 of 3 seeds, flat-reward"
    assert items[("tinylora@13/grpo", "tinylora@13/sft")]["verdict"] == "not tested"
    assert "ok" in {f["health"] for f in items.values()}

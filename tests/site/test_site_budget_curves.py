"""The suite page's budget-curve chart: validation accuracy at each checkpoint step against steps,
tokens and training time, per row, drawn only for suites whose runs recorded checkpoints. The result
documents are TEST INPUTS written here through pefthub.results; nothing is written under leaderboards/."""

from __future__ import annotations

import html.parser
import math
from pathlib import Path

from pefthub import results as R
from pefthub.site import build_site

BUDGET = {"steps": 4, "batch_size": 2, "generations": 2, "max_new_tokens": 16, "max_seq_len": 128}


def wilson(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def block(correct: int, n: int) -> dict:
    low, high = wilson(correct, n)
    return {"accuracy": correct / n, "ci_low": low, "ci_high": high, "ci_method": "wilson", "n": n, "correct": correct}


def write(results_dir: Path, suite: str, method: str, trainer: str, seed: int, val: int,
          checkpoints: dict[int, int] | None) -> None:
    evaluation = {"split": "test", "limit": 20, "validation_limit": 40, "max_new_tokens": 16, "backend": "hf"}
    if checkpoints and method != "base":
        evaluation["checkpoints"] = sorted(checkpoints)
    config = {"model": "tiny-random", "task": {"name": "chain_sum"}, "trainer": trainer, "trainer_options": {},
              "method": method, "method_config": {}, "params_target": None,
              "learning_rate": None if method == "base" else 1e-3, "seed": seed,
              "budget": BUDGET if method != "base" else {"steps": 0}, "eval": evaluation}
    doc = R.new_result(config, suite=suite, status="success", started_at="2026-12-06T07:00:00Z",
                       finished_at="2026-12-06T07:05:00Z")
    doc["method"] = {"name": method, "trainable_params": 0 if method == "base" else 1000}
    doc["budget"] = {"declared": config["budget"], "spent": {"optimizer_steps": config["budget"]["steps"],
                                                            "seconds_train": 8.0, "seconds_eval": 2.0}}
    doc["evaluation"] = {"test": block(5 + seed, 20), "validation": block(val, 40)}
    if checkpoints and method != "base":
        doc["checkpoints"] = [{"step": s, "split": "validation", **block(c, 40), "strict_accuracy": None,
                               "backend": "hf", "seconds_eval": 0.5, "seconds_train_so_far": 2.0 * s,
                               "examples": 2 * s, "prompts": 0, "prompts_trained": 0, "completions": 0,
                               "tokens_trained": 100 * s, "tokens_generated": 0, "train_flops": 1e6 * s}
                              for s, c in sorted(checkpoints.items())]
    samples = [{"split": "test", "id": f"chain_sum-test-{i}", "prompt": f"{i} + 1 = ?", "completion": "x",
                "extracted": "1", "gold": "1" if i < 5 + seed else "2", "correct": i < 5 + seed} for i in range(20)]
    R.write_result(results_dir, doc, samples)


class Charts(html.parser.HTMLParser):
    """The budget chart's figure ids and its points' data attributes."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.figures: list[str] = []
        self.points: list[dict] = []
        self.depth = 0          # > 0 inside a budget chart

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure" and (attrs.get("id") or "").endswith("-budget"):
            self.figures.append(attrs["id"])
        if tag == "svg" and "budget-plot" in (attrs.get("class") or ""):
            self.depth = 1
        elif self.depth and tag == "svg":
            self.depth += 1
        if self.depth and tag == "g" and attrs.get("class") == "pt":
            self.points.append(attrs)

    def handle_endtag(self, tag):
        if self.depth and tag == "svg":
            self.depth -= 1


def test_suite_page_plots_budget_curves_only_where_runs_have_checkpoints(tmp_path):
    root = tmp_path / "leaderboards"
    curves = root / "curves" / "results"
    write(curves, "curves", "base", "none", 0, 8, None)
    write(curves, "curves", "lora", "sft", 0, 20, {2: 12, 4: 20})
    write(curves, "curves", "lora", "sft", 1, 24, {2: 16, 4: 24})
    write(curves, "curves", "lora", "grpo", 0, 10, {2: 9, 4: 10})
    plain = root / "plain" / "results"
    write(plain, "plain", "base", "none", 0, 8, None)
    write(plain, "plain", "lora", "sft", 0, 20, None)
    out = tmp_path / "site"
    build_site(root, out)
    parser = Charts()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))

    assert parser.figures == ["suite-curves-budget"]  # the suite without checkpoints has no (empty) chart
    by_row: dict[str, list[dict]] = {}
    for p in parser.points:
        by_row.setdefault(p["data-row"], []).append(p)
    assert sorted(by_row) == ["lora/grpo", "lora/sft"]
    # Three panels (steps, tokens, wall time), each with both checkpoints of each row.
    sft = by_row["lora/sft"]
    assert [p["data-step"] for p in sft] == ["2", "4"] * 3
    # Step 2 of lora/sft averages its two seeds' 12/40 and 16/40; the GRPO row's one run is as recorded.
    assert float(sft[0]["data-accuracy"]) == 0.35 and float(sft[1]["data-accuracy"]) == 0.55
    assert [float(p["data-accuracy"]) for p in by_row["lora/grpo"][:2]] == [9 / 40, 10 / 40]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "base model 20.0% on validation" in page and "Training wall time (s)" in page
    # Under the chart, each row's budget verdict as the findings page words it (pefthub.report.curves.plateau).
    from pefthub.report.curves import plateau
    from pefthub.results import read_results

    docs = [d for _, d in read_results(curves) if d["config"]["trainer"] == "sft"]
    sft_verdict = plateau("lora/sft", docs)
    assert "Where validation stops improving" in page
    assert (f"<td><code>lora/sft</code></td><td>{sft_verdict.recent.text()} from step 2 to 4</td>") in page
    assert sft_verdict.verdict() in page and "budget-verdicts" not in (out / "index.html").read_text().split(
        "suite-plain")[-1]

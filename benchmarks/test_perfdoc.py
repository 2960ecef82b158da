"""docs/performance.md generation from pytest-benchmark JSON: each benchmark's headline figures with
peer, ratio, goal and verdict, where and when it was measured, every figure one link away; runs merge
by benchmark; bad input is one line; the committed page is the renderer's output of the committed
data and every table in it fits one screen."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import perfdoc
from pefthub.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGE, DATA = DOCS / "performance.md", DOCS / "performance.json"
MAX_COLUMNS = 10


def run_json(benchmarks, when="2026-11-22T10:00:00", node="ci-1"):
    return {"machine_info": {"node": node, "cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11.7"},
            "commit_info": {"id": "0123456789abcdef", "dirty": True}, "datetime": when, "benchmarks": benchmarks}


def bench(name, group, median, **extra):
    return {"name": name, "fullname": f"benchmarks/test_x.py::{name}", "group": group,
            "stats": {"median": median, "rounds": 3}, "extra_info": extra}


def table_widths(text):
    """Column count of every markdown table row in ``text``."""
    return [line.strip().strip("|").count(" | ") + 1 for line in text.splitlines() if line.startswith("|")]


def test_headline_figures_with_peer_ratio_goal_and_verdict():
    merged = {"benchmarks": {}, "machine_info": {}, "commit_info": {}, "datetime": None}
    perfdoc.merge(merged, run_json([
        bench("test_eval_speed[base]", "evaluation", 20.0, fused_items_s=19.28, hf_items_s=5.369, fused_over_hf=3.59,
              meets_3x_target=True, fused_accuracy=0.2075, hf_accuracy=0.2075, answers_differing=0,
              note="alternating rounds", other_processes_cpu_cores=0.02),
        bench("test_eval_speed[lora]", "evaluation", 21.0, fused_items_s=14.0, hf_items_s=5.0, fused_over_hf=2.8,
              meets_3x_target=False, note="alternating rounds", other_processes_cpu_cores=0.04),
        bench("test_step_against_trl[sft]", "trainers", 7.5, pefthub_s_per_1k_tokens=14.8,
              trl_like_pefthub_s_per_1k_tokens=32.7, per_token_ratio_vs_trl_like_pefthub=0.454, step_target=0.6,
              step_met=True, other_processes_cpu_cores=0.9),
        bench("test_something_new", "trainers", 1.0, x=1.0),
    ]))
    page = perfdoc.render(merged)
    assert page.startswith("# Performance\n") and perfdoc.COMMAND in page and perfdoc.RERENDER in page
    assert "| benchmark | figure | pefthub | peer | ratio | goal | met |" in page
    assert "| test_eval_speed[base] | scoring speed | 19.3 items/s | lm-eval HF 5.37 items/s | 3.59× HF | ≥ 3× " \
           "| **met** |" in page
    assert "| test_eval_speed[base] | test accuracy | 0.207 | lm-eval HF 0.207 | 0 answers differ | – | – |" in page
    assert "| test_eval_speed[lora] | scoring speed | 14 items/s | lm-eval HF 5 items/s | 2.8× HF | ≥ 3× " \
           "| **not met** |" in page
    # a goal recorded by the benchmark is read from its figures; a missing figure is a dash
    assert "| test_step_against_trl[sft] | time per 1k tokens | 14.8 s | TRL set like pefthub 32.7 s | 0.454× TRL " \
           "| ≤ 0.6× | **met** |" in page
    assert "| test_step_against_trl[sft] | peak RSS | – | – | – | – | – |" in page
    assert "| test_something_new | no headline chosen (benchmarks/perfdoc.py HEADLINES) |" in page
    assert "x | 1" not in page and "median" not in page  # other figures stay in the data file
    assert "- `test_eval_speed[base]`, `test_eval_speed[lora]`: alternating rounds" in page  # one line per note
    evaluation, trainers = page.split("## evaluation")[1].split("## trainers")
    assert "measured 2026-11-22T10:00:00 at commit 0123456789ab (dirty) on ci-1 (Test CPU, 2 logical cores, " \
           "python 3.11.7); idle (other processes: at most 0.04 cores)" in evaluation
    assert "**not idle**: other processes kept up to 0.9 cores busy" in trainers
    assert "[performance.json](performance.json)" in evaluation and "all 15 figures" in evaluation
    assert max(table_widths(page)) <= MAX_COLUMNS


def test_update_merges_runs_keeping_other_benchmarks(tmp_path):
    page = tmp_path / "docs" / "performance.md"
    perfdoc.update(page, run_json([bench("test_vera_merge", "g1", 1.0, merge_weight_s=1.5),
                                   bench("test_sampler_step", "g2", 2.0, pick_tokens_ms=2.5)]))
    perfdoc.update(page, run_json([bench("test_vera_merge", "g1", 3.0, merge_weight_s=9.5)],
                                  when="2026-11-23T10:00:00", node="ci-2"))
    text = page.read_text()
    assert "| test_vera_merge | merge every projection | 9.5 s |" in text
    assert "| test_sampler_step | one sampling step | 2.5 ms |" in text
    # Each section says which run (and machine) measured it; the header names the latest run.
    g1, g2 = text.split("## g1")[1].split("## g2")
    assert "- measured 2026-11-23T10:00:00 at commit 0123456789ab (dirty) on ci-2 (" in g1
    assert "- measured 2026-11-22T10:00:00 at commit 0123456789ab (dirty) on ci-1 (" in g2
    assert "idle state not recorded" in g2
    assert "- latest run: 2026-11-23T10:00:00" in text
    stored = json.loads(perfdoc.data_file(page).read_text())
    assert sorted(b["name"] for b in stored["benchmarks"]) == ["test_sampler_step", "test_vera_merge"]
    assert stored["datetime"] == "2026-11-23T10:00:00"


def test_a_new_machine_does_not_rename_the_machine_of_earlier_runs(tmp_path):
    """A data file whose benchmarks lack their own machine (written before runs recorded it) keeps
    showing the machine they ran on after a run on another machine is merged."""
    page = tmp_path / "performance.md"
    old = run_json([bench("test_sampler_step", "g2", 2.0, pick_tokens_ms=2.5)])
    merged = perfdoc.load([])
    perfdoc.merge(merged, old)
    for b in merged["benchmarks"].values():
        del b["measured_in"]["machine"]
    perfdoc.data_file(page).write_text(json.dumps({**merged, "benchmarks": list(merged["benchmarks"].values())}))
    new = run_json([bench("test_vera_merge", "g1", 3.0, merge_weight_s=9.5)], when="2026-11-23T10:00:00")
    new["machine_info"]["cpu"]["brand_raw"] = "Other CPU"
    text = perfdoc.update(page, new).read_text()
    g1, g2 = text.split("## g1")[1].split("## g2")
    assert "(Other CPU, 2 logical cores" in g1 and "(Test CPU, 2 logical cores" in g2


def test_cli_renders_from_json_files_and_rejects_bad_input(tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(run_json([bench("test_vera_merge", "g", 1.0, merge_weight_s=1.0)])))
    second.write_text(json.dumps(run_json([bench("test_vera_merge", "g", 2.0, merge_weight_s=2.0)])))
    out = tmp_path / "perf.md"
    assert perfdoc.main([str(first), str(second), "-o", str(out)]) == 0
    assert "| test_vera_merge | merge every projection | 2 s |" in out.read_text()  # the later file wins
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "benchmarks"}')
    assert perfdoc.main([str(bad), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: not pytest-benchmark JSON output (no 'benchmarks' list)"
    with pytest.raises(ConfigError, match="not a readable"):
        perfdoc.load([tmp_path / "missing.json"])


def test_committed_page_is_the_render_of_the_committed_data():
    data = perfdoc.load([DATA])
    assert PAGE.read_text(encoding="utf-8") == perfdoc.render(data), f"re-render with: {perfdoc.RERENDER}"


def test_no_table_on_the_committed_page_has_more_than_ten_columns():
    text = PAGE.read_text(encoding="utf-8")
    wide = [line[:80] for line in text.splitlines() if line.startswith("|")
            and line.strip().strip("|").count(" | ") + 1 > MAX_COLUMNS]
    assert table_widths(text) and not wide


def test_every_committed_benchmark_has_headlines_that_name_its_figures():
    for bench in perfdoc.load([DATA])["benchmarks"].values():
        headlines = perfdoc.HEADLINES.get(perfdoc.function_name(bench))
        assert headlines, f"{bench['name']}: no headline in perfdoc.HEADLINES"
        info = bench["extra_info"]
        for h in headlines:
            templates = [h.figure, h.goal or "", h.ratio or ""]
            keys = [k for k in (h.ours, h.peer, h.met) if k] + [h.ratio] * (h.ratio is not None and "{" not in h.ratio)
            keys += [k for t in templates for k in re.findall(r"\{(\w+)\}", t)]
            optional = {"rss_met", "rss_target"} if bench["name"].endswith("[sft]") else set()
            assert not [k for k in keys if k not in info and k not in optional], bench["name"]

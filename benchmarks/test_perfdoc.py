"""docs/performance.md generation from pytest-benchmark JSON: every extra_info figure is rendered,
runs merge by benchmark, bad input is one line."""

from __future__ import annotations

import json

import pytest

import perfdoc
from pefthub.errors import ConfigError


def run_json(benchmarks, when="2026-11-22T10:00:00"):
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU", "count": 2}, "python_version": "3.11.7"},
            "commit_info": {"id": "0123456789abcdef", "dirty": True}, "datetime": when, "benchmarks": benchmarks}


def bench(name, group, median, **extra):
    return {"name": name, "fullname": f"benchmarks/test_x.py::{name}", "group": group,
            "stats": {"median": median, "rounds": 3}, "extra_info": extra}


def test_every_extra_info_figure_is_rendered_per_group():
    merged = {"benchmarks": {}, "machine_info": {}, "commit_info": {}, "datetime": None}
    perfdoc.merge(merged, run_json([
        bench("test_decode[32]", "decode", 12.5, hf_tok_s=101.234, vllm_over_hf=1.37, meets=False,
              note="alternating rounds"),
        bench("test_decode[64]", "decode", 20.0, hf_tok_s=123.0, extra_only_here=7),
        bench("test_sft_step", "trainers", 7.5, step_ratio=0.8123),
    ]))
    page = perfdoc.render(merged)
    assert page.startswith("# Performance\n") and perfdoc.COMMAND in page
    assert "## decode" in page and "## trainers" in page
    assert "| benchmark | median s | rounds | hf_tok_s | vllm_over_hf | meets | extra_only_here |" in page
    assert "| test_decode[32] | 12.5 | 3 | 101.2 | 1.37 | no | – |" in page
    assert "| test_decode[64] | 20 | 3 | 123.0 | – | – | 7 |" in page
    assert "| test_sft_step | 7.5 | 3 | 0.812 |" in page
    assert "- `test_decode[32]`: alternating rounds" in page  # notes go under the table
    assert "Test CPU" in page and "0123456789ab (dirty)" in page


def test_update_merges_runs_keeping_other_benchmarks(tmp_path):
    page = tmp_path / "docs" / "performance.md"
    perfdoc.update(page, run_json([bench("test_a", "g1", 1.0, x=1.5), bench("test_b", "g2", 2.0, y=2.5)]))
    perfdoc.update(page, run_json([bench("test_a", "g1", 3.0, x=9.5)], when="2026-11-23T10:00:00"))
    text = page.read_text()
    assert "| test_a | 3 | 3 | 9.5 |" in text and "| test_b | 2 | 3 | 2.5 |" in text
    # Each section says which run measured it; the header names the latest run.
    assert "- measured in the run of 2026-11-23T10:00:00 (commit 0123456789ab (dirty))" in text.split("## g2")[0]
    assert "- measured in the run of 2026-11-22T10:00:00" in text.split("## g2")[1]
    assert "- latest run: 2026-11-23T10:00:00" in text
    stored = json.loads(perfdoc.data_file(page).read_text())
    assert sorted(b["name"] for b in stored["benchmarks"]) == ["test_a", "test_b"]
    assert stored["datetime"] == "2026-11-23T10:00:00"


def test_cli_renders_from_json_files_and_rejects_bad_input(tmp_path, capsys):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(run_json([bench("test_a", "g", 1.0, x=1.0)])))
    second.write_text(json.dumps(run_json([bench("test_a", "g", 2.0, x=2.0)])))
    out = tmp_path / "perf.md"
    assert perfdoc.main([str(first), str(second), "-o", str(out)]) == 0
    assert "| test_a | 2 | 3 | 2 |" in out.read_text()  # the later file wins
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "benchmarks"}')
    assert perfdoc.main([str(bad), "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: not pytest-benchmark JSON output (no 'benchmarks' list)"
    with pytest.raises(ConfigError, match="not a readable"):
        perfdoc.load([tmp_path / "missing.json"])

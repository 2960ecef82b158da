"""One pipeline: `pefthub bench`'s table and the site get the same rows from the report layer, and
the base run is chosen by one function both go through."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pefthub.report import rows as row_rules

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "leaderboards" / "cpu-paper-shape" / "results"


def cli_table(results_dir: Path):
    """What `pefthub bench` prints after a run: every run of the grid (here: every result file)."""
    from pefthub.commands.bench_command import results_table

    return results_table(results_dir, sorted(p.stem for p in results_dir.glob("*.json")))


def site_view(root: Path):
    from pefthub.site.aggregate import view_suite
    from pefthub.site.load import load_leaderboards

    (suite,), problems = load_leaderboards(root)
    assert problems == []
    return view_suite(suite)


def fingerprint(row) -> tuple:
    c = row.vs_base
    return (row.label, row.accuracy, row.ci_low, row.ci_high, row.ci_method, row.seeds, tuple(row.run_ids),
            row.learning_rate, row.lr_selection, row.lr_at_edge, row.strict_accuracy,
            tuple((f.name, f.flagged, f.seeds, f.detail) for f in row.flags), row.vs_base_note,
            None if c is None else (c.delta, c.low, c.high, c.p_value, c.p_holm, c.verdict, c.n_items))


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    root = tmp_path_factory.mktemp("lb") / "cpu-paper-shape"
    shutil.copytree(PAPER, root / "results")
    return root


def test_cli_table_and_site_show_identical_rows(copied):
    table, view = cli_table(copied / "results"), site_view(copied)
    ours = {r.label: fingerprint(r) for r in table.rows}
    theirs = {r.label: fingerprint(r) for r in view.rows}
    assert len(ours) == 19 and ours == theirs
    assert table.base.run_ids == view.base.run_ids == ["31f3cb2410dc34d1"]
    assert view.health == table.health
    flagged = {label for label, f in ours.items() if f[11]}
    assert "tinylora@13/grpo" in flagged and "lora/sft" not in flagged   # the flags have content to compare


def test_both_paths_choose_the_base_run_through_one_function(copied, monkeypatch):
    calls = []
    rule = row_rules.base_row

    def spy(rows, like=None):
        calls.append(like is None)
        return rule(rows, like)

    monkeypatch.setattr(row_rules, "base_row", spy)
    table = cli_table(copied / "results")
    assert calls and table.base is not None
    calls.clear()
    view = site_view(copied)
    assert calls and view.base.run_ids == table.base.run_ids

    # Without a base row (the rule says none), neither path pairs any row with base or assesses health.
    monkeypatch.setattr(row_rules, "base_row", lambda rows, like=None: None)
    table, view = cli_table(copied / "results"), site_view(copied)
    for rows in (table.rows, view.rows):
        assert all(r.vs_base is None for r in rows)
        assert {r.vs_base_note for r in rows if not r.is_base} == {"no base-model row in this suite"}
    assert all(h.base_run_id is None for h in list(table.health.values()) + list(view.health.values()))


def test_base_rule_prefers_most_seeds_then_the_newest():
    from pefthub.report.records import RunRecord
    from pefthub.report.rows import build_rows

    def doc(rid, seed, finished, limit):
        config = {"method": "base", "trainer": "none", "model": "m", "task": {"name": "t"}, "seed": seed,
                  "eval": {"limit": limit}}
        return {"run_id": rid, "status": "success", "config": config, "finished_at": finished,
                "evaluation": {"test": {"accuracy": 0.2, "n": limit}}}

    one = [doc("a", 0, "2026-01-03", 10)]
    two = [doc("b", 0, "2026-01-01", 20), doc("c", 1, "2026-01-02", 20)]
    newer = [doc("d", 0, "2026-01-04", 30)]
    rows = build_rows(RunRecord(d, None) for d in one + two + newer)
    assert row_rules.base_row(rows).run_ids == ["b", "c"]            # most seeds
    rows = build_rows(RunRecord(d, None) for d in one + newer)
    assert row_rules.base_row(rows).run_ids == ["d"]                 # then the newest


def test_each_rule_named_in_the_architecture_page_exists():
    """docs/architecture.md's "Where each rule lives" names functions that exist, each rule once."""
    import importlib
    import re

    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Where each rule lives", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"`(pefthub(?:\.\w+)+)`", section)
    assert len(names) >= 15
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ModuleNotFoundError:
                continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        assert obj is not None, name
    rules = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rules) == len(set(rules))


def test_bench_on_a_finished_grid_reads_each_result_twice_and_its_samples_once(tmp_path, monkeypatch, capsys):
    """`pefthub bench` with nothing left to run: the store scan reads each result, the table's records read
    each result and stream each samples file once; nothing else reads the directory."""
    import builtins
    from collections import Counter

    from pefthub import grid
    from pefthub.cli import main
    from pefthub.report import records

    results = tmp_path / "results"
    shutil.copytree(ROOT / "leaderboards" / "cpu-pilots" / "quick-v1" / "results", results)  # the chain_sum quick board
    reads: Counter = Counter()

    def counting(read):
        def wrapped(path, *a, **k):
            reads[Path(path).name] += 1
            return read(path, *a, **k)
        return wrapped

    monkeypatch.setattr(grid, "read_result", counting(grid.read_result))
    monkeypatch.setattr(records, "read_result", counting(records.read_result))
    monkeypatch.setattr(records, "open", counting(builtins.open), raising=False)
    monkeypatch.chdir(ROOT)
    assert main(["bench", "benchmarks/cpu-pilots/quick-v1", "--results", str(results)]) == 0
    assert "0 to run" in capsys.readouterr().out
    files = {p.name for p in results.iterdir()}
    assert {n for n in reads} <= files
    assert {reads[n] for n in files if n.endswith(".samples.jsonl")} == {1}
    assert {reads[n] for n in files if not n.endswith(".samples.jsonl")} == {2}

"""`pefthub export`: a suite's runs and items as Parquet or JSON lines that `datasets.load_dataset`
and pandas open, with lm-eval's identifiers on every item, written in batches; bad input in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pefthub import cli, results
from pefthub.commands import export_command as export

QUICK = Path(__file__).resolve().parents[2] / "leaderboards" / "cpu-pilots" / "quick-v1" / "results"
RUNS = ["070475df7ebea6cc", "e5501a31c81086e0", "a0b759edac48102c"]  # vera/grpo, base, lora/sft


@pytest.fixture
def suite(tmp_path, monkeypatch):
    """Three committed runs of the chain_sum quick board, a failed run and a corrupt file in a results directory."""
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))
    directory = tmp_path / "mini" / "results"
    directory.mkdir(parents=True)
    for rid in RUNS:
        for name in (f"{rid}.json", f"{rid}.samples.jsonl"):
            shutil.copy(QUICK / name, directory / name)
    failed = results.new_result({"model": "m", "method": "lora", "trainer": "sft", "seed": 9}, suite="mini",
                                status="failed", error="NaN loss at step 3")
    results.write_result(directory, failed)
    (directory / "broken.json").write_text("{not json")
    (directory / "copies").mkdir()  # a second copy of a run in a subfolder is read once
    shutil.copy(QUICK / f"{RUNS[0]}.json", directory / "copies" / f"{RUNS[0]}.json")
    return directory, failed["run_id"]


def docs_of(directory):
    return {d["run_id"]: d for d in results.load_results_dir(directory)[0]}


@pytest.mark.parametrize("fmt,builder", [("parquet", "parquet"), ("jsonl", "json")])
def test_export_tables_open_with_datasets_and_pandas(suite, tmp_path, capsys, fmt, builder):
    import datasets
    import pandas as pd

    directory, failed_id = suite
    out = tmp_path / "export"
    assert cli.main(["export", str(directory.parent), "--format", fmt, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "broken.json" in printed.err and "4 runs" in printed.out
    assert f"copies/{RUNS[0]}.json: duplicate of run {RUNS[0]}" in printed.err
    runs_file, items_file = out / f"mini.runs.{fmt}", out / f"mini.items.{fmt}"

    cache = str(tmp_path / "hf-cache")
    runs = datasets.load_dataset(builder, data_files=str(runs_file), split="train", cache_dir=cache)
    items = datasets.load_dataset(builder, data_files=str(items_file), split="train", cache_dir=cache)
    docs = docs_of(directory)
    assert sorted(runs["run_id"]) == sorted(docs) and len(docs) == 4
    by_id = {r["run_id"]: r for r in runs}
    for rid in RUNS:
        doc, row = docs[rid], by_id[rid]
        test = doc["evaluation"]["test"]
        assert row["accuracy"] == test["accuracy"] and row["n"] == test["n"] and row["status"] == "success"
        assert row["strict"] == test["metrics"]["exact_match,strict-match"]
        assert row["method"] == doc["config"]["method"] and row["params"] == doc["method"]["trainable_params"]
        assert row["learning_rate"] == doc["config"].get("learning_rate") and row["seed"] == doc["config"].get("seed")
        assert row["spent_tokens_trained"] == doc["budget"]["spent"]["tokens_trained"]
        assert json.loads(row["config"]) == doc["config"]
    assert by_id[failed_id]["status"] == "failed" and by_id[failed_id]["accuracy"] is None

    assert len(items) == sum(docs[r]["evaluation"]["test"]["n"] for r in RUNS)
    assert "completion" not in items.column_names
    first = results.read_samples(directory / f"{RUNS[0]}.samples.jsonl", result=docs[RUNS[0]])
    mine = sorted((r for r in items if r["run_id"] == RUNS[0]), key=lambda r: (r["split"] != "test", r["doc_id"]))
    assert [r["correct"] for r in mine] == [s["correct"] for s in first]
    assert [(r["doc_id"], r["doc_hash"], r["prompt_hash"], r["target_hash"]) for r in mine] == [
        (s["doc_id"], s["doc_hash"], s["prompt_hash"], s["target_hash"]) for s in first]
    assert all(len(h) == 64 for h in items["doc_hash"])  # regenerated from the recorded task for these old files
    # the join key with lm-eval: the same document hashes the same in every run of the suite
    assert len({(r["doc_id"], r["doc_hash"]) for r in items}) == docs[RUNS[0]]["evaluation"]["test"]["n"]

    if fmt == "parquet":
        frame = pd.read_parquet(items_file)
        assert len(frame) == len(items) and frame["correct"].dtype == bool
        assert pd.read_parquet(runs_file).set_index("run_id").loc[RUNS[0], "accuracy"] == docs[RUNS[0]]["evaluation"]["test"]["accuracy"]
    else:
        assert len(pd.read_json(items_file, lines=True)) == len(items)


def test_completions_on_request_and_writes_in_batches(suite, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    directory, _ = suite
    monkeypatch.setattr(export, "BATCH_ROWS", 50)
    assert cli.main(["export", str(directory), "--completions", "--out", str(tmp_path / "o")]) == 0
    table = pq.ParquetFile(tmp_path / "o" / "mini.items.parquet")
    assert table.metadata.num_row_groups >= table.metadata.num_rows // 50 > 1  # one row group per flushed batch
    column = table.read(columns=["run_id", "completion"]).to_pylist()
    stored = [json.loads(line)["completion"] for line in (directory / f"{RUNS[0]}.samples.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in column if r["run_id"] == RUNS[0]] == stored
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("argv,message", [
    (["export", "no-such-suite"], "error: no results for 'no-such-suite'"),
    (["export", "quick", "--format", "csv"], "error: unknown export format 'csv' (known: parquet, jsonl)"),
])
def test_bad_suite_or_format_is_one_line_rc_2(argv, message, capsys, tmp_path):
    assert cli.main(argv + ["--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


def test_jsonl_loads_when_a_column_is_first_set_far_into_the_file(tmp_path, monkeypatch):
    """datasets types JSON columns from the file's first block; the export writes, first, a line
    setting each column, so a column null for many lines (`error`, set only by the failed run read
    last) still loads when the file spans many blocks."""
    import datasets

    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))
    directory = tmp_path / "many" / "results"
    directory.mkdir(parents=True)
    doc = json.loads((QUICK / f"{RUNS[0]}.json").read_text())
    for seed in range(1, 31):  # the same run under 30 seeds: new ids, same items
        config = dict(doc["config"], seed=seed)
        copy = dict(doc, config=config, run_id=results.run_id(config), config_hash=results.config_hash(config))
        copy["evaluation"] = {"test": dict(doc["evaluation"]["test"], samples_file=f"{copy['run_id']}.samples.jsonl")}
        (directory / f"{copy['run_id']}.json").write_text(json.dumps(copy))
        shutil.copy(QUICK / f"{RUNS[0]}.samples.jsonl", directory / f"{copy['run_id']}.samples.jsonl")
    failed = results.new_result({"model": "m", "method": "lora", "trainer": "sft", "seed": 9}, suite="many",
                                status="failed", error="NaN loss at step 3")
    (directory / "zz-failed.json").write_text(json.dumps(failed))  # read last
    out = tmp_path / "j"
    assert cli.main(["export", str(directory), "--format", "jsonl", "--out", str(out)]) == 0
    runs_file = out / "many.runs.jsonl"
    assert runs_file.stat().st_size > 3 * 16384
    assert failed["run_id"] in {json.loads(line)["run_id"] for line in runs_file.read_text().splitlines()[:3]}
    runs = datasets.load_dataset("json", data_files=str(runs_file), split="train", chunksize=16384,
                                 cache_dir=str(tmp_path / "hf"))
    assert len(runs) == 31 and [r["error"] for r in runs if r["error"]] == ["NaN loss at step 3"]
    items = datasets.load_dataset("json", data_files=str(out / "many.items.jsonl"), split="train", chunksize=16384,
                                  cache_dir=str(tmp_path / "hf"))
    assert len(items) == 30 * doc["evaluation"]["test"]["n"]

"""Older results still read: the schema-v0 draft layout (files named by hand, `ok`/`results`, samples
named by the document's `samples_file`) in tests/results/fixtures/schema-v0, and every committed
layout (a suite's results/ folder, pilot folders without one, samples without lm-eval's identifiers)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pefthub import cli, results
from pefthub.report.records import samples_file_of

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "schema-v0"
REPO = Path(__file__).resolve().parents[2]
COMMITTED = ["leaderboards/cpu-pilots/quick-v1/results", "leaderboards/cpu-paper-shape/results", "leaderboards/cpu-pilots/cost",
             "leaderboards/cpu-pilots/steps/results"]
#: doc_hash that lm-eval 0.4.13 logged (--log_samples) for the first two test documents of the fixture's task.
LM_EVAL_DOC_HASH = ["7d92089c203e020fec4909ea17d521168fb64c06560d948a91df0eea122d5be5",
                    "ea6cbdf5ac861fa5395faafff82c410f4a76c82daf5c39591cb52ea3dd6eb78c"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))


def test_schema_v0_directory_reads_with_its_samples():
    pairs, problems = results.load_results_dir(FIXTURE, with_paths=True)
    assert problems == [] and len(pairs) == 3
    by_name = {Path(p).name: doc for p, doc in pairs}
    lora = by_name["draft-lora-seed0.json"]
    assert lora["schema_version"] == results.SCHEMA_VERSION and lora["run_id"] == results.run_id(lora["config"])
    assert lora["status"] == "success" and lora["evaluation"]["test"]["n"] == 3
    assert by_name["draft-full-seed0.json"]["status"] == "failed"

    # samples named by hand: found through the document's samples_file, not the run id
    path = samples_file_of(FIXTURE / "draft-lora-seed0.json", lora)
    assert path == FIXTURE / "draft-lora-seed0.samples.jsonl"
    assert results.samples_path(FIXTURE, lora["run_id"]) != path
    records = results.read_samples(path, result=lora)
    assert [r["doc_id"] for r in records] == [0, 1, 2]
    assert [r["doc_hash"] for r in records[:2]] == LM_EVAL_DOC_HASH  # the task config regenerates the documents
    assert all(r["prompt_hash"] == hashlib.sha256(r["prompt"].encode()).hexdigest() for r in records)
    assert all(r["target_hash"] == hashlib.sha256(str(r["gold"]).encode()).hexdigest() for r in records)

    # a draft that recorded no task config: doc_hash cannot be known, the other three can
    seed1 = by_name["draft-lora-seed1.json"]
    records = results.read_samples(samples_file_of(FIXTURE / "draft-lora-seed1.json", seed1), result=seed1)
    assert [r["doc_hash"] for r in records] == [None, None]
    assert [r["doc_id"] for r in records] == [0, 1] and all(r["prompt_hash"] and r["target_hash"] for r in records)
    # a crafted samples_file cannot point outside the folder
    assert samples_file_of(FIXTURE / "x.json", {"run_id": "x", "evaluation": {
        "test": {"samples_file": "../../../leaderboards/quick/results/070475df7ebea6cc.samples.jsonl"}}}) is None


def test_schema_v0_directory_exports(tmp_path):
    import datasets

    assert cli.main(["export", str(FIXTURE), "--out", str(tmp_path)]) == 0
    runs = datasets.load_dataset("parquet", data_files=str(tmp_path / "schema-v0.runs.parquet"), split="train",
                                 cache_dir=str(tmp_path / "hf"))
    items = datasets.load_dataset("parquet", data_files=str(tmp_path / "schema-v0.items.parquet"), split="train",
                                  cache_dir=str(tmp_path / "hf"))
    assert sorted(runs["status"]) == ["failed", "success", "success"] and len(items) == 5
    hashes = items["doc_hash"]  # files in name order: seed0's three items, then seed1's two
    assert hashes[:2] == LM_EVAL_DOC_HASH and len(hashes[2]) == 64 and hashes[3:] == [None, None]


@pytest.mark.parametrize("folder", COMMITTED)
def test_every_committed_layout_reads_with_lm_eval_identifiers(folder):
    pairs, problems = results.load_results_dir(REPO / folder, with_paths=True)
    assert pairs and problems == []
    for path, doc in pairs:
        if doc["status"] != "success":
            continue
        samples = samples_file_of(path, doc)
        assert samples is not None, path
        records = results.read_samples(samples)
        assert len(records) == sum(b["n"] for b in doc["evaluation"].values())
        assert all(r["prompt_hash"] and r["target_hash"] and isinstance(r["doc_id"], int) for r in records)

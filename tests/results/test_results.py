"""Result files: identity, atomic writes, validation, upgrades, tolerant loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pefthub import results as R

CONFIG = {"model": "tiny-random", "task": {"name": "basic_arithmetic"}, "trainer": "sft", "method": "lora",
          "method_config": {"r": 2}, "params_target": None, "learning_rate": 1e-3, "seed": 0,
          "budget": {"steps": 2}, "eval": {"split": "test", "limit": 4}}


def success_doc(config=CONFIG, **overrides):
    doc = R.new_result(config, suite="unit", status="success", finished_at=R.utc_now())
    doc.update({
        "model": {"name": config["model"], "total_params": 1000},
        "method": {"name": config["method"], "trainable_params": 128, "adapter_bytes": {"trainable_fp32": 512}},
        "curves": [{"step": 1, "loss": 1.5}],
        "evaluation": {"test": {"accuracy": 0.25, "ci_low": 0.1, "ci_high": 0.5, "n": 4, "correct": 1}},
        "environment": R.environment(),
    })
    doc.update(overrides)
    return doc


def test_config_hash_is_canonical_and_order_independent():
    shuffled = dict(reversed(list(CONFIG.items())))
    assert R.config_hash(shuffled) == R.config_hash(CONFIG)
    assert len(R.config_hash(CONFIG)) == 64
    assert R.run_id(CONFIG) == R.config_hash(CONFIG)[:16]
    changed = dict(CONFIG, seed=1)
    assert R.run_id(changed) != R.run_id(CONFIG)
    # The hash is of compact sorted JSON, so it can be recomputed by anyone from the spec.
    import hashlib
    expected = hashlib.sha256(json.dumps(CONFIG, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert R.config_hash(CONFIG) == expected


def test_config_with_nan_cannot_be_hashed():
    with pytest.raises(ValueError):
        R.config_hash(dict(CONFIG, learning_rate=float("nan")))


def test_environment_records_versions_and_hardware():
    env = R.environment()
    assert env["packages"]["torch"].startswith("2.")
    assert env["packages"]["peft"]
    assert env["cpu_count"] >= 1 and env["torch_threads"] >= 1
    assert env["python"].count(".") == 2
    assert env["hostname"]
    # This checkout is a git repository, so the commit is a 40-hex sha and dirty is a bool.
    assert env["git_commit"] is None or len(env["git_commit"]) == 40
    assert env["git_dirty"] in (None, True, False)


def test_importing_results_does_not_import_torch():
    code = "import sys, pefthub.results; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_write_then_read_roundtrip_with_samples(tmp_path):
    doc = success_doc()
    samples = [{"split": "test", "id": f"q{i}", "prompt": "p", "completion": "c", "extracted": "1",
                "gold": "1", "correct": i == 0} for i in range(4)]
    path = R.write_result(tmp_path, doc, samples)
    assert path.name == f"{doc['run_id']}.json"
    back = R.read_result(path)
    assert back["evaluation"]["test"]["samples_file"] == f"{doc['run_id']}.samples.jsonl"
    assert back["config"] == CONFIG and back["status"] == "success"
    stored = tmp_path / back["evaluation"]["test"]["samples_file"]
    assert R.read_samples(stored, lm_eval_ids=False) == samples
    # a reader adds lm-eval's identifiers the records lack (tests/results/test_lm_eval_ids.py)
    read = R.read_samples(stored)
    assert [{k: r[k] for k in samples[0]} for r in read] == samples
    assert [r["doc_id"] for r in read] == [0, 1, 2, 3] and all(r["doc_hash"] is None for r in read)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_nan_in_curves_is_written_as_null(tmp_path):
    doc = success_doc(curves=[{"step": 1, "loss": float("nan"), "reward": float("inf")}])
    path = R.write_result(tmp_path, doc)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert R.read_result(path)["curves"][0]["loss"] is None


def test_write_refuses_invalid_documents(tmp_path):
    doc = success_doc()
    del doc["evaluation"]
    with pytest.raises(R.InvalidResult, match="evaluation"):
        R.write_result(tmp_path, doc)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.pop("config"), "missing required key 'config'"),
    (lambda d: d.update(status="done"), "status 'done'"),
    (lambda d: d["config"].update(seed=7), "config_hash does not match"),
    (lambda d: d.update(schema_version=99), "newer than this pefthub"),
    (lambda d: d.update(schema_version="1"), "not a non-negative integer"),
    (lambda d: d["evaluation"]["test"].update(accuracy=1.5), "accuracy"),
    (lambda d: d.update(status="failed", error=None), "'error' is empty"),
    (lambda d: d["method"].pop("trainable_params"), "trainable_params"),
])
def test_corrupt_documents_are_reported_with_reason(tmp_path, mutate, reason):
    doc = json.loads(json.dumps(success_doc()))
    mutate(doc)
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(R.ResultFileError) as info:
        R.read_result(path)
    assert reason in info.value.reason
    assert info.value.file == str(path)


def test_failed_run_needs_only_the_core_fields(tmp_path):
    doc = R.new_result(CONFIG, suite="unit", error="NaN loss at step 3", finished_at=R.utc_now())
    back = R.read_result(R.write_result(tmp_path, doc))
    assert back["status"] == "failed" and back["error"] == "NaN loss at step 3"
    assert "evaluation" not in back


def test_upgrade_from_v0_draft():
    v0 = {"config": CONFIG, "ok": True, "trainable_params": 64, "started_at": "2026-01-01T00:00:00Z",
          "finished_at": "2026-01-01T00:01:00Z", "method": {"name": "lora"},
          "results": {"test": {"accuracy": 0.5, "n": 10}}, "extra": 1}
    doc = R.upgrade(v0)
    R.validate(doc)
    assert doc["schema_version"] == R.SCHEMA_VERSION
    assert doc["run_id"] == R.run_id(CONFIG) and doc["config_hash"] == R.config_hash(CONFIG)
    assert doc["status"] == "success" and doc["error"] is None
    assert doc["evaluation"]["test"]["accuracy"] == 0.5 and "results" not in doc
    assert doc["method"]["trainable_params"] == 64 and "trainable_params" not in doc
    assert doc["suite"] == "adhoc" and doc["extra"] == 1
    assert "schema_version" not in v0  # the input is not mutated

    failed = R.upgrade({"config": CONFIG, "ok": False, "started_at": "2026-01-01T00:00:00Z"})
    R.validate(failed)
    assert failed["status"] == "failed" and failed["error"]


def test_upgrade_reads_v0_files_from_disk(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"config": CONFIG, "ok": False, "error": "OOM",
                                "started_at": "2026-01-01T00:00:00Z"}))
    assert R.read_result(path)["error"] == "OOM"


def test_upgrade_registry_applies_steps_in_order(monkeypatch):
    calls = []
    monkeypatch.setattr(R, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(R.UPGRADES, 1, lambda d: calls.append(1) or dict(d, schema_version=2, a=1))
    monkeypatch.setitem(R.UPGRADES, 2, lambda d: calls.append(2) or dict(d, schema_version=3, b=d["a"] + 1))
    out = R.upgrade({"schema_version": 1, "config": CONFIG})
    assert calls == [1, 2] and out["b"] == 2 and out["schema_version"] == 3
    monkeypatch.delitem(R.UPGRADES, 2)
    with pytest.raises(R.InvalidResult, match="no upgrade path from schema_version 2"):
        R.upgrade({"schema_version": 1, "config": CONFIG})


def test_load_results_dir_skips_corrupt_foreign_and_temp_files(tmp_path):
    good = R.write_result(tmp_path / "suite" / "results", success_doc())
    results = good.parent
    (results / "truncated.json").write_text('{"schema_version": 1, "run_id": "ab')
    (results / "foreign.json").write_text(json.dumps({"name": "some-package", "version": "1.0"}))
    (results / "list.json").write_text("[1, 2]")
    (results / f".{good.name}.abc.tmp").write_text("{")  # a killed writer's temp file
    (results / "stray.json.tmp").write_text("{")
    (results / f"{'0' * 16}.samples.jsonl").write_text("{}\n")
    docs, problems = R.load_results_dir(tmp_path)
    assert [d["run_id"] for d in docs] == [good.stem]
    reasons = {p.name: reason for p, reason in problems}
    assert set(reasons) == {"truncated.json", "foreign.json", "list.json"}
    assert "invalid JSON at line 1" in reasons["truncated.json"]
    assert "not a pefthub result" in reasons["foreign.json"]
    assert "not a JSON object" in reasons["list.json"]
    with_paths, _ = R.load_results_dir(results, with_paths=True)
    assert with_paths[0][0] == good
    assert R.load_results_dir(tmp_path / "missing") == ([], [])


def test_clean_temp_files_removes_only_stale_temps(tmp_path):
    stale = tmp_path / ".abc.json.x1.tmp"
    fresh = tmp_path / ".def.json.x2.tmp"
    keep = tmp_path / "abc.json"
    for p in (stale, fresh, keep):
        p.write_text("{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert R.clean_temp_files(tmp_path) == [stale]
    assert fresh.exists() and keep.exists() and not stale.exists()


def test_rewrite_replaces_atomically(tmp_path):
    doc = R.new_result(CONFIG, suite="unit", error="first")
    path = R.write_result(tmp_path, doc)
    inode_before = path.stat().st_ino
    R.write_result(tmp_path, dict(doc, error="second"))
    assert R.read_result(path)["error"] == "second"
    assert path.stat().st_ino != inode_before  # replaced by rename, never truncated in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "a.json"
    R.atomic_write_text(path, "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(R.os, "replace", boom)
    with pytest.raises(OSError):
        R.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]

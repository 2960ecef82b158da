"""pefthub.report.records: one pass over a results directory into compact run records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pefthub.report import records as R

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "leaderboards" / "cpu-paper-shape" / "results"


@pytest.fixture(scope="module")
def paper():
    return R.read_records(PAPER)


def test_every_result_is_read_once_with_its_items(paper):
    docs = [json.loads(p.read_text()) for p in sorted(PAPER.glob("*.json"))]
    assert len(paper) == len(docs)
    for record in paper:
        test = record.doc["evaluation"].get("test") if record.status == "success" else None
        if test is None:
            continue
        items = record.items["test"]
        assert items.n == test["n"] and int(items.correct.sum()) == test["correct"]
        assert len(items.ids) == len(items.correct) == len(items.completions) == len(items.extracted)


def test_runs_scored_on_the_same_items_share_one_ids_tuple(paper):
    scored = [r.items["test"].ids for r in paper if "test" in r.items]
    assert len({id(ids) for ids in scored}) == len({ids for ids in scored})


def test_no_sample_text_is_kept(paper):
    record = next(r for r in paper if "test" in r.items)
    assert "environment" not in record.doc or set(record.doc["environment"]) <= set(R.ENVIRONMENT_KEYS)
    assert not any(isinstance(v, str) and len(v) > 200 for v in record.items["test"].extracted)


def test_bad_files_are_reported_not_raised(tmp_path):
    some = next(p for p in sorted(PAPER.glob("*.json")) if (PAPER / f"{p.stem}.samples.jsonl").is_file())
    shutil.copy(some, tmp_path / some.name)
    (tmp_path / f"{some.stem}.samples.jsonl").write_text('{"split": "test", "id": "a", "correct": true}\nnot json\n')
    shutil.copy(some, tmp_path / "copy.json")                 # the same run id again
    (tmp_path / "broken.json").write_text("{")
    skipped = []
    (record,) = R.read_records(tmp_path, skipped)
    assert record.problem.startswith("invalid JSON on line 2") and record.items == {}
    reasons = sorted(reason for _, reason in skipped)
    assert len(reasons) == 2 and any(r.startswith("duplicate of run") for r in reasons)


def test_health_counts_come_from_the_stream():
    samples = [{"split": "test", "id": "1", "completion": "x" * 10, "extracted": None, "correct": False},
               {"split": "test", "id": "2", "completion": "The answer is 4.", "extracted": "4", "correct": True},
               {"split": "validation", "id": "v", "completion": "", "extracted": "1", "correct": True},
               {"id": "3", "completion": "x" * 10, "extracted": " ", "correct": False}]
    items = R.items_of(samples, "test", max_new_tokens=8)
    assert (items.n, items.no_answer, items.at_cap) == (3, 2, 2)
    assert items.ids == ("1", "2", "3") and items.correct.tolist() == [False, True, False]
    assert items.completions[0] == items.completions[2] != items.completions[1]
    assert R.items_of(samples, "validation").ids == ("v",)

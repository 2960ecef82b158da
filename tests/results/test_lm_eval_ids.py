"""lm-eval's per-item identifiers in pefthub's samples: ``doc_id``, ``doc_hash``, ``prompt_hash`` and
``target_hash`` equal what lm-eval's own command line logs with ``--log_samples`` for the same items,
both in freshly evaluated samples and derived for committed samples written before they were recorded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pefthub import cli, results
from pefthub.evaluation import evaluate, sample_ids
from pefthub.evaluation.render import render
from pefthub.models import load_model
from pefthub.report.records import samples_file_of
from pefthub.tasks import get_task, task_from_config

REPO = Path(__file__).resolve().parents[2]
#: A committed run of the chain_sum quick board (its samples file predates the identifiers).
QUICK_RUN = REPO / "leaderboards" / "cpu-pilots" / "quick-v1" / "results" / "070475df7ebea6cc.json"
FIELDS = sample_ids.FIELDS
SMALL = {"test_size": 12, "validation_size": 4, "train_size": 8, "min_terms": 2, "max_terms": 3, "max_digits": 2}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path / "cache"))


def lm_eval_logged(rendered, out, limit=None) -> dict[int, dict]:
    """lm-eval's own CLI (`pefthub lm-eval`, the fused engine on tiny-random) on a rendered pefthub task:
    the four identifiers of each logged sample, by doc_id."""
    argv = ["lm-eval", "--model", "pefthub", "--model_args", "pretrained=tiny-random,max_gen_toks=4",
            "--tasks", rendered.name, "--include_path", str(rendered.directory), "--batch_size", "4",
            "--apply_chat_template", "--fewshot_as_multiturn", "--log_samples", "--output_path", str(out)]
    assert cli.main(argv + (["--limit", str(limit)] if limit else [])) == 0
    [samples_file] = list(out.glob(f"*/samples_{rendered.name}_*.jsonl"))
    logged = {}
    for line in samples_file.read_text().splitlines():
        s = json.loads(line)
        ids = {k: s[k] for k in FIELDS}
        assert logged.setdefault(s["doc_id"], ids) == ids  # one entry per filter, same identifiers
    return logged


def test_fresh_samples_carry_the_identifiers_lm_eval_logs(tmp_path):
    task = get_task("chain_sum", **SMALL)
    lm = load_model("tiny-random")
    result = evaluate(lm.model, lm.tokenizer, task, limit=4, max_new_tokens=4, batch_size=4, backend="fused")
    mine = {s["doc_id"]: {k: s[k] for k in FIELDS} for s in result.samples}
    assert sorted(mine) == [0, 1, 2, 3] and all(isinstance(v, str) and len(v) == 64
                                                 for ids in mine.values() for k, v in ids.items() if k != "doc_id")

    rendered = render(task, "test", 4, 4)
    assert rendered.name == result.summary["protocol"]["lm_eval_task"]
    assert lm_eval_logged(rendered, tmp_path / "out") == mine

    # the same four derived from the stored fields alone (what a reader does for older files)
    stripped = [{k: v for k, v in s.items() if k not in FIELDS} for s in result.samples]
    sample_ids.fill(stripped, {"test": task.config()})
    assert {s["doc_id"]: {k: s[k] for k in FIELDS} for s in stripped} == mine
    # without the task config only doc_hash is unknown; a stored record the task disagrees with gets none
    stripped = [{k: v for k, v in s.items() if k not in FIELDS} for s in result.samples]
    stripped[1]["gold"] = "not the answer"
    sample_ids.fill(stripped, {"test": task.config()})
    assert stripped[1]["doc_hash"] is None and stripped[0]["doc_hash"] == mine[0]["doc_hash"]
    bare = [{k: v for k, v in s.items() if k not in FIELDS} for s in result.samples]
    sample_ids.fill(bare)
    assert [s["doc_hash"] for s in bare] == [None] * 4 and [s["prompt_hash"] for s in bare] == [
        mine[i]["prompt_hash"] for i in range(4)]


def test_committed_samples_get_the_identifiers_lm_eval_logs_for_their_documents(tmp_path):
    """A committed quick run (written before the identifiers were recorded): its stored lines stay as
    they are; a reader derives the four; the documents regenerated from the recorded task config
    render to the task hash the run recorded, and lm-eval's own log of that task gives the same
    doc_id, doc_hash and target_hash (prompt_hash is the hash of the stored prompt, which holds the
    model's chat template; lm-eval hashes its context the same way, as the test above shows)."""
    doc = results.read_result(QUICK_RUN)
    lines = [json.loads(line) for line in results.samples_path(QUICK_RUN.parent, doc["run_id"]).read_text().splitlines()]
    assert not any(k in lines[0] for k in FIELDS)  # written before the fields existed: never rewritten
    records = results.read_samples(results.samples_path(QUICK_RUN.parent, doc["run_id"]), result=doc)
    assert [{k: v for k, v in r.items() if k not in FIELDS} for r in records] == lines
    assert [r["doc_id"] for r in records] == list(range(len(lines)))
    assert all(r["doc_hash"] and r["prompt_hash"] == sample_ids.hash_string(r["prompt"]) for r in records)

    block = doc["evaluation"]["test"]
    protocol = block["protocol"]
    rendered = render(task_from_config(protocol["task"]), "test", block["n"], protocol["max_new_tokens"])
    assert rendered.config_hash == protocol["task_config_hash"]  # exactly the documents lm-eval saw
    logged = lm_eval_logged(rendered, tmp_path / "out", limit=3)
    assert {i: {k: records[i][k] for k in ("doc_id", "doc_hash", "target_hash")} for i in range(3)} == {
        i: {k: logged[i][k] for k in ("doc_id", "doc_hash", "target_hash")} for i in range(3)}


def test_reading_without_the_result_leaves_doc_hash_null_and_fields_present(tmp_path):
    shutil.copy(results.samples_path(QUICK_RUN.parent, QUICK_RUN.stem), tmp_path / "x.samples.jsonl")
    records = results.read_samples(tmp_path / "x.samples.jsonl")
    assert all(r["doc_hash"] is None and len(r["target_hash"]) == 64 for r in records)
    assert results.read_samples(tmp_path / "x.samples.jsonl", lm_eval_ids=False)[0].keys().isdisjoint(FIELDS)


@pytest.mark.parametrize("run", ["cpu-pilots/quick-v1/results/070475df7ebea6cc", "cpu-paper-shape/results/0193a06de2ee32d6"])
def test_every_committed_split_regenerates_the_documents_lm_eval_saw(run):
    """Each split of a committed run: the documents regenerated from its task config render to the
    task hash the run recorded, and every stored line gets a doc_hash."""
    path = REPO / "leaderboards" / f"{run}.json"
    doc = results.read_result(path)
    records = results.read_samples(samples_file_of(path, doc), result=doc)
    for split, block in doc["evaluation"].items():
        protocol = block["protocol"]
        rendered = render(task_from_config(protocol["task"]), split, block["n"], protocol["max_new_tokens"])
        assert rendered.config_hash == protocol["task_config_hash"], split
        lines = [r for r in records if r["split"] == split]
        assert len(lines) == block["n"] and all(r["doc_hash"] for r in lines)
        assert [r["doc_id"] for r in lines] == list(range(block["n"]))

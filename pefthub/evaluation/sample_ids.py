"""lm-eval's identifiers of one evaluated item (``doc_id``, ``doc_hash``, ``prompt_hash``,
``target_hash``), computed exactly as lm-eval's ``evaluate()`` logs them with ``--log_samples``, so
pefthub's samples join with lm-eval's own outputs.

A run evaluated now copies them from lm-eval's records (:func:`pefthub.evaluation.core.evaluate_lm`).
For samples written before they were recorded, :func:`fill` derives them from what the samples
file stored: ``doc_id`` is the record's position within its split (lm-eval numbers the first
``limit`` documents 0..n-1 and pefthub writes them in that order), ``prompt_hash`` hashes the stored
prompt (lm-eval's context string, chat template applied), ``target_hash`` the stored gold answer,
and ``doc_hash`` the document as lm-eval saw it, regenerated from the task config the result
records (``evaluation.<split>.protocol.task``); a regenerated document whose id, answer, system
prompt or question disagree with the stored record leaves ``doc_hash`` null.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Iterable

#: The per-item fields lm-eval's ``--log_samples`` writes and pefthub's samples carry.
FIELDS = ("doc_id", "doc_hash", "prompt_hash", "target_hash")


@functools.cache
def _lm_eval_hash():
    from lm_eval.utils import hash_string as lm_eval_hash  # imported on first use: lm_eval.utils pulls numpy

    return lm_eval_hash


def hash_string(text: str) -> str:
    """lm-eval's own hash (``lm_eval.utils.hash_string``)."""
    return _lm_eval_hash()(text)


def doc_hash(doc: dict[str, Any]) -> str:
    """``doc_hash`` of a document as lm-eval computes it in ``evaluate()``."""
    from lm_eval.utils import handle_non_serializable

    return hash_string(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False))


def prompt_hash(context: str) -> str:
    """``prompt_hash``: lm-eval hashes the request's first argument, the context string."""
    return hash_string(context)


def target_hash(target: Any) -> str:
    """``target_hash``: lm-eval hashes ``str(doc_to_target(doc))``; pefthub's target is the gold answer."""
    return hash_string(str(target))


def lm_eval_doc(row: dict[str, Any]) -> dict[str, Any]:
    """A rendered data row (:func:`pefthub.evaluation.render.data_rows`) as lm-eval's document: the
    data file is written with sorted keys and ``datasets`` keeps that order and the JSON types."""
    return {key: row[key] for key in sorted(row)}


@functools.lru_cache(maxsize=32)
def _docs(task_json: str, split: str, n: int) -> tuple[dict[str, Any], ...]:
    from pefthub.evaluation.render import data_rows
    from pefthub.tasks import task_from_config

    return tuple(lm_eval_doc(r) for r in data_rows(task_from_config(json.loads(task_json)), split, n))


def regenerated_docs(task_config: dict[str, Any], split: str, n: int) -> tuple[dict[str, Any], ...] | None:
    """The first ``n`` documents of ``split`` as lm-eval saw them, regenerated from ``task_config``
    (cached per task, split and count); None when the task cannot be built here."""
    try:
        return _docs(json.dumps(task_config, sort_keys=True), split, int(n))
    except Exception:  # an unregistered plugin task, a changed generator: the hash stays unknown
        return None


def _matches(doc: dict[str, Any], record: dict[str, Any]) -> bool:
    prompt = record.get("prompt")
    return (doc.get("id") == record.get("id") and str(doc.get("answer")) == str(record.get("gold"))
            and isinstance(prompt, str) and str(doc.get("prompt", "")) in prompt and str(doc.get("system", "")) in prompt)


def fill(records: Iterable[Any], tasks: dict[str, dict[str, Any]] | None = None) -> None:
    """Add the lm-eval fields to ``records`` (a samples file's lines, in file order) that lack them,
    in place; fields a record already has are kept. ``tasks`` maps a split to its task config (from
    the result document), which ``doc_hash`` needs; without it ``doc_hash`` is null."""
    records = [r for r in records if isinstance(r, dict)]
    by_split: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        by_split.setdefault(record.get("split"), []).append(record)
    for split, group in by_split.items():
        if all(all(f in r for f in FIELDS) for r in group):
            continue
        docs = None
        if tasks and isinstance(tasks.get(split), dict) and any(r.get("doc_hash") is None for r in group):
            docs = regenerated_docs(tasks[split], split, len(group))
        hash_ = _lm_eval_hash()  # prompt_hash and target_hash inlined: a reader fills every line of every file
        for position, record in enumerate(group):
            record.setdefault("doc_id", position)
            if "prompt_hash" not in record:
                prompt = record.get("prompt")
                record["prompt_hash"] = hash_(prompt) if isinstance(prompt, str) else None
            if "target_hash" not in record:
                record["target_hash"] = hash_(str(record["gold"])) if "gold" in record else None
            if record.get("doc_hash") is None:
                doc = docs[position] if docs is not None and position < len(docs) else None
                record["doc_hash"] = doc_hash(doc) if doc is not None and _matches(doc, record) else None

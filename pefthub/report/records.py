"""A results directory read once into compact run records, the input of every report.

:func:`read_records` reads each result document and streams its samples file line by line,
keeping per split only what the reports use: item ids (one tuple shared by every run scored on
the same items), correctness, a hash of each completion (the no-op rule compares completions
with the base model's), the extracted answer and gold (the disagreements ``pefthub compare``
lists) and the two counts the health rules need (no answer, cut off by the token cap). Sample
texts are never held, so memory grows with runs × items, not with the text the runs wrote.
Reading, upgrading and validating one result file is :mod:`pefthub.results`' job.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pefthub.results import SAMPLES_SUFFIX, ResultFileError, read_result, read_results

#: Splits whose items are kept (test for every comparison, validation for budget pilots).
SPLITS = ("test", "validation")
#: Characters that end a finished sentence; a completion at least as long (in characters) as the
#: token cap that does not end with one of them is counted as cut off by the cap.
TERMINAL = (".", "!", "?", ")", "]", "}", "\"", "'", "*", "`", "$")
#: Environment fields the reports use (the cost section); the rest of ``environment`` is dropped.
ENVIRONMENT_KEYS = ("load_average", "torch_threads")


def has_answer(sample: dict) -> bool:
    """The record has an extracted answer (not missing, not blank)."""
    extracted = sample.get("extracted")
    return extracted is not None and str(extracted).strip() != ""


def at_token_cap(completion: Any, max_new_tokens: int | None) -> bool:
    """Tokenizer-free proxy for "generation ran to ``max_new_tokens``": at least that many characters
    (a byte-level BPE token decodes to at least one character of ASCII text, so a shorter completion
    cannot have used every token) and no sentence-ending character at the end (a cap cuts mid-text)."""
    if not isinstance(completion, str) or not max_new_tokens:
        return False
    text = completion.rstrip()
    return len(completion) >= max_new_tokens and not text.endswith(TERMINAL)


def eval_max_new_tokens(doc: dict, split: str = "test") -> int | None:
    """The token cap a run's ``split`` was generated with (its protocol, else its eval config)."""
    block = _dict(_dict(doc.get("evaluation")).get(split))
    value = _dict(block.get("protocol")).get("max_new_tokens")
    if not isinstance(value, int):
        value = _dict(_dict(doc.get("config")).get("eval")).get("max_new_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def completion_hash(text: Any) -> int:
    """A 63-bit hash of a completion (0 for none): equal texts, equal hashes."""
    if not isinstance(text, str):
        return 0
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little") >> 1


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _intern(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Items:
    """One split of one run, item by item: ids in file order and, aligned with them, correctness,
    completion hashes, extracted answers and gold; ``n`` counts every record of the split (with or
    without an id), ``no_answer`` and ``at_cap`` among them."""

    ids: tuple[str, ...]
    correct: np.ndarray                  # bool, one per id
    completions: np.ndarray              # int64 completion hashes, one per id
    extracted: tuple
    gold: tuple
    n: int
    no_answer: int
    at_cap: int

    def position(self) -> dict[str, int]:
        """Item id -> index into the arrays."""
        return {item: i for i, item in enumerate(self.ids)}


class _ItemsBuilder:
    """Accumulates one split's records as they stream past."""

    def __init__(self, max_new_tokens: int | None):
        self.cap = max_new_tokens
        self.ids: list[str] = []
        self.correct: list[bool] = []
        self.completions: list[int] = []
        self.extracted: list = []
        self.gold: list = []
        self.n = self.no_answer = self.at_cap = 0

    def add(self, record: dict) -> None:
        self.n += 1
        self.no_answer += not has_answer(record)
        self.at_cap += at_token_cap(record.get("completion"), self.cap)
        item = record.get("id")
        if isinstance(item, (str, int)) and not isinstance(item, bool):
            self.ids.append(_intern(str(item)))
            self.correct.append(record.get("correct") is True)
            self.completions.append(completion_hash(record.get("completion")))
            self.extracted.append(_intern(record.get("extracted")))
            self.gold.append(_intern(record.get("gold")))

    def build(self, shared: dict[tuple, tuple]) -> Items:
        ids = tuple(self.ids)
        ids = shared.setdefault(ids, ids)
        return Items(ids, np.array(self.correct, dtype=bool), np.array(self.completions, dtype=np.int64),
                     tuple(self.extracted), tuple(self.gold), self.n, self.no_answer, self.at_cap)


def items_of(samples: Iterable[dict] | None, split: str = "test", max_new_tokens: int | None = None,
             shared: dict | None = None) -> Items | None:
    """The :class:`Items` of ``split`` in an iterable of sample records (records without a split count
    as test); ``None`` when the split has no record."""
    builder = _ItemsBuilder(max_new_tokens)
    for record in samples or ():
        if isinstance(record, dict) and record.get("split", "test") == split:
            builder.add(record)
    return builder.build({} if shared is None else shared) if builder.n else None


class ResultFields:
    """The fields every view of one result document ``self.doc`` reads (the report's records and the
    site's runs), read in this one place."""

    doc: dict

    @property
    def run_id(self) -> str:
        return self.doc["run_id"]

    @property
    def config(self) -> dict:
        return self.doc["config"]

    @property
    def status(self) -> str:
        return self.doc["status"]

    @property
    def is_base(self) -> bool:
        """The untrained reference row: method ``base`` (trainer ``none``)."""
        return self.config.get("method") == "base"

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


@dataclass
class RunRecord(ResultFields):
    """One run as the reports see it: its result document (``environment`` trimmed to
    :data:`ENVIRONMENT_KEYS`), where it was read, and its items per split."""

    doc: dict
    path: Path | None
    samples_file: Path | None = None
    items: dict[str, Items] = field(default_factory=dict)
    problem: str | None = None            # why the samples file could not be used, in part or at all


def samples_file_of(result_file: str | os.PathLike, doc: dict) -> Path | None:
    """The samples file beside a result: the name its evaluation blocks record (only its last
    component, so a crafted ``../`` name reads nothing from elsewhere), else ``<run_id>.samples.jsonl``."""
    folder = Path(result_file).parent
    names = [os.path.basename(block["samples_file"]) for block in _dict(doc.get("evaluation")).values()
             if isinstance(block, dict) and isinstance(block.get("samples_file"), str) and block["samples_file"]]
    names.append(f"{doc.get('run_id')}{SAMPLES_SUFFIX}")
    for name in names:
        if name.endswith(SAMPLES_SUFFIX) and (folder / name).is_file():
            return folder / name
    return None


def _slim(doc: dict) -> dict:
    out = dict(doc)
    if isinstance(doc.get("environment"), dict):
        out["environment"] = {k: doc["environment"][k] for k in ENVIRONMENT_KEYS if k in doc["environment"]}
    return out


def record_of(doc: dict, path: str | os.PathLike | None = None, *, samples: Path | None = None,
              shared: dict | None = None) -> RunRecord:
    """The :class:`RunRecord` of one result document; its samples are streamed from ``samples``
    (default: the file beside ``path``), and a bad line makes ``problem`` say so (the record keeps
    no items then)."""
    shared = {} if shared is None else shared
    if samples is None and path is not None:
        samples = samples_file_of(path, doc)
    if samples is not None and not Path(samples).is_file():
        samples = None
    record = RunRecord(_slim(doc), Path(path) if path is not None else None, samples)
    if samples is None:
        return record
    builders = {split: _ItemsBuilder(eval_max_new_tokens(doc, split)) for split in SPLITS}
    skipped = 0
    try:
        with open(samples, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    record.problem = f"invalid JSON on line {lineno}: {exc.msg}"
                    return record
                if not isinstance(value, dict):
                    skipped += 1
                    continue
                builder = builders.get(value.get("split", "test"))
                if builder is not None:
                    builder.add(value)
    except OSError as exc:
        record.problem = f"unreadable: {exc}"
        return record
    if skipped:
        record.problem = f"{skipped} line(s) are not JSON objects; skipped"
    record.items = {split: b.build(shared) for split, b in builders.items() if b.n}
    return record


def read_records(results_dir: str | os.PathLike, skipped: list[tuple[Path, str]] | None = None) -> list[RunRecord]:
    """Every usable result under ``results_dir`` as a :class:`RunRecord`, in file order, each file
    read once. An unusable result file, or a second file with a run id already read, is appended to
    ``skipped`` as ``(path, reason)`` instead of raising."""
    skipped = [] if skipped is None else skipped
    shared: dict[tuple, tuple] = {}
    seen: dict[str, Path] = {}
    out = []
    for path, doc in read_results(results_dir, skipped):
        rid = doc["run_id"]
        if rid in seen:
            skipped.append((path, f"duplicate of run {rid} already read from {seen[rid].name}; skipped"))
            continue
        seen[rid] = path
        out.append(record_of(doc, path, shared=shared))
    return out


def read_runs(results_dir: str | os.PathLike, run_ids: Iterable[str]) -> list[RunRecord]:
    """The records of the given runs (a grid's), in that order; runs without a readable result are left out."""
    from pefthub.results import result_path

    shared: dict[tuple, tuple] = {}
    out = []
    for rid in run_ids:
        path = result_path(results_dir, rid)
        if not path.is_file():
            continue
        try:
            doc = read_result(path)
        except ResultFileError:
            continue
        out.append(record_of(doc, path, shared=shared))
    return out

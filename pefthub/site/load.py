"""Find the suites under a leaderboards directory and read their result files.

Reading, upgrading and validating one file is :mod:`pefthub.results`' job; this module only
groups files into suites, drops duplicates, locates each run's samples file without trusting the
name written inside the result, and turns every unusable file into a :class:`Problem` (file and
reason) instead of an exception, so one bad file never stops the build.

Files are read one at a time (:func:`stream_suite`) and each run keeps only what the rows read
(the report layer's trimmed document; a run page reads its whole document again,
:meth:`Run.full_doc`); samples are held for one run at a time, and what the reports need of them
is kept as the report layer's compact record (:func:`run_record`), so the site reads each samples
file once and memory grows by a few kilobytes per run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from pefthub import results
from pefthub.report import records as run_records
from pefthub.site.metrics import is_number

RESULTS_SUBDIR = "results"
#: Top-level keys of a result document that only its run page shows in full; the rows read at most
#: :data:`pefthub.report.records.ENVIRONMENT_KEYS` of them.
PAGE_ONLY_KEYS = ("environment",)


@dataclass(frozen=True)
class Problem:
    """A file the site could not use (or used only in part), and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class Run(run_records.ResultFields):
    """One validated result document (:data:`PAGE_ONLY_KEYS` trimmed) and where it came from."""

    doc: dict
    path: Path
    suite: str

    def full_doc(self) -> dict:
        """The whole (upgraded) document, read again from its file; the kept one if that fails now."""
        try:
            return results.read_result(self.path)
        except results.ResultFileError:
            return self.doc

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def name(self) -> str:
        """The row name: a suite's named variant of a method (config ``variant``) or the method."""
        variant = self.config.get("variant")
        return variant if isinstance(variant, str) and variant else self.method

    @property
    def trainer(self) -> str:
        return self.config["trainer"]

    @property
    def learning_rate(self) -> float | None:
        lr = self.config.get("learning_rate")
        return lr if is_number(lr) else None

    @property
    def trainable_params(self) -> int | None:
        value = (self.doc.get("method") or {}).get("trainable_params")
        if is_number(value):
            return int(value)
        return 0 if self.is_base else None

    def evaluation(self, split: str) -> dict | None:
        block = (self.doc.get("evaluation") or {}).get(split)
        return block if isinstance(block, dict) and is_number(block.get("accuracy")) else None

    def accuracy(self, split: str = "test") -> float | None:
        block = self.evaluation(split)
        return float(block["accuracy"]) if block else None

    def spent(self, key: str) -> float | None:
        value = _dict(_dict(self.doc.get("budget")).get("spent")).get(key)
        return float(value) if is_number(value) else None

    @property
    def train_seconds(self) -> float | None:
        """Training wall time, rollouts included, evaluation excluded (see metrics.toml)."""
        if self.is_base:
            return None
        parts = [self.spent("seconds_generation"), self.spent("seconds_train")]
        if any(p is not None for p in parts):
            return sum(p for p in parts if p is not None)
        total, evaluation = self.spent("seconds_total"), self.spent("seconds_eval")
        if total is not None:
            return total - (evaluation or 0.0)
        return None

    @property
    def peak_memory_bytes(self) -> float | None:
        accelerator = self.spent("peak_accelerator_bytes")
        return accelerator if accelerator is not None else self.spent("peak_rss_bytes")

    def _adapter_bytes(self, key: str) -> float | None:
        value = (self.doc.get("method") or {}).get("adapter_bytes")
        if isinstance(value, dict):
            value = value.get(key)
        elif key != "trainable_fp32":
            value = None
        return float(value) if is_number(value) else None

    @property
    def adapter_bytes(self) -> float | None:
        return self._adapter_bytes("trainable_fp32")

    @property
    def saved_adapter_bytes(self) -> float | None:
        return self._adapter_bytes("saved_fp32")

    def samples_file(self) -> Path | None:
        """The samples file beside the result, if one exists.

        The name recorded in the result is untrusted: only its last component is used and the file
        must sit in the same directory, so a crafted ``../../`` name cannot make the build read
        (and publish) a file from elsewhere.
        """
        names = []
        for block in _dict(self.doc.get("evaluation")).values():
            name = _dict(block).get("samples_file")
            if isinstance(name, str) and name:
                names.append(os.path.basename(name))
        names.append(f"{self.run_id}{results.SAMPLES_SUFFIX}")
        for name in names:
            candidate = self.path.parent / name
            if name.endswith(results.SAMPLES_SUFFIX) and candidate.is_file():
                return candidate
        return None


@dataclass
class Suite:
    name: str
    results_dir: Path
    runs: list[Run] = field(default_factory=list)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _display(path: Path, root: Path) -> str:
    """``leaderboards/quick/results/x.json``: short, but says where the file is."""
    path, root = Path(path).resolve(), Path(root).resolve()
    try:
        return str(Path(root.name) / path.relative_to(root))
    except ValueError:
        return str(path)


def find_suites(root: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(suite name, results dir)`` for ``<root>/<suite>/results/``; ``root`` may also be one suite."""
    root = Path(root)
    if (root / RESULTS_SUBDIR).is_dir():
        return [(root.resolve().name, root / RESULTS_SUBDIR)]
    return [(child.name, child / RESULTS_SUBDIR) for child in sorted(root.iterdir())
            if child.is_dir() and not child.name.startswith(".") and (child / RESULTS_SUBDIR).is_dir()]


def _trimmed(doc: dict) -> dict:
    """``doc`` with :data:`PAGE_ONLY_KEYS` cut to what the report layer reads (a shallow copy)."""
    out = dict(doc)
    for key in PAGE_ONLY_KEYS:
        value = out.pop(key, None)
        if isinstance(value, dict):
            out[key] = {k: value[k] for k in run_records.ENVIRONMENT_KEYS if k in value}
    return out


def stream_suite(name: str, results_dir: Path, root: str | os.PathLike,
                 problems: list[Problem]) -> Iterator[tuple[Run, dict]]:
    """Each usable run of a suite with its whole document, one file at a time; an unusable file or a
    duplicate run id is appended to ``problems`` instead."""
    root = Path(root)
    seen: dict[str, str] = {}
    for path in results.result_files(results_dir):
        try:
            doc = results.read_result(path)
        except results.ResultFileError as exc:
            problems.append(Problem(_display(path, root), exc.reason))
            continue
        rid = doc["run_id"]
        if rid in seen:
            problems.append(Problem(_display(path, root),
                                    f"duplicate of run {rid} already read from {seen[rid]}; skipped"))
            continue
        seen[rid] = path.name
        yield Run(doc=_trimmed(doc), path=path, suite=name), doc


def load_leaderboards(root: str | os.PathLike) -> tuple[list[Suite], list[Problem]]:
    """Every suite's usable runs, and a problem for each file skipped (files read one at a time)."""
    suites, problems = [], []
    for name, results_dir in find_suites(root):
        suite = Suite(name=name, results_dir=results_dir)
        suite.runs = [run for run, _ in stream_suite(name, results_dir, root, problems)]
        suites.append(suite)
    return suites, problems


def run_record(run: Run, samples: list[dict], problem: Problem | None, shared: dict) -> run_records.RunRecord:
    """The report layer's record of ``run`` (:class:`pefthub.report.records.RunRecord`) from its samples
    as :func:`read_samples` returned them, so the site reads each samples file once; ``shared``
    (one dict per suite) lets runs scored on the same items share their id tuple."""
    items = {}
    for split in run_records.SPLITS:
        found = run_records.items_of(samples, split, run_records.eval_max_new_tokens(run.doc, split), shared)
        if found is not None:
            items[split] = found
    return run_records.RunRecord(run.doc, run.path, run.samples_file(), items, problem.reason if problem else None)


def read_samples(run: Run, root: str | os.PathLike) -> tuple[list[dict], Problem | None]:
    """The run's per-sample records as stored (only JSON objects), or an empty list and the problem."""
    path = run.samples_file()
    if path is None:
        return [], None
    try:
        records = results.read_samples(path, lm_eval_ids=False)
    except results.ResultFileError as exc:
        return [], Problem(_display(path, Path(root)), exc.reason)
    kept = [r for r in records if isinstance(r, dict)]
    problem = None
    if len(kept) != len(records):
        problem = Problem(_display(path, Path(root)), f"{len(records) - len(kept)} line(s) are not JSON objects; skipped")
    return kept, problem

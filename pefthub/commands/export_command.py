"""Export a suite's results as two tables: runs (one row per run: its config, status, accuracy and
spent budget) and items (one row per run and evaluated item, with lm-eval's doc_id, doc_hash,
prompt_hash and target_hash, so they join with lm-eval's own --log_samples output). Parquet (through
pyarrow) or JSON lines; both open with pandas and `datasets.load_dataset`. Reads result files one at
a time and writes in batches, so memory does not grow with the number of runs.

SUITE is a suite name (its results under leaderboards/<suite>/results), a suite directory holding
results/, or a results directory. Writes <out>/<suite>.runs.<ext> and <out>/<suite>.items.<ext>.

  pefthub export quick                          # quick.runs.parquet, quick.items.parquet here
  pefthub export cpu-paper-shape --format jsonl --out exports
  pefthub export quick --completions            # items keep each completion's text
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

NAME = "export"
HELP = "write a suite's runs and per-item results as Parquet or JSON-lines tables (pandas, datasets)"
FORMATS = {"parquet": "parquet", "jsonl": "jsonl"}  # --format -> file extension
#: Budget figures every run records under budget.spent (docs/results-schema.md), as spent_<name> columns.
SPENT_INT = ("optimizer_steps", "examples", "prompts", "prompts_trained", "completions", "tokens_generated",
             "tokens_trained", "peak_rss_bytes", "peak_accelerator_bytes", "zero_advantage_groups")
SPENT_FLOAT = ("seconds_total", "seconds_generation", "seconds_train", "seconds_eval", "train_flops")
#: Rows buffered before a batch is written (items: about 125 runs of 400 items).
BATCH_ROWS = 50_000


def add_arguments(parser) -> None:
    parser.add_argument("suite", help="suite name (leaderboards/<suite>/results), suite directory or results directory")
    parser.add_argument("--format", default="parquet", metavar="FORMAT", help="parquet (default) or jsonl")
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="folder for the two files (default: .)")
    parser.add_argument("--completions", action="store_true", help="add each item's completion text to the items table")


def _columns(completions: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(runs columns, items columns) as (name, arrow type name), in file order."""
    runs = [("run_id", "string"), ("suite", "string"), ("label", "string"), ("model", "string"), ("task", "string"),
            ("method", "string"), ("params", "int64"), ("params_target", "int64"), ("trainer", "string"),
            ("seed", "int64"), ("learning_rate", "float64"), ("status", "string"), ("error", "string"),
            ("accuracy", "float64"), ("strict", "float64"), ("n", "int64"), ("correct", "int64"),
            ("ci_low", "float64"), ("ci_high", "float64"), ("validation_accuracy", "float64"), ("validation_n", "int64"),
            *((f"spent_{k}", "int64") for k in SPENT_INT), *((f"spent_{k}", "float64") for k in SPENT_FLOAT),
            ("started_at", "string"), ("finished_at", "string"), ("config", "string")]
    items = [("run_id", "string"), ("split", "string"), ("id", "string"), ("doc_id", "int64"), ("doc_hash", "string"),
             ("prompt_hash", "string"), ("target_hash", "string"), ("extracted", "string"), ("gold", "string"),
             ("correct", "bool_")]
    if completions:
        items.append(("completion", "string"))
    return runs, items


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return int(value) if float(value).is_integer() else None


def _float(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def run_row(doc: dict) -> dict[str, Any]:
    """The runs-table row of one result document."""
    from pefthub.evaluation import HEADLINE_METRIC
    from pefthub.results import canonical_json
    from pefthub.suites import label_of

    config = doc["config"]
    evaluation = doc.get("evaluation") or {}
    test, validation = evaluation.get("test") or {}, evaluation.get("validation") or {}
    spent = (doc.get("budget") or {}).get("spent") or {}
    metrics = test.get("metrics") or {}
    strict = next((v for k, v in metrics.items() if k != HEADLINE_METRIC and "strict" in k), None)
    task = config.get("task")
    return {
        "run_id": doc["run_id"], "suite": doc["suite"], "label": label_of(config), "model": _str(config.get("model")),
        "task": _str(task.get("name") if isinstance(task, dict) else task), "method": _str(config.get("method")),
        "params": _int((doc.get("method") or {}).get("trainable_params")), "params_target": _int(config.get("params_target")),
        "trainer": _str(config.get("trainer")), "seed": _int(config.get("seed")),
        "learning_rate": _float(config.get("learning_rate")), "status": doc["status"], "error": _str(doc.get("error")),
        "accuracy": _float(test.get("accuracy")), "strict": _float(strict), "n": _int(test.get("n")),
        "correct": _int(test.get("correct")), "ci_low": _float(test.get("ci_low")), "ci_high": _float(test.get("ci_high")),
        "validation_accuracy": _float(validation.get("accuracy")), "validation_n": _int(validation.get("n")),
        **{f"spent_{k}": _int(spent.get(k)) for k in SPENT_INT}, **{f"spent_{k}": _float(spent.get(k)) for k in SPENT_FLOAT},
        "started_at": _str(doc.get("started_at")), "finished_at": _str(doc.get("finished_at")),
        "config": canonical_json(config),
    }


def item_rows(run_id: str, records: list[dict], completions: bool) -> Iterator[dict[str, Any]]:
    """The items-table rows of one run's samples records (lm-eval's identifiers already filled)."""
    for r in records:
        row = {"run_id": run_id, "split": _str(r.get("split")), "id": _str(r.get("id")), "doc_id": _int(r.get("doc_id")),
               "doc_hash": r.get("doc_hash"), "prompt_hash": r.get("prompt_hash"), "target_hash": r.get("target_hash"),
               "extracted": _str(r.get("extracted")), "gold": _str(r.get("gold")), "correct": bool(r.get("correct"))}
        if completions:
            row["completion"] = _str(r.get("completion"))
        yield row


class _Table:
    """One output file written in batches to a temp file beside it, renamed into place on close.

    JSON lines carry no column types, and ``datasets`` infers them from the file's first block
    (10 MB): a column null throughout that block and set later fails to load. So for each column
    the first line that sets it is kept aside (a few lines at most) and written first on close,
    followed by every other line in order, copied from the temp file.
    """

    def __init__(self, path: Path, columns: list[tuple[str, str]], fmt: str):
        import pyarrow as pa

        self.path, self.fmt, self.rows = path, fmt, []
        self.names = [name for name, _ in columns]
        self.schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns])
        self.tmp = self._temp()
        self.written = 0
        self.witnesses: dict[int, str] = {}  # line number -> line: the first line setting some column
        self.unset = set(self.names)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        else:
            self.writer = open(self.tmp, "w", encoding="utf-8")

    def _temp(self) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        return Path(tmp)

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        if self.fmt == "parquet":
            import pyarrow as pa

            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
        else:
            lines = []
            for row in self.rows:
                line = json.dumps({k: row[k] for k in self.names}, ensure_ascii=False, allow_nan=False) + "\n"
                setting = {k for k in self.unset if row[k] is not None}
                if setting:
                    self.unset -= setting
                    self.witnesses[self.written + len(lines)] = line
                lines.append(line)
            self.writer.write("".join(lines))
            self.written += len(lines)
        self.rows = []

    def close(self, keep: bool) -> None:
        try:
            if keep:
                self.flush()
        finally:
            self.writer.close()
        if keep and self.fmt == "jsonl" and self.witnesses:
            ordered = self._temp()
            try:
                with open(self.tmp, encoding="utf-8") as src, open(ordered, "w", encoding="utf-8") as dst:
                    dst.write("".join(self.witnesses[i] for i in sorted(self.witnesses)))
                    for i, line in enumerate(src):
                        if i not in self.witnesses:
                            dst.write(line)
            except BaseException:
                ordered.unlink(missing_ok=True)
                raise
            finally:
                self.tmp.unlink(missing_ok=True)
            self.tmp = ordered
        if keep:
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def export(results_dir: Path, out: Path, name: str, fmt: str, completions: bool = False,
           warn=lambda line: None) -> tuple[Path, Path, int, int]:
    """Write ``<out>/<name>.runs.<ext>`` and ``<out>/<name>.items.<ext>`` from the result files under
    ``results_dir`` (corrupt ones and second copies of a run reported through ``warn`` and skipped);
    (runs path, items path, runs written, items written)."""
    from pefthub import results
    from pefthub.report.records import samples_file_of  # the report layer's rule for where samples live

    out.mkdir(parents=True, exist_ok=True)
    ext = FORMATS[fmt]
    runs_columns, items_columns = _columns(completions)
    paths = out / f"{name}.runs.{ext}", out / f"{name}.items.{ext}"
    runs, items = _Table(paths[0], runs_columns, fmt), _Table(paths[1], items_columns, fmt)
    n_runs = n_items = 0
    seen: dict[str, Path] = {}
    ok = False
    try:
        for path in results.result_files(results_dir):
            try:
                doc = results.read_result(path)
            except results.ResultFileError as exc:
                warn(f"skipped {path}: {exc.reason}")
                continue
            if doc["run_id"] in seen:
                warn(f"skipped {path}: duplicate of run {doc['run_id']} already read from {seen[doc['run_id']]}")
                continue
            seen[doc["run_id"]] = path
            runs.add(run_row(doc))
            n_runs += 1
            samples = samples_file_of(path, doc)
            if samples is None:
                continue
            try:
                records = results.read_samples(samples, result=doc)
            except results.ResultFileError as exc:
                warn(f"skipped the items of {path.name}: {exc.reason}")
                continue
            for row in item_rows(doc["run_id"], [r for r in records if isinstance(r, dict)], completions):
                items.add(row)
                n_items += 1
        ok = True
    finally:
        runs.close(ok)
        items.close(ok)
    return paths[0], paths[1], n_runs, n_items


def run(args) -> int:
    from pefthub.commands.health_command import results_dir_of
    from pefthub.errors import ConfigError

    if args.format not in FORMATS:
        raise ConfigError(f"unknown export format '{args.format}' (known: {', '.join(FORMATS)})")
    results_dir = results_dir_of(args.suite)
    name = results_dir.parent.name if results_dir.name == "results" else results_dir.name
    runs_path, items_path, n_runs, n_items = export(results_dir, args.out, name, args.format, args.completions,
                                                    warn=lambda line: print(line, file=sys.stderr))
    print(f"{runs_path}: {n_runs} runs")
    print(f"{items_path}: {n_items} items")
    return 0

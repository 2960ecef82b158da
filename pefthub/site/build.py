"""``build_site(root, out)``: the leaderboard as a pure function of the result files.

The site is written to a temporary sibling directory and swapped in at the end, so a failed
build leaves the previous site intact. An existing output directory is replaced only if an
earlier build marked it as a pefthub site; the build refuses to touch anything else (and never a
directory holding results).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pefthub import __version__
from pefthub.report import findings
from pefthub.report import health as run_health
from pefthub.errors import ConfigError
from pefthub.site import items, pages, plots
from pefthub.site.aggregate import SuiteView, view_suite
from pefthub.site.load import RESULTS_SUBDIR, Problem, Suite, find_suites, read_samples, run_record, stream_suite

ASSETS = Path(__file__).with_name("assets")
MARKER = ".pefthub-site"
DEFAULT_MAX_SAMPLES = 200
CSV_FIELDS = ["suite", "name", "method", "trainer", "trainable_params", "adapter_bytes", "saved_adapter_bytes", "accuracy",
              "ci_low", "ci_high", "ci_method", "delta_vs_base", "train_seconds", "peak_memory_bytes", "learning_rate",
              "lr_selection", "lr_at_edge", "lr_one_answer", "validation_accuracy", "seeds", "run_ids", "reference", "method_config", "delta_low",
              "delta_high", "delta_p", "delta_test", "delta_interval", "delta_p_holm", "verdict", "paired_items", "vs_base_note", "flags",
              "delta_vs_floor", "delta_vs_floor_low", "delta_vs_floor_high"]


@dataclass
class BuildResult:
    index: Path
    problems: list[Problem] = field(default_factory=list)
    suites: dict[str, int] = field(default_factory=dict)        # suite -> runs read
    plot_points: dict[str, int] = field(default_factory=dict)   # suite -> points in the headline plot
    pages: int = 0


def slugify(name: str, taken: set[str]) -> str:
    """A file-name- and anchor-safe name, unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "suite"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _spreadsheet_safe(value):
    """Text starting with = + - @ is a formula to spreadsheet programs; quote it (numbers stay numbers)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def table_csv(view: SuiteView) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in view.rows:
        record = row.as_record()
        record.update(suite=view.suite.name, run_ids=" ".join(record["run_ids"]),
                      method_config=json.dumps(record["method_config"], sort_keys=True))
        record["flags"] = " ".join(record["flags"])
        writer.writerow({k: _spreadsheet_safe(record.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def table_json(view: SuiteView) -> str:
    failed = [{"run_id": r.run_id, "name": r.name, "method": r.method, "trainer": r.trainer, "status": r.status,
               "error": r.doc.get("error"), "learning_rate": r.learning_rate, "seed": r.seed}
              for r in view.failures]
    pairs = [dict(p.as_dict(items=False)) if not isinstance(p, tuple) else {"a": p[0], "b": p[1], "error": p[2]}
             for p in view.trainer_pairs]
    doc = {"suite": view.suite.name, "generated_by": f"pefthub {__version__}", "models": view.models,
           "rows": [dict(r.as_record(), suite=view.suite.name) for r in view.rows], "failed": failed,
           "trainer_pairs": pairs}
    doc["health"] = {"thresholds": {name: value for name, value, _ in run_health.THRESHOLDS.rationale()},
                     "runs": {rid: h.as_record() for rid, h in sorted(view.health.items())}}
    return json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


def _check_output(root: Path, out: Path, suites: list[tuple[str, Path]]) -> None:
    root_r, out_r = root.resolve(), out.resolve()
    if out_r == root_r or out_r in root_r.parents:
        raise ConfigError(f"output directory {out} would contain the results directory {root}; choose e.g. {root / 'site'}")
    for _, results_dir in suites:
        rd = results_dir.resolve()
        if out_r == rd or rd in out_r.parents:
            raise ConfigError(f"output directory {out} is inside the results directory {results_dir}")
        if out_r in rd.parents:
            raise ConfigError(f"output directory {out} contains the results directory {results_dir}; "
                              f"choose e.g. {root / 'site'}")
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"output path {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ConfigError(f"refusing to replace {out}: it is not empty and was not built by pefthub "
                              f"(no {MARKER} file); choose another output directory")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@dataclass
class _SuiteRead:
    """One suite as the first pass left it: its runs, its view, and per run what its page needs."""

    suite: Suite
    slug: str
    view: SuiteView | None = None
    pages: dict[str, tuple[items.Where, dict, Problem | None]] = field(default_factory=dict)


def _read_suite(staging: Path, name: str, results_dir: Path, slug: str, root: Path,
                problems: list[Problem]) -> _SuiteRead:
    """Read a suite's result files one at a time, each samples file once: its items file is written
    and the report layer's record of every run kept, from which the suite's rows are built."""
    read = _SuiteRead(Suite(name=name, results_dir=results_dir), slug)
    records, shared = [], {}
    with items.ItemsWriter(staging / pages.Links(slug).items()) as writer:
        for run, doc in stream_suite(name, results_dir, root, problems):
            samples, problem = read_samples(run, root)
            if problem:
                problems.append(problem)
            read.pages[run.run_id] = (writer.add(doc, samples), pages.samples_summary(samples), problem)
            records.append(run_record(run, samples, problem, shared))
            read.suite.runs.append(run)
    read.view = view_suite(read.suite, records)
    return read


def _write_suite(staging: Path, env, read: _SuiteRead, root: Path, max_samples: int, n_files: int) -> int:
    """Each run's page (its whole document read again, one at a time) and the suite's downloads."""
    suite, view, links = read.suite, read.view, pages.Links(read.slug)
    for run in suite.runs:
        where, summary, problem = read.pages[run.run_id]
        _write(staging / links.run(run.run_id),
               pages.render_run(env, run, links, doc=run.full_doc(), samples=summary, samples_problem=problem,
                                 where=where, health=view.health.get(run.run_id), max_samples=max_samples,
                                 n_result_files=n_files))
    _write(staging / "downloads" / f"{read.slug}.csv", table_csv(view))
    _write(staging / "downloads" / f"{read.slug}.json", table_json(view))
    _write(staging / "downloads" / f"{read.slug}-findings.md",
           findings.render_markdown(suite.name, pages.view_stat_rows(view),
                                    source=f"{Path(root).resolve().name}/{suite.name}/{RESULTS_SUBDIR}",
                                    primary=findings.declared_primary(suite.name),
                                    control=findings.declared_control(suite.name)))
    return len(suite.runs)


def build_site(root: str | os.PathLike, out: str | os.PathLike, *, max_samples: int = DEFAULT_MAX_SAMPLES) -> BuildResult:
    """Read every suite under ``root`` and write the static site to ``out``; return what was built.

    Corrupt or foreign result files become :attr:`BuildResult.problems` (also shown on the
    index page); they never stop the build. Result files are read one at a time and each samples
    file once (:func:`_read_suite`), so memory stays bounded as a results directory grows.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise ConfigError(f"results directory {root} does not exist (run a suite first, e.g. `pefthub bench quick`)")
    found = find_suites(root)
    _check_output(root, out, found)
    env = pages.environment()
    result = BuildResult(index=out / "index.html")
    problems: list[Problem] = []

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        shutil.copytree(ASSETS, staging / "assets")
        taken: set[str] = set()
        suites = [_read_suite(staging, name, results_dir, slugify(name, taken), root, problems)
                  for name, results_dir in found]
        n_files = sum(len(r.suite.runs) for r in suites) + len(problems)
        runs = [run for r in suites for run in r.suite.runs if not run.is_base]
        styles = plots.Styles.for_names(sorted({r.name for r in runs}), sorted({r.trainer for r in runs}))
        contexts = []
        for read in suites:
            result.pages += _write_suite(staging, env, read, root, max_samples, n_files)
            context = pages.suite_context(read.view, read.slug, styles)
            contexts.append(context)
            result.suites[read.suite.name] = len(read.suite.runs)
            result.plot_points[read.suite.name] = context["n_points"]
        _write(staging / "index.html", pages.render_index(env, contexts, problems, n_files))
        _write(staging / MARKER, f"Built by pefthub {__version__}; `pefthub site build` replaces this directory.\n")
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.problems = problems
    return result


def _swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` with ``staging`` (two renames; the old site is deleted afterwards)."""
    staging.chmod(0o755)  # mkdtemp makes it 0700; a served site must be readable
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

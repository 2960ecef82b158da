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
from pefthub.site import plots, render
from pefthub.site.aggregate import SuiteView, view_suite
from pefthub.site.load import RESULTS_SUBDIR, Problem, Suite, find_suites, load_leaderboards, read_samples

ASSETS = Path(__file__).with_name("assets")
MARKER = ".pefthub-site"
DEFAULT_MAX_SAMPLES = 200
CSV_FIELDS = ["suite", "name", "method", "trainer", "trainable_params", "adapter_bytes", "saved_adapter_bytes", "accuracy",
              "ci_low", "ci_high", "ci_method", "delta_vs_base", "train_seconds", "peak_memory_bytes", "learning_rate",
              "lr_selection", "lr_at_edge", "validation_accuracy", "seeds", "run_ids", "reference", "method_config", "delta_low",
              "delta_high", "delta_p", "delta_test", "delta_interval", "delta_p_holm", "verdict", "paired_items", "vs_base_note", "flags"]


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


def _write_suite(staging: Path, env, suite: Suite, view: SuiteView, slug: str, root: Path,
                 problems: list[Problem], max_samples: int, n_files: int) -> int:
    links = render.Links(slug)
    pages = 0
    for run in suite.runs:
        samples, problem = read_samples(run, root)
        if problem:
            problems.append(problem)
        samples_copied = False
        source = run.samples_file()
        if source is not None and problem is None:
            target = staging / links.samples(run.run_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            samples_copied = True
        _write(staging / links.raw(run.run_id),
               json.dumps(run.doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
        _write(staging / links.run(run.run_id),
               render.render_run(env, run, links, samples=samples, samples_problem=problem,
                                 health=view.health.get(run.run_id),
                                 samples_copied=samples_copied, max_samples=max_samples, n_result_files=n_files))
        pages += 1
    _write(staging / "downloads" / f"{slug}.csv", table_csv(view))
    _write(staging / "downloads" / f"{slug}.json", table_json(view))
    _write(staging / "downloads" / f"{slug}-findings.md",
           findings.render_markdown(suite.name, render.view_stat_rows(view),
                                    source=f"{Path(root).resolve().name}/{suite.name}/{RESULTS_SUBDIR}",
                                    primary=findings.declared_primary(suite.name)))
    return pages


def build_site(root: str | os.PathLike, out: str | os.PathLike, *, max_samples: int = DEFAULT_MAX_SAMPLES) -> BuildResult:
    """Read every suite under ``root`` and write the static site to ``out``; return what was built.

    Corrupt or foreign result files become :attr:`BuildResult.problems` (also shown on the
    index page); they never stop the build.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise ConfigError(f"results directory {root} does not exist (run a suite first, e.g. `pefthub bench quick`)")
    _check_output(root, out, find_suites(root))
    suites, problems = load_leaderboards(root)
    n_files = sum(len(s.runs) for s in suites) + sum(1 for p in problems)
    views = [view_suite(s) for s in suites]
    styles = plots.Styles.for_names(sorted({r.name for s in suites for r in s.runs if not r.is_base}),
                                    sorted({r.trainer for s in suites for r in s.runs if not r.is_base}))
    env = render.environment()
    result = BuildResult(index=out / "index.html")

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        shutil.copytree(ASSETS, staging / "assets")
        taken: set[str] = set()
        contexts = []
        for suite, view in zip(suites, views):
            slug = slugify(suite.name, taken)
            result.pages += _write_suite(staging, env, suite, view, slug, root, problems, max_samples, n_files)
            context = render.suite_context(view, slug, styles)
            contexts.append(context)
            result.suites[suite.name] = len(suite.runs)
            result.plot_points[suite.name] = context["n_points"]
        _write(staging / "index.html", render.render_index(env, contexts, problems, n_files))
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

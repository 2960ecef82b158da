"""Render docs/performance.md from pytest-benchmark JSON output.

Every benchmark's figures live in its ``extra_info`` (computed by the benchmark, never typed in);
this module only lays them out: one section per benchmark group, one row per benchmark, one column
per ``extra_info`` key (plus the measured median time and rounds), and the machine and commit the
run came from. Benchmarks of several JSON files (e.g. separate runs of separate benchmark files)
are merged; a benchmark present in more than one file is taken from the last.

One command regenerates the page after a benchmark run::

    pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/latest.json --performance-doc=docs/performance.md

The ``--performance-doc`` option (benchmarks/conftest.py) merges the run into the data file beside
the page (``docs/performance.json``) and re-renders the page from it, so running one benchmark file
updates its rows and keeps the others'. From saved JSON files instead (a fresh page)::

    python benchmarks/perfdoc.py .benchmarks/latest.json [more.json ...] -o docs/performance.md

Conventions the benchmarks follow so the page reads well: ``extra_info`` values are flat (numbers,
strings, booleans); a key ``note`` is shown under the table rather than as a column.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

from pefthub.errors import ConfigError

TITLE = "Performance"
COMMAND = ("pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/latest.json "
           "--performance-doc=docs/performance.md")


def load(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Merge pytest-benchmark JSON files: benchmarks by ``fullname`` (later files win), with the
    machine and commit info of the last file."""
    merged: dict[str, Any] = {"benchmarks": {}, "machine_info": {}, "commit_info": {}, "datetime": None}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a readable pytest-benchmark JSON file ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise ConfigError(f"{path}: not pytest-benchmark JSON output (no 'benchmarks' list)")
        merge(merged, data)
    return merged


def merge(merged: dict[str, Any], data: dict[str, Any]) -> None:
    """Add ``data``'s benchmarks to ``merged``; each keeps the time and commit of the run that
    measured it (``measured_in``), since a page can hold sections from different runs."""
    measured_in = {"datetime": data.get("datetime"), "commit": _commit(data.get("commit_info") or {})}
    for bench in data["benchmarks"]:
        merged["benchmarks"][bench.get("fullname") or bench["name"]] = {"measured_in": measured_in, **bench}
    merged["machine_info"] = data.get("machine_info") or merged["machine_info"]
    merged["commit_info"] = data.get("commit_info") or merged["commit_info"]
    merged["datetime"] = data.get("datetime") or merged["datetime"]


def fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 0.01:
            return f"{value:.3g}" if magnitude < 100 else f"{value:.1f}"
        return f"{value:.2e}"
    if value is None:
        return "–"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _seconds(bench: dict[str, Any]) -> str:
    stats = bench.get("stats") or {}
    median = stats.get("median")
    return "–" if median is None else f"{median:.3g}"


def render(data: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in data["benchmarks"].values():
        groups.setdefault(bench.get("group") or Path(bench.get("fullname", "")).stem.split("::")[0] or "other",
                          []).append(bench)
    lines = [f"# {TITLE}", "",
             "Generated from pytest-benchmark output by `benchmarks/perfdoc.py`; do not edit by hand. Every figure "
             "is measured by the benchmark that reports it (benchmarks/); ratios compare peers measured in the "
             "same run. Regenerate with:", "", "```", COMMAND, "```", ""]
    lines += _provenance(data)
    for group in sorted(groups):
        benches = sorted(groups[group], key=lambda b: b.get("fullname") or b["name"])
        keys: list[str] = []
        for bench in benches:
            for key in (bench.get("extra_info") or {}):
                if key != "note" and key not in keys:
                    keys.append(key)
        lines += [f"## {group}", "", "| benchmark | median s | rounds | " + " | ".join(keys) + " |",
                  "|---|---:|---:|" + "---:|" * len(keys)]
        notes = []
        runs = sorted({(b["measured_in"].get("datetime") or "?", b["measured_in"].get("commit") or "?")
                       for b in benches if b.get("measured_in")})
        for when, commit in runs:
            notes.append(f"- measured in the run of {when} (commit {commit})")
        for bench in benches:
            info = bench.get("extra_info") or {}
            rounds = (bench.get("stats") or {}).get("rounds", "–")
            cells = [fmt(bench["name"]), _seconds(bench), fmt(rounds)] + [fmt(info.get(k)) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
            if info.get("note"):
                notes.append(f"- `{bench['name']}`: {info['note']}")
        lines += [""] + (notes + [""] if notes else [])
    return "\n".join(lines).rstrip() + "\n"


def _provenance(data: dict[str, Any]) -> list[str]:
    machine, commit = data.get("machine_info") or {}, data.get("commit_info") or {}
    cpu = machine.get("cpu") or {}
    facts = [("latest run", data.get("datetime")), ("its commit", _commit(commit)),
             ("cpu", cpu.get("brand_raw")), ("logical cores", cpu.get("count")),
             ("python", machine.get("python_version")), ("machine", machine.get("node"))]
    out = [f"- {name}: {fmt(value)}" for name, value in facts if value not in (None, "")]
    return out + [""] if out else []


def _commit(commit: dict[str, Any]) -> str | None:
    return ((commit.get("id") or "")[:12] + (" (dirty)" if commit.get("dirty") else "")) or None


def data_file(page: str | Path) -> Path:
    return Path(page).with_suffix(".json")


def update(page: str | Path, run: dict[str, Any]) -> Path:
    """Merge one run's pytest-benchmark output into the page's data file, then re-render the page."""
    store = data_file(page)
    merged = load([store]) if store.exists() else {"benchmarks": {}, "machine_info": {}, "commit_info": {},
                                                   "datetime": None}
    merge(merged, run)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps({**merged, "benchmarks": list(merged["benchmarks"].values())}, indent=1,
                                sort_keys=True) + "\n", encoding="utf-8")
    return write(merged, page)


def write(data: dict[str, Any], output: str | Path) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(data), encoding="utf-8")
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/perfdoc.py", description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s) (--benchmark-json output)")
    parser.add_argument("-o", "--output", default="docs/performance.md", help="page to write")
    args = parser.parse_args(argv)
    try:
        path = write(load(args.json), args.output)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

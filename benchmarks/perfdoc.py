"""Render docs/performance.md from pytest-benchmark JSON output.

Every benchmark's figures live in its ``extra_info`` (computed by the benchmark, never typed in);
this module only lays them out. Each section (a benchmark group) opens with where and when it was
measured (machine, commit, idle state), then one table of the benchmarks' headline figures
(``HEADLINES``: pefthub's figure, its peer's, the ratio, the goal and whether it is met) and the
benchmarks' notes; every figure is one link away, in the data file beside the page
(``docs/performance.json``).
Benchmarks of several JSON files are merged; a benchmark present in more than one file is taken
from the last.

One command regenerates the page after a benchmark run::

    pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/latest.json --performance-doc=docs/performance.md

The ``--performance-doc`` option (benchmarks/conftest.py) merges the run into the data file beside
the page (``docs/performance.json``) and re-renders the page from it, so running one benchmark file
updates its rows and keeps the others'. Re-render the page from the data file without measuring
anything (after a change to this module)::

    python benchmarks/perfdoc.py docs/performance.json -o docs/performance.md

Conventions the benchmarks follow so the page reads well: ``extra_info`` values are flat (numbers,
strings, booleans); a key ``note`` is shown as text; ``IDLE_KEY`` (set for every benchmark by
benchmarks/conftest.py) is how many cores other processes kept busy while it ran.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from pefthub.errors import ConfigError

TITLE = "Performance"
COMMAND = ("pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/latest.json "
           "--performance-doc=docs/performance.md")
RERENDER = "python benchmarks/perfdoc.py docs/performance.json -o docs/performance.md"
#: ``extra_info`` key benchmarks/conftest.py sets: CPU cores other processes kept busy during the benchmark.
IDLE_KEY = "other_processes_cpu_cores"
#: Where the page links for every figure: the data file beside it (see :func:`data_file`).
DATA_LINK = "performance.json"
#: Below this many cores kept busy by other processes, a benchmark ran on an idle machine.
IDLE_BELOW = 0.1
#: Column headers of a section's headline table (at most 10, so a section reads in one screen).
COLUMNS = ("benchmark", "figure", "pefthub", "peer", "ratio", "goal", "met")


@dataclass(frozen=True)
class Headline:
    """One headline figure of a benchmark, as ``extra_info`` keys: pefthub's figure ``ours`` in
    ``unit``, the peer's (``peer`` named ``peer_name``), the ratio (``ratio``: a key, shown with
    ``ratio_means``, or a template of ``{key}`` fields), the goal (a template, e.g. ``"≤ {step_target}×"``)
    and the benchmark's own verdict on it (``met``: a boolean key). Keys a run lacks show as "–"."""

    figure: str
    ours: str
    unit: str = ""
    peer_name: str = ""
    peer: str | None = None
    ratio: str | None = None
    ratio_means: str = ""
    goal: str | None = None
    met: str | None = None


#: The headline figures of each benchmark (by test function), the one place they are chosen.
HEADLINES: dict[str, tuple[Headline, ...]] = {
    "test_decode_throughput": (
        Headline("decode speed", "fused_tok_s", " tok/s", "HF generate", "hf_tok_s", "fused_over_hf", "× HF"),
        Headline("share of the fp32 FLOP bound", "fused_pct_of_bound", "%", "HF generate", "hf_pct_of_bound",
                 goal="≥ 50%", met="meets_50pct_target"),
    ),
    "test_linear_kernels": (
        Headline("decode projections", "onednn_gflops", " GFLOP/s", "F.linear (MKL)", "mkl_gflops",
                 "onednn_over_mkl", "× MKL"),
    ),
    "test_sampler_step": (
        Headline("one sampling step", "pick_tokens_ms", " ms", "whole vocabulary", "full_vocabulary_ms",
                 "full_vocabulary_over_pick_tokens", "× faster"),
    ),
    "test_vera_merge": (
        Headline("merge every projection", "merge_weight_s", " s", "peft delta + add", "peft_delta_plus_add_s",
                 "peft_over_merge_weight", "× faster"),
    ),
    "test_allocator_page_faults": (
        Headline("minor page faults, freed memory kept", "minor_faults_kept", "", "memory returned",
                 "minor_faults_returned"),
    ),
    "test_method_rollout_speed": (
        Headline("rollout speed", "method_tok_s", " tok/s", "base model", "base_tok_s",
                 "slowdown_pct", "% slowdown", goal="≤ 5% slowdown", met="within_5pct"),
    ),
    "test_vllm_throughput": (
        Headline("decode speed beside vLLM", "fused_tok_s_beside_vllm", " tok/s", "vLLM", "vllm_tok_s",
                 "fused_over_vllm", "× vLLM"),
    ),
    "test_step_against_trl": (
        Headline("time per 1k tokens", "pefthub_s_per_1k_tokens", " s", "TRL set like pefthub",
                 "trl_like_pefthub_s_per_1k_tokens", "per_token_ratio_vs_trl_like_pefthub", "× TRL",
                 goal="≤ {step_target}×", met="step_met"),
        Headline("peak RSS", "pefthub_peak_rss_gb", " GB", "TRL set like pefthub", "trl_like_pefthub_peak_rss_gb",
                 "rss_ratio_vs_trl_like_pefthub", "× TRL", goal="≤ {rss_target}×", met="rss_met"),
        Headline("time per 1k tokens", "pefthub_s_per_1k_tokens", " s", "TRL defaults", "trl_s_per_1k_tokens",
                 "per_token_ratio_vs_trl", "× TRL"),
    ),
    "test_eval_speed": (
        Headline("scoring speed", "fused_items_s", " items/s", "lm-eval HF", "hf_items_s",
                 "fused_over_hf", "× HF", goal="≥ 3×", met="meets_3x_target"),
        Headline("test accuracy", "fused_accuracy", "", "lm-eval HF", "hf_accuracy",
                 "{answers_differing} answers differ"),
    ),
    "test_eval_speed_degenerate": (
        Headline("scoring a model that never stops", "degenerate_fused_s", " s", "lm-eval HF", "degenerate_hf_s",
                 "degenerate_hf_over_fused", "× faster"),
        Headline("scoring a model that never stops", "degenerate_fused_s", " s", "healthy model", "healthy_fused_s",
                 "degenerate_over_healthy", "× as long"),
    ),
    "test_dynamic_sampling_at_equal_wall_time": (
        Headline("informative groups per s", "dynamic_informative_groups_per_s", "", "plain GRPO",
                 "plain_informative_groups_per_s", "informative_per_s_dynamic_over_plain", "× plain"),
        Headline("test accuracy", "dynamic_accuracy", "", "plain GRPO", "plain_accuracy",
                 "Δ {accuracy_dynamic_minus_plain} [{accuracy_delta_ci_low}, {accuracy_delta_ci_high}], "
                 "p {accuracy_delta_mcnemar_p}"),
    ),
    "test_grpo_step_memory_parts": (
        Headline("step peak, prompts shared", "step_peak_shared_prompts_gb", " GB", "rows whole",
                 "step_peak_whole_rows_gb", "step_peak_shared_over_whole", "× whole"),
    ),
    "test_site_build_scale": (
        Headline("`site build` wall time, {runs} runs", "wall_s", " s", goal="≤ {goal_wall_s} s", met="wall_met"),
        Headline("`site build` peak RSS, {runs} runs", "peak_rss_gb", " GB", goal="≤ {goal_rss_gb} GB",
                 met="rss_met"),
        Headline("site on disk, {runs} runs", "site_mb", " MB", goal="≤ {goal_site_mb} MB", met="size_met"),
    ),
    "test_run_end_to_end": (
        Headline("one run, total", "after_total_s", " s", "before the cost work", "before_total_s",
                 "total_after_over_before", "× before"),
        Headline("test accuracy", "after_test_accuracy", "", "before the cost work", "before_test_accuracy",
                 "Δ [{accuracy_delta_ci_low}, {accuracy_delta_ci_high}], p {accuracy_delta_mcnemar_p}"),
    ),
}


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
    machine = data.get("machine_info") or {}
    if machine:
        measured_in["machine"] = _machine_summary(machine)
    previous = merged.get("machine_info") or {}
    if previous:  # benchmarks merged before runs recorded their machine keep the one they ran on
        for bench in merged["benchmarks"].values():
            if not (bench.get("measured_in") or {}).get("machine"):
                bench["measured_in"] = {**(bench.get("measured_in") or {}), "machine": _machine_summary(previous)}
    for bench in data["benchmarks"]:
        merged["benchmarks"][bench.get("fullname") or bench["name"]] = {"measured_in": measured_in, **bench}
    merged["machine_info"] = data.get("machine_info") or merged["machine_info"]
    merged["commit_info"] = data.get("commit_info") or merged["commit_info"]
    merged["datetime"] = data.get("datetime") or merged["datetime"]


def _machine_summary(machine: dict[str, Any]) -> dict[str, Any]:
    return {k: machine.get(k) for k in ("node", "python_version")} | {
        "cpu": {k: (machine.get("cpu") or {}).get(k) for k in ("brand_raw", "count")}}


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


def function_name(bench: dict[str, Any]) -> str:
    """The test function of a benchmark (its name without parameters)."""
    return bench["name"].split("[")[0]


def _fill(template: str, info: dict[str, Any]) -> str:
    """``template`` with each ``{key}`` replaced by the formatted ``info[key]``; "–" if one is absent."""
    if any(info.get(key) is None for key in re.findall(r"\{(\w+)\}", template)):
        return "–"
    return re.sub(r"\{(\w+)\}", lambda m: fmt(info.get(m.group(1))), template)


def _figure(info: dict[str, Any], key: str | None, unit: str) -> str:
    return "–" if key is None or info.get(key) is None else fmt(info[key]) + unit


def headline_rows(bench: dict[str, Any]) -> list[list[str]]:
    """The headline table's rows of one benchmark (``COLUMNS``), one per ``Headline``; a benchmark
    without headlines gets one row that says so."""
    info = bench.get("extra_info") or {}
    label = fmt(bench["name"])
    headlines = HEADLINES.get(function_name(bench))
    if not headlines:
        return [[label, "no headline chosen (benchmarks/perfdoc.py HEADLINES)", "–", "–", "–", "–", "–"]]
    rows = []
    for h in headlines:
        peer = _figure(info, h.peer, h.unit)
        if h.ratio is None:
            ratio = "–"
        elif "{" in h.ratio:
            ratio = _fill(h.ratio, info)
        else:
            ratio = _figure(info, h.ratio, h.ratio_means)
        met = info.get(h.met) if h.met else None
        rows.append([label, _fill(h.figure, info), _figure(info, h.ours, h.unit),
                     f"{h.peer_name} {peer}".strip() if peer != "–" else "–", ratio,
                     _fill(h.goal, info) if h.goal and (h.met is None or met is not None) else "–",
                     "–" if met is None else ("**met**" if met else "**not met**")])
    return rows


def idle_state(benches: list[dict[str, Any]]) -> str:
    """Whether the machine was idle while these benchmarks ran, from ``IDLE_KEY``."""
    busy = [b["extra_info"][IDLE_KEY] for b in benches if (b.get("extra_info") or {}).get(IDLE_KEY) is not None]
    if not busy:
        return "idle state not recorded"
    worst = max(busy)
    if worst < IDLE_BELOW:
        return f"idle (other processes: at most {fmt(float(worst))} cores)"
    return f"**not idle**: other processes kept up to {fmt(float(worst))} cores busy"


def _machine(machine: dict[str, Any]) -> str:
    cpu = machine.get("cpu") or {}
    parts = [cpu.get("brand_raw"), f"{cpu['count']} logical cores" if cpu.get("count") else None,
             f"python {machine['python_version']}" if machine.get("python_version") else None]
    inner = ", ".join(p for p in parts if p)
    return f"{machine.get('node') or 'machine'}" + (f" ({inner})" if inner else "")


def provenance(benches: list[dict[str, Any]], machine_info: dict[str, Any]) -> list[str]:
    """One line per run the benchmarks of a section came from: when, commit, machine, idle state."""
    runs: dict[tuple, list[dict[str, Any]]] = {}
    for bench in benches:
        measured = bench.get("measured_in") or {}
        key = (measured.get("datetime") or "?", measured.get("commit") or "?",
               _machine(measured.get("machine") or machine_info))
        runs.setdefault(key, []).append(bench)
    lines = []
    for (when, commit, machine), members in sorted(runs.items()):
        which = "" if len(runs) == 1 else ", ".join(f"`{b['name']}`" for b in members) + ": "
        lines.append(f"- {which}measured {when} at commit {commit} on {machine}; {idle_state(members)}")
    return lines


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    return (["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
            + ["| " + " | ".join(row) + " |" for row in rows])


def render(data: dict[str, Any]) -> str:
    groups: dict[str, list[dict[str, Any]]] = {}
    for bench in data["benchmarks"].values():
        groups.setdefault(bench.get("group") or Path(bench.get("fullname", "")).stem.split("::")[0] or "other",
                          []).append(bench)
    lines = [f"# {TITLE}", "",
             "Generated from pytest-benchmark output by `benchmarks/perfdoc.py`; do not edit by hand. Every figure "
             "is measured by the benchmark that reports it (benchmarks/); ratios compare peers measured in the "
             "same run. Each section shows its benchmarks' headline figures (pefthub's, the peer's, the ratio, "
             "the goal where one is set and whether it is met); every figure is in "
             f"[{DATA_LINK}]({DATA_LINK}). Regenerate with:", "", "```", COMMAND, "```", "",
             "or re-render this page from the recorded figures, measuring nothing:", "", "```", RERENDER, "```", ""]
    lines += _provenance(data)
    for group in sorted(groups):
        benches = sorted(groups[group], key=lambda b: b.get("fullname") or b["name"])
        rows = [row for bench in benches for row in headline_rows(bench)]
        lines += [f"## {group}", ""] + provenance(benches, data.get("machine_info") or {}) + [""]
        lines += _table(list(COLUMNS), rows, {2}) + [""]
        notes: dict[str, list[str]] = {}
        for bench in benches:
            if (bench.get("extra_info") or {}).get("note"):
                notes.setdefault(fmt(bench["extra_info"]["note"]), []).append(f"`{bench['name']}`")
        lines += [f"- {', '.join(names)}: {note}" for note, names in notes.items()]
        figures = sum(len(b.get("extra_info") or {}) for b in benches)
        lines += [f"- all {figures} figures of these benchmarks, with pytest-benchmark's timings: "
                  f"[{DATA_LINK}]({DATA_LINK})", ""]
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

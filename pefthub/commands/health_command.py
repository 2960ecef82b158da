"""Run-health flags of a suite's results: which runs did not change the model (no-op), broke it
(collapsed), ran to the token cap (runaway) or trained without signal (no-signal), with the
measures behind each flag. Reads result files only; loads no model.

SUITE is a suite name (its results under leaderboards/<suite>/results), a suite directory holding
results/, or a results directory.

  pefthub health quick
  pefthub health quick --json
  pefthub health quick --markdown > docs/run-health.md
"""

from __future__ import annotations

import json
from pathlib import Path

NAME = "health"
HELP = "run-health flags (no-op, collapsed, runaway, no-signal) of a suite's results"
DOC_COMMAND = "pefthub health quick --markdown > docs/run-health.md"


def add_arguments(parser) -> None:
    parser.add_argument("suite", help="suite name (leaderboards/<suite>/results), suite directory or results directory")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print every run's flags and measures as JSON")
    out.add_argument("--markdown", action="store_true",
                     help=f"print the generated health page (`{DOC_COMMAND}`)")


def results_dir_of(ref: str) -> Path:
    from pefthub.grid import results_dir_for
    from pefthub.errors import ConfigError

    path = Path(ref)
    for candidate in (path / "results", path, results_dir_for(ref)):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise ConfigError(f"no results for '{ref}': not a results directory and leaderboards/{ref}/results has no "
                      f"result files (run `pefthub bench {ref}` first)")


def load(ref: str):
    """(results dir, successful documents in label order, health by run id, skipped files), from one
    read of the directory (:func:`pefthub.report.table.read_table`)."""
    from pefthub.report.table import read_table
    from pefthub.suites import label_of

    results_dir = results_dir_of(ref)
    skipped: list = []
    table = read_table(results_dir, skipped)
    docs = sorted((r.doc for r in table.successes), key=lambda d: label_of(d["config"]))
    return results_dir, docs, table.health, skipped


def run(args) -> int:
    from pefthub.report import health
    from pefthub.suites import label_of

    results_dir, docs, healths, skipped = load(args.suite)
    if args.json:
        print(json.dumps({"results": str(results_dir), "thresholds": {n: v for n, v, _ in health.THRESHOLDS.rationale()},
                          "runs": [dict(healths[d["run_id"]].as_record(), label=label_of(d["config"]))
                                   for d in docs if d["run_id"] in healths]}, indent=1, allow_nan=False))
        return 0
    if args.markdown:
        print(markdown(args.suite, docs, healths), end="")
        return 0
    from rich.markup import escape
    from rich.table import Table

    from pefthub.console import console as make_console

    console = make_console()
    for path, reason in skipped:
        console.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(reason)}")
    table = Table(title=f"run health: {results_dir}")
    for col in ("run", "correct", "same as base", "no answer", "at token cap", "strict %", "reward", "zero-adv.", "flags"):
        table.add_column(col, justify="left" if col in ("run", "flags") else "right", overflow="fold")
    for doc in docs:
        h = healths.get(doc["run_id"])
        if h is None:
            continue
        c = _cells(h.measures)
        flags = "; ".join(f"[{'red' if f.severity == 'error' else 'yellow'}]{f.name}[/] {escape(f.detail)}" for f in h.flags)
        table.add_row(escape(label_of(doc["config"])), c["correct"], c["identical"], c["no_answer"], c["at_cap"],
                      c["strict"], c["reward"], c["zero_adv"], flags or "[green]ok[/]")
    console.print(table)
    for name, meaning in health.MEANING.items():
        console.print(f"[bold]{name}[/]: {meaning}")
    return 0


def _frac(k, n) -> str:
    return "-" if k is None or not n else f"{k}/{n}"


def _cells(m: dict) -> dict[str, str]:
    return {
        "correct": _frac(m["correct"], m["shared"]) if m["shared"] else _frac(
            round(m["accuracy"] * m["n"]) if m["accuracy"] is not None and m["n"] else None, m["n"]),
        "base_correct": _frac(m["base_correct"], m["shared"]),
        "identical": _frac(m["identical"], m["shared"]),
        "no_answer": _frac(m["no_answer"], m["n"]), "at_cap": _frac(m["at_cap"], m["n"]),
        "strict": "-" if m["strict"] is None else f"{100 * m['strict']:.1f}",
        "reward": "-" if m["reward_mean"] is None else f"{m['reward_mean']:.3f}",
        "zero_adv": "-" if m["zero_advantage_share"] is None else f"{100 * m['zero_advantage_share']:.0f}%",
    }


def _closest(values: list[tuple[float, str]], reverse: bool) -> str:
    """The two measured values nearest a threshold, with the runs they came from."""
    shown = sorted(values, key=lambda v: v[0], reverse=reverse)[:2]
    return "; ".join(f"{v:.3f} ({label})" for v, label in shown) if shown else "not measured"


def markdown(suite: str, docs: list[dict], healths: dict) -> str:
    """docs/run-health.md: the thresholds, the value each run measured next to them, and the flags."""
    from pefthub.report import health
    from pefthub.suites import label_of

    short = [label_of(d["config"]).split("/lr=")[0] for d in docs]
    unique = len(set(short)) == len(short)
    runs = [(s if unique else label_of(d["config"]), healths[d["run_id"]])
            for s, d in zip(short, docs) if d["run_id"] in healths]
    base_ids = {h.base_run_id for _, h in runs if h.base_run_id}
    lines = [f"# Run health of the `{suite}` results", "",
             f"Generated by `{DOC_COMMAND.replace('quick', suite)}` from the committed result files "
             "(`pefthub/report/health.py`); do not edit by hand. What the flags mean and why: "
             "[benchmarks.md](benchmarks.md#run-health).", ""]
    if base_ids:
        lines += [f"Base-model run compared against: {', '.join(f'`{b}`' for b in sorted(base_ids))}.", ""]
    compared = [(label, h.measures) for label, h in runs if h.measures["shared"]]
    same_score = [label for label, m in compared if m["correct"] == m["base_correct"]]
    if compared:
        scores = sorted({_frac(m["base_correct"], m["shared"]) for _, m in compared})
        lines.append(f"- {len(same_score)} of {len(runs)} trained runs score exactly the base model's "
                     f"{' / '.join(scores)} on the same test items: {', '.join(same_score) or 'none'}.")
        ident = sorted(((h.measures["identical"], label, h.measures["shared"]) for label, h in runs
                        if h.measures["identical"] is not None), reverse=True)
        lines.append("- Test completions byte-identical to the base model's on the same items: "
                     + ", ".join(f"{label} {k}/{n}" for k, label, n in ident) + ".")
    counts = {name: [label for label, h in runs if name in h.names] for name in health.RUN_FLAGS}
    lines.append("- Flagged: " + "; ".join(f"`{name}` {len(labels)} ({', '.join(labels) or 'none'})"
                                          for name, labels in counts.items()) + ".")
    lines += ["", "## Thresholds", "",
              "From `pefthub.report.health.Thresholds`; the last column is the measured value of this suite's runs "
              "nearest to the threshold (the two nearest, with their runs).", "",
              "| threshold | value | why | nearest measured |", "| --- | --- | --- | --- |"]
    nearest = _nearest(runs)
    for name, value, why in health.THRESHOLDS.rationale():
        lines.append(f"| `{name}` | {value:g} | {why} | {nearest.get(name, 'not measured')} |")
    lines += ["", "## Runs", "",
              "| run | correct | base correct | same as base | no answer | at token cap | strict-match % "
              "| mean reward | zero-adv. groups | flags |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for label, h in runs:
        c = _cells(h.measures)
        flags = "; ".join(f"**{f.name}**: {f.detail}" for f in h.flags) or "ok"
        lines.append(f"| {label} | {c['correct']} | {c['base_correct']} | {c['identical']} | {c['no_answer']} "
                     f"| {c['at_cap']} | {c['strict']} | {c['reward']} | {c['zero_adv']} | {flags} |")
    return "\n".join(lines) + "\n"


def _nearest(runs: list) -> dict[str, str]:
    def share(k, n):
        return None if k is None or not n else k / n

    values: dict[str, list[tuple[float, str]]] = {}

    def add(key, value, label):
        if value is not None:
            values.setdefault(key, []).append((value, label))

    for label, h in runs:
        m = h.measures
        same = m["shared"] and m["correct"] == m["base_correct"]
        add("noop_min_identical", share(m["identical"], m["shared"]) if same else None, label)
        na, base_na = share(m["no_answer"], m["n"]), share(m["base_no_answer"], m["base_n"]) or 0.0
        add("no_answer_excess", None if na is None else na - base_na, label)
        add("strict_floor", m["strict"], label)
        add("strict_base_min", m["base_strict"], "base")
        cap, base_cap = share(m["at_cap"], m["n"]), share(m["base_at_cap"], m["base_n"]) or 0.0
        add("cap_excess_collapse", None if cap is None else cap - base_cap, label)
        add("cap_excess_runaway", None if cap is None else cap - base_cap, label)
        add("one_answer_share", share(m.get("one_answer"), m["n"]), label)
        add("reward_floor", m["reward_mean"], label)
        add("zero_advantage_min", m["zero_advantage_share"], label)
    values["strict_base_min"] = values.get("strict_base_min", [])[:1]
    # Thresholds a run must reach from below (share, excess) show the highest values; floors the lowest.
    low_side = {"strict_floor", "reward_floor", "noop_min_identical"}
    return {k: _closest(v, reverse=k not in low_side) for k, v in values.items()}

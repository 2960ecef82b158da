"""Compare two rows (or two runs) item by item on the test items both were scored on: the paired
table, Δ accuracy with its 95% interval over items and seeds, the p-value and the items where they
disagree. A and B are row names of a suite (as `pefthub bench` prints them: `tinylora@13/grpo`,
`lora/sft`, `base`) or run ids (the 16-digit names of result files).

  pefthub compare tinylora@13/grpo tinylora@13/sft --suite quick
  pefthub compare lora/sft base --suite quick --json
  pefthub compare a0b759edac48102c e5501a31c81086e0

Rows evaluated on different items, tasks or evaluation protocols are refused with the reason.
Each arm's run-health flags (pefthub/report/health.py) are named first; when every seed of an arm is
flagged no-op or collapsed there is no verdict (its score is the base model's or a broken model's,
not the method's), only the figures. The statistics are explained in docs/benchmarks.md
("Reading the numbers").
"""

from __future__ import annotations

import re
from pathlib import Path

NAME = "compare"
HELP = "paired comparison of two rows or runs on the same test items (Δ, interval, p, disagreements)"
RUN_ID = re.compile(r"^[0-9a-f]{16}$")


def add_arguments(parser) -> None:
    parser.add_argument("a", metavar="A", help="row name (with --suite) or run id")
    parser.add_argument("b", metavar="B", help="row name (with --suite) or run id")
    parser.add_argument("--suite", help="suite whose rows A and B name (results in leaderboards/<suite>/results)")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="results directory (default: leaderboards/<suite>/results; run ids are also "
                             "looked up in every leaderboards/*/results)")
    parser.add_argument("--show", type=int, default=8, metavar="N", help="disagreeing items printed (default: 8)")
    parser.add_argument("--json", action="store_true", help="print everything as JSON, every disagreeing item")


def _run_row(run_id: str, directories: list[Path]):
    """A row of one run found by id, with its flags against the base run of its own results directory."""
    from pefthub.errors import ConfigError
    from pefthub.report import stats
    from pefthub.report.health import row_flags
    from pefthub.report.rows import one_run_row
    from pefthub.report.table import read_table
    from pefthub.results import result_path

    for directory in directories:
        if result_path(directory, run_id).is_file():
            table = read_table(directory, skipped := [])
            record = next((r for r in table.records if r.run_id == run_id), None)
            if record is None:
                raise ConfigError(f"{result_path(directory, run_id)}: " + "; ".join(reason for _, reason in skipped))
            if record.status != "success":
                raise ConfigError(f"run {run_id} ended {record.status}: it has no scores to compare")
            row = one_run_row(record, f"{stats.row_label(record.config)} (run {run_id})")
            row.flags = row_flags([table.health.get(run_id)], [record.doc])
            return row
    raise ConfigError(f"no result file {run_id}.json in {', '.join(str(d) for d in directories) or 'leaderboards/'}")


def resolve(name: str, rows, directories: list[Path], suite: str | None):
    """A row by its name in the suite, else a run by its id."""
    from pefthub.errors import ConfigError

    for row in rows:
        if row.label == name:
            return row
    if RUN_ID.match(name):
        return _run_row(name, directories)
    if suite is None:
        raise ConfigError(f"'{name}' is not a run id (16 hex digits); row names need --suite")
    raise ConfigError(f"no row '{name}' in suite {suite} (rows: {', '.join(sorted(r.label for r in rows)) or 'none'})")


def run(args) -> int:
    from pefthub.errors import ConfigError
    from pefthub.grid import DEFAULT_RESULTS_ROOT, results_dir_for
    from pefthub.report import stats
    from pefthub.report.table import read_table

    directory = args.results or (results_dir_for(args.suite) if args.suite else None)
    if directory is not None and not Path(directory).is_dir():
        raise ConfigError(f"results directory {directory} does not exist"
                          + (f" (has suite {args.suite} been run?)" if args.suite else ""))
    rows = read_table(directory).rows if directory is not None else []
    directories = [Path(directory)] if directory is not None else sorted(Path(DEFAULT_RESULTS_ROOT).glob("*/results"))
    a = resolve(args.a, rows, directories, args.suite)
    b = resolve(args.b, rows, directories, args.suite)
    if [d["run_id"] for d in a.docs] == [d["run_id"] for d in b.docs]:
        raise ConfigError(f"A and B are the same run(s) ({a.label}); nothing to compare")
    if args.show < 0:
        raise ConfigError("--show must be 0 or more")
    result = stats.compare_rows(a, b)
    flags = {"A": a.flags, "B": b.flags}
    if args.json:
        print(stats.to_json(dict(result.as_dict(), runs_a=[d["run_id"] for d in a.docs],
                                 runs_b=[d["run_id"] for d in b.docs],
                                 flags_a=[f.as_record() for f in flags["A"]],
                                 flags_b=[f.as_record() for f in flags["B"]],
                                 tested=not untested(flags))))
        return 0
    print_comparison(result, show=args.show, flags=flags)
    return 0


def untested(flags: dict[str, list]) -> list[str]:
    """The arms (``A``, ``B``) whose flags leave nothing to test."""
    return [arm for arm, found in flags.items() if any(f.untested for f in found)]


def print_comparison(c, *, show: int, flags: dict[str, list] | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from pefthub.report import stats
    from pefthub.console import console as make_console
    from pefthub.report.health import UNTESTED, legend

    flags = flags or {}
    console = make_console()
    console.print(f"[bold]A[/] {escape(c.a)}  vs  [bold]B[/] {escape(c.b)}: {c.n_items} shared test items, "
                  f"{c.seeds_a} vs {c.seeds_b} seed(s)")
    for arm, label in (("A", c.a), ("B", c.b)):
        for f in flags.get(arm, []):
            colour = "red" if f.severity == "error" else "yellow"
            console.print(f"[{colour}]{escape(f.sentence(f'{arm} ({label})'))}[/]"
                          + (" — not tested" if f.untested else ""))
    shown = {f.name for found in flags.values() for f in found}
    if shown:
        console.print("[dim]" + escape(legend(shown)) + "[/]")
    skip = untested(flags)
    table = Table(title="items" if c.seeds_a == c.seeds_b == 1 else "items (seed-averaged scores)")
    table.add_column("")
    table.add_column("B right", justify="right")
    table.add_column("B wrong", justify="right")
    table.add_row("A right", str(c.both_right), str(c.a_only))
    table.add_row("A wrong", str(c.b_only), str(c.both_wrong))
    console.print(table)
    if c.split_items:
        console.print(f"{c.split_items} item(s) tie between partial scores across seeds (not in the table's corners)")
    console.print(f"accuracy: A {stats.fmt_pct(c.accuracy_a)}%, B {stats.fmt_pct(c.accuracy_b)}%")
    console.print(f"Δ (A − B): {stats.fmt_pct(c.delta, sign=True)} points, 95% CI "
                  f"[{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}] "
                  + (f"({c.interval}, agreeing with the p-value)" if c.interval == stats.EXACT_INTERVAL
                     else f"(t with {c.df:.1f} df over items × seeds"
                     + (f", {stats.CUT_WORDS})" if c.interval == stats.CLIPPED_INTERVAL else ")")))
    detail = f", {c.a_only} vs {c.b_only} discordant items" if c.test == "McNemar exact" else ""
    if skip:
        verdict = f"not tested: {' and '.join(skip)} {'is' if len(skip) == 1 else 'are'} flagged " + " and ".join(
            dict.fromkeys(f.name for arm in skip for f in flags[arm] if f.untested))
    else:
        verdict = "not distinguishable at α 0.05" if c.p_value >= stats.ALPHA else "different at α 0.05"
        partly = [f"{arm} is flagged {f.name} on {f.flagged} of {f.seeds} seeds" for arm, found in flags.items()
                  for f in found if f.name in UNTESTED]
        if partly:
            verdict += f" (read with care: {'; '.join(partly)})"
    console.print(f"p = {stats.fmt_p(c.p_value)} ({c.test}{detail}); {verdict}")
    if not c.disagreements:
        console.print("They agree on every item.")
        return
    console.print(f"Items where they disagree ({len(c.disagreements)}"
                  f"{'; first ' + str(min(show, len(c.disagreements))) if show < len(c.disagreements) else ''}"
                  f"; --json lists all):")
    for item in c.disagreements[:show]:
        console.print(f"  {escape(item['id'])}: gold {escape(str(item['gold']))}; "
                      f"A {escape(_answers(item['a_answers']))} ({_score(item['a'])}), "
                      f"B {escape(_answers(item['b_answers']))} ({_score(item['b'])})")


def _answers(values: list) -> str:
    return " / ".join("-" if v is None else str(v) for v in values)


def _score(x: float) -> str:
    return "right" if x == 1 else "wrong" if x == 0 else f"{100 * x:.0f}% of seeds right"

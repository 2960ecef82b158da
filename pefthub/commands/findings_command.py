"""Answer the paper's questions from a suite's results and write them to docs/findings/<suite>.md:
for each, the paired Δ with its 95% interval, the verdict (supported / contradicted / not
significant after Holm / not tested / not measured in this suite) and the published figure beside it.
Every table names each row's run-health flags (pefthub/report/health.py), and so does the headline; a
comparison with an arm that did not train is "not tested". The suite's declared `primary`
comparisons (suite.toml) are tested on their own and stated first, after its `positive_control`: if that
row does not beat base, no comparison with an arm of its trainer is tested.
The file is generated; rerun the command after new results instead of editing it.

  pefthub findings quick
  pefthub findings cpu-paper-shape --stdout
  pefthub findings cpu-paper-shape --pilot leaderboards/cpu-pilots/steps/results
  pefthub findings cpu-pilots-quick-v1 --results leaderboards/cpu-pilots/quick-v1/results \
      --worked-example docs/benchmarks.md   # also refresh the docs' worked example
  pefthub findings cpu-paper-shape --headline README.md   # also refresh the README's generated headline
"""

from __future__ import annotations

from pathlib import Path

NAME = "findings"
HELP = "write docs/findings/<suite>.md: the paper's questions answered from a suite's results"


def add_arguments(parser) -> None:
    parser.add_argument("suite", help="suite name (results in leaderboards/<suite>/results)")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="results directory (default: leaderboards/<suite>/results)")
    parser.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                        help="output file (default: docs/findings/<suite>.md)")
    parser.add_argument("--stdout", action="store_true", help="print the Markdown instead of writing it")
    parser.add_argument("--pilot", type=Path, action="append", default=[], metavar="DIR",
                        help="a pilot's results directory: each run is compared on validation with this suite's "
                             "run of the same config but for the budget (repeatable)")
    parser.add_argument("--worked-example", type=Path, default=None, metavar="FILE",
                        help="also rewrite the generated worked example between the markers in FILE")
    parser.add_argument("--headline", type=Path, default=None, metavar="FILE",
                        help="also rewrite the suite's generated headline paragraph between its markers in FILE")


def run(args) -> int:
    from pefthub.errors import ConfigError
    from pefthub.grid import results_dir_for
    from pefthub.report import findings
    from pefthub.report.records import read_records
    from pefthub.report.table import read_table
    from pefthub.results import atomic_write_text
    from pefthub.tasks import strata_of

    name = Path(args.suite).name
    directory = args.results or results_dir_for(name)
    if not Path(directory).is_dir():
        raise ConfigError(f"results directory {directory} does not exist (run `pefthub bench {name}` first)")
    for pilot in args.pilot:
        if not pilot.is_dir():
            raise ConfigError(f"--pilot: no directory {pilot}")
    primary, control = findings.declared_primary(name), findings.declared_control(name)
    table = read_table(directory, control=control)
    rows = table.rows
    if not rows:
        raise ConfigError(f"no successful result in {directory}: nothing to report")
    pilots = [(pilot.as_posix(), read_records(pilot)) for pilot in args.pilot]
    command = " ".join(["pefthub findings", name, *([f"--results {args.results.as_posix()}"] if args.results else []),
                        *(f"--pilot {p.as_posix()}" for p in args.pilot)])
    text = findings.render_markdown(name, rows, source=Path(directory).as_posix(), records=table.records,
                                    pilots=pilots, command=command, primary=primary, strata_of=strata_of,
                                    control=control, excluded=findings.declared_excluded(name))
    if args.worked_example is not None:
        if not args.worked_example.is_file():
            raise ConfigError(f"--worked-example: no file {args.worked_example}")
        updated = findings.replace_worked_example(args.worked_example.read_text(encoding="utf-8"),
                                                  findings.worked_example(name, rows))
        atomic_write_text(args.worked_example, updated)
        print(f"updated the worked example in {args.worked_example}")
    if args.headline is not None:
        if not args.headline.is_file():
            raise ConfigError(f"--headline: no file {args.headline}")
        updated = findings.replace_headline(args.headline.read_text(encoding="utf-8"), name,
                                            findings.headline(name, rows, primary=primary, control=control))
        atomic_write_text(args.headline, updated)
        print(f"updated the headline in {args.headline}")
    if args.stdout:
        print(text, end="")
        return 0
    output = args.output or Path("docs") / "findings" / f"{name}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, text)
    print(f"wrote {output}")
    return 0

"""Run a benchmark suite's grid (methods × parameter budgets × learning rates × seeds × trainers)
into its results store, then print the suite's results: the learning rate of each row chosen on
the validation split, test accuracy as mean ± 95% CI over seeds.

SUITE is a directory holding suite.toml, or the name of one under benchmarks/ (e.g. `quick`).
Results go to leaderboards/<suite>/results/<run_id>.json (one file per run; --results changes the
directory). Reruns resume: a run whose result is success with the same config hash is skipped;
missing and cancelled runs run; failed runs are kept unless --retry-failed. Several benches may
share one results directory (the same sweep started twice, machines on a shared filesystem): each
run is claimed before it starts, so it runs once (docs/benchmarks.md, "Sharing a store"). SIGINT
and SIGTERM stop the bench (exit status 130 / 143), leave the running run pending and print the
command that resumes.

Patterns for --only/--skip are globs matched against a run's label
(e.g. `tinylora@13/grpo/lr=0.001/seed=0`), its run id, method, trainer or row (`tinylora@13/grpo`);
repeat them or separate with commas. Examples:

  pefthub bench quick
  pefthub bench quick --dry-run
  pefthub bench cpu-paper-shape --only 'tinylora*' --skip sft
  pefthub bench benchmarks/paper-gsm8k --executor ray --address auto
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

NAME = "bench"
HELP = "run a benchmark suite (resumable) and print its results table"


def add_arguments(parser) -> None:
    parser.add_argument("suite", help="suite directory (with suite.toml) or a name under benchmarks/")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the grid, the budget and what would run; run nothing")
    parser.add_argument("--only", action="append", default=[], metavar="PATTERN",
                        help="run only matching runs (glob; repeatable or comma-separated)")
    parser.add_argument("--skip", action="append", default=[], metavar="PATTERN",
                        help="leave out matching runs (glob; repeatable or comma-separated)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="also rerun runs whose stored result is failed (default: keep them)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: one run at a time on this machine, each in its own process "
                             "(default); ray: each run a Ray task with the suite's resource request")
    parser.add_argument("--address", default=None, metavar="auto|local|ADDR",
                        help="Ray cluster to use with --executor ray: auto (the running cluster, default), "
                             "local (start one in this process), HOST:PORT or ray://HOST:PORT")
    parser.add_argument("--isolation", choices=("process", "inline"), default="process",
                        help="local executor: a child process per run (default; survives crashes and "
                             "OOM kills) or inline in this process (for debugging)")
    parser.add_argument("--results", type=Path, default=None, metavar="DIR",
                        help="results directory (default: leaderboards/<suite>/results)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any run of the grid ends failed or cancelled")


def _patterns(values: list[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def run(args) -> int:
    from pefthub import claims, grid, suites
    from pefthub.console import console as make_console
    from pefthub.errors import ConfigError
    from pefthub.executors import make_executor

    console = make_console()
    if args.address is not None and args.executor != "ray":
        raise ConfigError("--address only applies to --executor ray")
    suite = suites.load(args.suite)
    results_dir = args.results or grid.results_dir_for(suite.name)
    with console.status(f"resolving the grid of {suite.name} on {suite.model} (meta device)…"):
        resolution = suites.resolve(suite)
        only, skip = _patterns(args.only), _patterns(args.skip)
        plan = grid.tuned_plan(suite, resolution, results_dir, only=only, skip=skip, retry_failed=args.retry_failed)
    if (only or skip) and not plan.selected:
        raise ConfigError(f"no run of suite '{suite.name}' matches --only {only or '-'} --skip {skip or '-'}")
    for run_id, reason in plan.state.corrupt.items():
        console.print(f"[yellow]warning:[/] unreadable result {run_id}.json ({reason}); it will be rerun")
    if args.dry_run:
        print_grid(console, suite, plan, results_dir)
        _print_awaiting(console, suite, plan.experiments)
        _print_failed_control(console, suite, plan, results_dir)
        return 0
    removed = grid.prepare_store(results_dir)
    if removed:
        console.print(f"removed {len(removed)} file(s) left by an interrupted writer "
                      f"({', '.join(sorted(p.name for p in removed)[:3])}{', …' if len(removed) > 3 else ''})")
    kept_failed = [e for e in plan.selected if plan.status(e) == "failed" and e not in plan.todo]
    done = len(plan.selected) - len(plan.todo)
    console.print(f"[bold]{suite.name}[/]: {len(plan.selected)} runs, {done} already done"
                  f"{f' ({len(kept_failed)} failed, kept; --retry-failed reruns them)' if kept_failed else ''}, "
                  f"{len(plan.todo)} to run → {results_dir}")
    _print_failed_control(console, suite, plan, results_dir)
    if plan.todo:
        executor = make_executor(args.executor, address=args.address, isolation=args.isolation)
        tally = grid.Tally()
        attempted: set[str] = set()
        try:
            with grid.stop_on_signals(), claims.Claims(results_dir) as held:
                if hasattr(executor, "connect"):
                    with console.status(f"connecting to Ray ({args.address or 'auto'})…"):
                        executor.connect()
                while plan.todo:  # a suite tuned on its first seed grows as rows finish: run until it stops
                    with GridProgress(console, plan.todo) as progress:
                        grid.execute(plan, suite=suite.name, results_dir=results_dir, executor=executor,
                                      events=progress.event, claims=held, retry_failed=args.retry_failed,
                                      tally=tally)
                    attempted |= {e.run_id for e in plan.todo}
                    plan = grid.tuned_plan(suite, resolution, results_dir, only=only, skip=skip,
                                           retry_failed=args.retry_failed)
                    plan.todo = [e for e in plan.todo if e.run_id not in attempted]
                    if plan.todo:
                        console.print(f"learning rates selected on seed {suite.seeds[0]}: {len(plan.todo)} more run(s)")
                grid.raise_if_stopped()  # a stop asked for after the last run: still reported as one
        except grid.Stopped as stop:
            now = grid.make_plan(plan.experiments, results_dir, only=only, skip=skip, retry_failed=args.retry_failed)
            finished = len(now.selected) - len(now.todo)
            print(f"stopped by {stop.name}: {finished} of {len(now.selected)} runs finished "
                  f"({len(tally.ran)} by this bench), {len(now.todo)} pending; "
                  f"resume with: {resume_command(args, results_dir)}", file=sys.stderr)
            return stop.exit_code
        finally:
            if hasattr(executor, "close"):
                executor.close()
        console.print(tally_line(tally, done))
        state = grid.scan([e for e in plan.experiments if e.run_id in tally.elsewhere], results_dir)
        running = sum(state.status(rid) not in grid.FINISHED and (h := claims.holder(results_dir, rid)) is not None
                      and h.stale_reason() is None for rid in tally.elsewhere)
        if running:
            console.print(f"{running} run(s) skipped here are still running in another bench; "
                          "the table lacks them until they finish (rerun to see them)")
        if tally.lost:
            console.print(f"[yellow]warning:[/] {len(tally.lost)} claim(s) of this bench were taken over by another "
                          f"bench after {claims.STALE_SECONDS:.0f} s without a heartbeat; their runs may have run twice")
        _print_awaiting(console, suite, plan.experiments, results_dir)
    table = results_table(results_dir, [e.run_id for e in plan.experiments], suite.positive_control)
    print_results(console, suite, table, total=len(plan.experiments), have=len(table.records))
    print_health(console, table.rows)
    docs = [r.doc for r in table.records]
    bad = [d for d in docs if d["status"] != "success" and any(d["run_id"] == e.run_id for e in plan.selected)]
    return 1 if args.strict and bad else 0


def results_table(results_dir, run_ids, control: str | None = None):
    """The table `pefthub bench` prints: the grid's runs (``run_ids``) read once into records, and the
    report layer's rows of them (:func:`pefthub.report.table.suite_table`, the site's too), gated on the
    suite's positive ``control`` row label."""
    from pefthub.report.records import read_runs
    from pefthub.report.table import suite_table

    return suite_table(read_runs(results_dir, run_ids), control)


def tally_line(tally, done_before: int) -> str:
    """What this bench did, for a store other benches may share."""
    line = (f"this bench ran {len(tally.ran)}, skipped {len(tally.elsewhere)} claimed by another bench, "
            f"found {done_before + len(tally.found_done)} done")
    return line + (f" ({len(tally.found_done)} finished by another bench meanwhile)" if tally.found_done else "")


def resume_command(args, results_dir) -> str:
    """The command that resumes this bench: the same suite, store and selection."""
    import shlex

    words = ["pefthub", "bench", str(args.suite), "--results", str(results_dir)]
    for flag, values in (("--only", args.only), ("--skip", args.skip)):
        for value in values:
            words += [flag, value]
    if args.retry_failed:
        words.append("--retry-failed")
    if args.executor != "local":
        words += ["--executor", args.executor]
    if args.address is not None:
        words += ["--address", args.address]
    if args.isolation != "process":
        words += ["--isolation", args.isolation]
    if args.strict:
        words.append("--strict")
    return shlex.join(words)


def _print_awaiting(console, suite, experiments, results_dir=None) -> None:
    from pefthub import grid

    rows = grid.awaiting_selection(suite, experiments)
    if rows:
        console.print(f"{rows} row(s) still choose their learning rate on seed {suite.seeds[0]}; then "
                      f"{len(suite.seeds) - 1} more seed(s) each run at the chosen rate"
                      + (f" ({len(suite.primary_seeds) - 1} for the rows of the primary comparison)"
                         if suite.primary_seeds else "")
                      + (f" (or up to {suite.extend_edges} more rate(s) first, when it is at a grid edge)"
                         if suite.extend_edges else ""))
        others = grid.waiting_on_others(suite, experiments, results_dir) if results_dir is not None else 0
        if others:
            console.print(f"{others} run(s) of seed {suite.seeds[0]} they wait on are running in another bench, "
                          "which chooses the rates and runs the remaining seeds when they finish")


def _print_failed_control(console, suite, plan, results_dir) -> None:
    """Once every run of the suite's positive control has finished and it did not pass, say how many runs
    still to run are arms of its trainer: each comparison with them can only read "not tested"."""
    from rich.markup import escape

    from pefthub import grid

    control = suite.positive_control
    members = [e for e in plan.experiments if e.group_label == control]
    if not control or not members or any(plan.status(e) not in grid.FINISHED for e in members):
        return
    trainer = control.rsplit("/", 1)[-1]
    gated = [e for e in plan.todo if e.config["trainer"] == trainer and e.group_label != control]
    if not gated:
        return
    gate = results_table(results_dir, [e.run_id for e in plan.experiments], control).control
    if gate is None or gate.passed:
        return
    console.print(f"[yellow]Positive control not passed:[/] {escape(gate.note())}. The {len(gated)} "
                  f"{trainer.upper()} run(s) still to run can only give comparisons that read \"not tested\" "
                  f"(--skip {trainer} leaves them out).")


#: Without a terminal, the bench prints one progress line per run every this many optimizer steps.
LOG_EVERY = 10


class GridProgress:
    """Rich progress for the grid (runs done, ETA) and for each active run (step, loss, reward)."""

    def __init__(self, console, todo):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.grid = self.progress.add_task("grid", total=len(todo), info="")
        self.tasks: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def event(self, experiment, event: dict) -> None:
        try:
            self._event(experiment, event)
        except Exception:  # a display problem must never stop a sweep
            pass

    def _event(self, experiment, event: dict) -> None:
        phase = event.get("phase")
        rid = experiment.run_id
        if phase == "start":
            steps = experiment.config.get("budget", {}).get("steps") or None
            self.started[rid] = time.monotonic()
            self.tasks[rid] = self.progress.add_task(f"  {experiment.label}", total=steps, info="starting")
            self.progress.update(self.grid, info=experiment.label)
            return
        if phase == "skip":  # claimed by, or finished by, another bench sharing the store
            from rich.markup import escape

            self.progress.advance(self.grid)
            self.progress.console.print(f"[dim]– {escape(experiment.label)}: {escape(str(event.get('reason')))}[/]")
            return
        task = self.tasks.get(rid)
        if phase == "done":
            if task is not None:
                self.progress.remove_task(task)
                self.tasks.pop(rid, None)
            seconds = time.monotonic() - self.started.pop(rid, time.monotonic())
            self.progress.advance(self.grid)
            self.progress.console.print(_done_line(experiment, event, seconds))
            return
        if task is None:
            return
        if phase == "load":
            self.progress.update(task, info="loading model")
        elif phase == "train":
            total = event.get("steps") or event.get("total")
            info = "  ".join(f"{k} {event[k]:.3g}" for k in ("loss", "reward") if isinstance(event.get(k), (int, float)))
            self.progress.update(task, completed=event.get("step", 0), total=total or None, info=info)
            step = event.get("step") or 0
            if not self.progress.console.is_terminal and step and (step % LOG_EVERY == 0 or step == total):
                # Logs (nohup, CI) get no live bar: a plain line every LOG_EVERY steps shows a long run moving.
                elapsed = time.monotonic() - self.started.get(rid, time.monotonic())
                self.progress.console.print(f"  {experiment.label}: step {step}/{total or '?'}"
                                            f"{'  ' + info if info else ''}  ({elapsed / 60:.1f} min)", markup=False)
        elif phase == "eval":
            split = event.get("split", "test")
            total, done = event.get("total") or event.get("limit"), event.get("done", 0)
            self.progress.update(task, description=f"  {experiment.label} [eval {split}]", total=total or None,
                                 completed=done, info="")


def _done_line(experiment, event: dict, seconds: float) -> str:
    from rich.markup import escape

    status = event.get("status")
    if status == "success":
        return f"[green]✓[/] {escape(experiment.label)}  ({seconds:.0f} s)"
    mark = "[yellow]○[/]" if status == "cancelled" else "[red]✗[/]"
    return f"{mark} {escape(experiment.label)} {status}: {escape(str(event.get('error')))}  ({seconds:.0f} s)"


def _fmt_params(n) -> str:
    return "-" if n is None else f"{n:,}"


def _fmt_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return str(n)


def _fmt_share(fraction: float) -> str:
    pct = 100 * fraction
    return f"{pct:.1f}%" if pct >= 1 else f"{pct:.2g}%"


def _fmt_acc(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def print_budget(console, suite) -> None:
    b = suite.budget
    e = suite.eval
    console.print(f"[bold]{suite.name}[/] ({suite.file}): model {suite.model}, task {suite.task['name']}"
                  f"{' ' + str({k: v for k, v in suite.task.items() if k != 'name'}) if len(suite.task) > 1 else ''}")
    console.print(f"budget: {b['steps']} steps × batch {b['batch_size']}"
                  f" ({b['generations']} generations per prompt under GRPO), ≤{b['max_new_tokens']} new tokens, "
                  f"max seq {b['max_seq_len']}, {b['schedule']} schedule, warmup {b['warmup_ratio']:g}")
    console.print(f"evaluation: {e['limit']} test problems, {e['validation_limit']} validation problems, "
                  f"≤{e['max_new_tokens']} new tokens, backend {e['backend']}; seeds {suite.seeds}")
    if suite.exclude:
        console.print(f"not run (grid.exclude): {', '.join(suite.exclude)}")


def print_grid(console, suite, plan, results_dir=None) -> None:
    from rich.table import Table

    from pefthub import claims

    print_budget(console, suite)
    table = Table(title=f"{suite.name}: {len(plan.selected)} of {len(plan.experiments)} runs selected")
    for col in ("#", "run", "run id", "trainable", "state"):
        table.add_column(col, justify="right" if col in ("#", "trainable") else "left")
    todo = {e.run_id for e in plan.todo}
    for i, e in enumerate(plan.selected, 1):
        status = plan.status(e)
        state = "will run" if e.run_id in todo else ("done" if status == "success" else f"{status} (kept)")
        if e.run_id in todo and status != "missing":
            state = f"will rerun ({status})"
        holder = claims.holder(results_dir, e.run_id) if results_dir is not None and e.run_id in todo else None
        if holder is not None and holder.stale_reason() is None:
            state = f"running in another bench ({holder.describe()})"
        table.add_row(str(i), e.label, e.run_id, _fmt_params(e.trainable_params), state)
    console.print(table)
    console.print(f"{len(plan.todo)} run(s) would run; nothing was run (--dry-run)")


#: The marker beside a learning rate chosen at the smallest or largest rate of its row's grid.
EDGE_MARK = {"low": " ◂", "high": " ▸"}


def print_results(console, suite, table, *, total: int, have: int) -> None:
    """The suite's rows (:func:`pefthub.report.table.suite_table`) as a table, its power and the errors
    of its failed runs."""
    from rich.markup import escape
    from rich.table import Table

    from pefthub.report import stats
    from pefthub.report.power import suite_power

    rows = table.rows
    out = Table(title=f"{suite.name} on {suite.model}, task {suite.task['name']}: test accuracy % "
                      f"({have} of {total} runs have results)")
    flagged = any(row.flags for row in rows)
    chose = any(row.lr_selection != stats.LR_SINGLE for row in rows)
    validated = any(row.validation_accuracy is not None for row in rows)
    failed = any(row.failed for row in rows)
    columns = [("method", "left"), ("trainer", "left"), ("trainable", "right"), ("adapter", "right"),
               ("lr", "right")] + ([("lr chosen by", "left")] if chose else []) + [
               ("seeds", "right"), ("test % [95% CI]", "right")] + ([("val %", "right")] if validated else []) + [
               ("Δ vs base [95% CI]", "right"), ("p (Holm)", "right"), ("vs base", "left")] + (
               [("failed", "right")] if failed else []) + ([("flags", "left")] if flagged else [])
    for col, justify in columns:
        out.add_column(col, justify=justify, no_wrap=col not in ("method", "flags"))
    for row in rows:
        test = "-" if row.accuracy is None else _fmt_acc(row.accuracy) + (
            "" if row.ci_low is None else f" [{_fmt_acc(row.ci_low)}, {_fmt_acc(row.ci_high)}]")
        name = row.name if row.params_target is None else f"{row.name}@{row.params_target}"
        c = row.vs_base
        verdict = ("reference" if row.is_base else "not tested" if c is not None and c.verdict is None
                   else {stats.BETTER: "better", stats.WORSE: "worse", stats.SAME: "n.s. after Holm"}.get(c.verdict if c else None, "-"))
        p = "-" if c is None else f"{c.p_value:.2g} ({c.p_holm:.2g})" if c.p_holm is not None else f"{c.p_value:.2g} (-)"
        cells = [name, row.trainer, _fmt_params(row.trainable_params), _fmt_bytes(row.adapter_bytes),
                 "-" if row.learning_rate is None else f"{row.learning_rate:g}{EDGE_MARK.get(row.lr_at_edge, '')}"] + (
                 [row.lr_selection] if chose else []) + [str(row.seeds), test] + (
                 [_fmt_acc(row.validation_accuracy)] if validated else []) + [
                 stats.interval_text(c) if c else "-", p, verdict] + (
                 [f"{row.failed}/{row.attempted}" if row.failed else ""] if failed else []) + (
                 [", ".join(f.words() for f in row.flags)] if flagged else [])
        out.add_row(*[escape(x) for x in cells])
    console.print(out)
    if any(row.lr_at_edge for row in rows):
        console.print("lr ◂ / ▸: the rate chosen on validation is the smallest / largest of the row's grid; "
                      "a better rate may lie outside it (widen the grid).")
    paired = [r.vs_base for r in rows if r.vs_base]
    family = [c for c in paired if c.p_holm is not None]
    if paired:
        console.print(f"Δ vs base: paired on the same {paired[0].n_items} test items; with one seed p is exact "
                      "McNemar and the interval inverts the same test (it contains 0 exactly when p ≥ 0.05), "
                      f"otherwise t over items × seeds; verdicts use Holm's correction over the {len(family)} rows "
                      "that trained (n.s. after Holm: not significant after Holm; not tested: the row did not train, see its "
                      "flags, or the suite's positive control did not pass; docs/benchmarks.md, 'Reading the numbers').")
    if table.control is not None:
        console.print(f"{escape(table.control.sentence())}.")    # it opens with "Positive control `<row>`"
    better = [r for r in rows if r.vs_base is not None and r.vs_base.verdict == stats.BETTER]
    if table.floor is not None and better:
        from pefthub.report.floor import above

        below = [r.label for r in better if not above(r.vs_floor)]
        console.print(f"[bold]Constant-answer floor:[/] {escape(table.floor.words())}; "
                      + (f"of the {len(better)} rows better than base, not shown above it: {escape(', '.join(below))} "
                         "(they may only have learned to give the most common answer; docs/benchmarks.md, "
                         "'The constant-answer floor')." if below else f"all {len(better)} rows better than base are above it."))
    summary = suite_power(rows, table.base) if paired else None
    if summary is not None:
        console.print(f"[bold]{'Smoke run' if summary.smoke else 'Power'}:[/] {escape(summary.sentence())}")
    notes = sorted({r.vs_base_note for r in rows if r.vs_base_note and r.accuracy is not None})
    for note in notes[:5]:
        console.print(f"[yellow]no paired Δ:[/] {escape(note)}")
    errors = [(stats.row_label(r.config), r.doc["error"]) for r in table.failures if r.doc.get("error")]
    for label, err in list(dict.fromkeys(errors))[:20]:
        console.print(f"[red]failed[/] {escape(label)}: {escape(err)}")


def print_health(console, rows) -> None:
    """One line per run-health flag of a row under the results table, and what the flags shown mean."""
    from rich.markup import escape

    from pefthub.report.health import MEANING

    shown = set()
    for row in rows:
        for f in row.flags:
            colour = "red" if f.severity == "error" else "yellow"
            console.print(f"[{colour}]⚑ {f.words()}[/] {escape(row.label)}: {escape(f.detail)}")
            shown.add(f.name)
    if shown:
        console.print("flags: " + "; ".join(f"{n}: {m}" for n, m in MEANING.items() if n in shown)
                      + " (`pefthub health` shows the measures of every run)")


def print_suite_plan(suite, resolution, *, as_json: bool = False, extra: dict | None = None) -> int:
    """The suite form of `pefthub plan`: every method × params budget of ``suite`` (as resolved by
    :func:`pefthub.suites.resolve`) with its exact config, count and bytes on the meta device, plus
    the budget, trainer options and resource requests."""
    import json

    from rich.table import Table

    from pefthub.console import console as make_console
    from pefthub.planning import config_summary
    from pefthub.suites import method_label

    console = make_console()
    planned = int(suite.include_base) + sum(_planned_runs(suite, len(m.spec.rates(t)),
                                                          f"{method_label(m.spec.name, m.params_target)}/{t}")
                                            for m in resolution.methods for t in m.spec.trainers)
    if as_json:
        print(json.dumps({
            "suite": suite.name, "model": suite.model, "task": suite.task, "budget": suite.budget,
            "eval": suite.eval, "seeds": suite.seeds, "runs": planned,
            "tune_on_first_seed": suite.tune_on_first_seed, "extend_edges": suite.extend_edges,
            "methods": [{"name": m.spec.name, "method": m.spec.method, "params_target": m.params_target,
                         "config": m.config, "trainable_params": m.trainable_params,
                         "adapter_bytes": m.adapter_bytes, "total_params": m.total_params,
                         "trainers": m.spec.trainers, "learning_rates": m.spec.learning_rates,
                         "trainer_learning_rates": {t: m.spec.rates(t) for t in m.spec.trainers},
                         "resources": m.spec.resources, "own_trainer_options": m.spec.trainer_options}
                        for m in resolution.methods],
            "trainer_options": resolution.trainer_options, **(extra or {}),
        }, indent=1))
        return 0
    print_budget(console, suite)
    total = resolution.methods[0].total_params if resolution.methods else 0
    table = Table(title=f"{suite.name}: {planned} runs on {suite.model} ({total:,} parameters)"
                        f"{': base-model row + ' if suite.include_base else ': '}methods × learning rates × seeds × trainers")
    for col, justify in (("method", "left"), ("params target", "right"), ("trainable", "right"),
                         ("% of model", "right"), ("trainable fp32", "right"), ("saved adapter fp32", "right"),
                         ("config", "left"), ("trainers", "left"), ("learning rates", "left"), ("runs", "right")):
        table.add_column(col, justify=justify, overflow="fold")
    for m in resolution.methods:
        runs = sum(_planned_runs(suite, len(m.spec.rates(t)), f"{method_label(m.spec.name, m.params_target)}/{t}")
                   for t in m.spec.trainers)
        table.add_row(m.spec.name, "-" if m.params_target is None else f"{m.params_target:,}",
                      f"{m.trainable_params:,}", _fmt_share(m.trainable_params / m.total_params),
                      _fmt_bytes(m.adapter_bytes["trainable_fp32"]), _fmt_bytes(m.adapter_bytes["saved_fp32"]),
                      config_summary(m.config), ", ".join(m.spec.trainers), _rates_text(m.spec), str(runs))
    console.print(table)
    if suite.tune_on_first_seed:
        console.print(f"learning rates are compared on seed {suite.seeds[0]}'s validation score; the other "
                      f"seeds run only at the chosen rate" + (f"; up to {suite.extend_edges} rate(s) are added "
                      "beyond a grid edge the choice lands on (not counted above)" if suite.extend_edges else ""))
    for trainer, options in resolution.trainer_options.items():
        console.print(f"{trainer} options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    for spec in suite.methods:
        for trainer, own in spec.trainer_options.items():
            console.print(f"{spec.name}/{trainer} sets its own: " + ", ".join(f"{k}={v}" for k, v in own.items()))
    console.print("resources per run: " + _resources_text(suite.resources)
                  + "".join(f"; {m.name}: {_resources_text(m.resources)}" for m in suite.methods
                            if m.resources != suite.resources))
    return 0


def _planned_runs(suite, rates: int, row: str | None = None) -> int:
    """Runs of one (method, params, trainer) row (``row`` its label) before any edge extension; none for a
    row in ``grid.exclude``."""
    if row in suite.exclude:
        return 0
    seeds = len(suite.seeds_for(row))
    return rates + seeds - 1 if suite.tune_on_first_seed else rates * seeds


def _rates_text(spec) -> str:
    grids = {t: ", ".join(f"{lr:g}" for lr in spec.rates(t)) for t in spec.trainers}
    if len(set(grids.values())) == 1:
        return next(iter(grids.values()))
    return "; ".join(f"{t}: {text}" for t, text in grids.items())


def _resources_text(res: dict) -> str:
    memory = "" if res.get("memory_gb") is None else f", {res['memory_gb']:g} GB memory"
    return f"{res['num_cpus']:g} CPUs, {res['num_gpus']:g} GPUs{memory}"

"""Plan without weights: exact trainable-parameter counts and adapter bytes, on the meta device.

  pefthub plan --model qwen2.5-7b-instruct --method tinylora --params 13
  pefthub plan --model smollm2-135m-instruct --method lora --set r=16
  pefthub plan benchmarks/paper-gsm8k          # a whole suite's grid (validated offline)
  pefthub plan cpu-paper-shape --base-accuracy 0.2

For a suite, plan also prints its power: the smallest gain over the base model its test size can
detect (80% power, two-sided α 0.05, exact McNemar), with the base accuracy measured from the suite's
stored base result or given with --base-accuracy (docs/benchmarks.md, "Power").

Models: shipped architecture configs (qwen2.5-7b-instruct, qwen2.5-0.5b-instruct,
smollm2-135m-instruct), the tiny test models, a local directory or a cached hub id.
"""

from __future__ import annotations

import json

NAME = "plan"
HELP = "exact trainable parameters and adapter bytes for a method (or a suite's grid), without weights"


def add_arguments(parser) -> None:
    parser.add_argument("suite", nargs="?", help="a suite directory (benchmarks/<suite>) to plan as a whole")
    parser.add_argument("--model", help="model name or path (architecture only)")
    parser.add_argument("--method", action="append", help="method name; repeat for several (default: all)")
    parser.add_argument("--params", type=int, help="parameter budget to hit (exactly where the method can)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="method config field, e.g. --set u=13 --set weight_tying=1.0")
    parser.add_argument("--base-accuracy", type=float, default=None, metavar="P",
                        help="suite power: the base model's test accuracy (0-1) when the suite has no stored "
                             "base result (default: measured from leaderboards/<suite>/results)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from pefthub.errors import ConfigError

    if args.base_accuracy is not None and not 0 < args.base_accuracy < 1:
        raise ConfigError(f"--base-accuracy must be a fraction between 0 and 1 (got {args.base_accuracy:g})")
    if args.suite:
        return _plan_suite(args)
    if args.base_accuracy is not None:
        raise ConfigError("--base-accuracy applies to a suite (pefthub plan <suite> --base-accuracy P)")
    if not args.model:
        raise ConfigError("plan needs a suite directory or --model (see pefthub plan --help)")
    from pefthub.models import resolve_name

    resolve_name(args.model)  # an unknown name fails here, before torch and the plugins load
    return _plan_methods(args)


def suite_power(suite, base_accuracy: float | None):
    """The suite's power summary, or ``None`` when no base accuracy is stored or given (weightless)."""
    from pefthub import stats
    from pefthub.bench import results_dir_for

    n, seeds = int(suite.eval["limit"]), len(suite.seeds)
    if base_accuracy is not None:
        return stats.power(n, seeds, base_accuracy, "given")
    directory = results_dir_for(suite.name)
    if directory.is_dir():
        for row in stats.rows_in(directory):
            accs = [stats.accuracy(d) for d in row.docs]
            if row.is_base and all(a is not None for a in accs) and row.config.get("eval", {}).get("limit") == n:
                return stats.power(n, seeds, sum(accs) / len(accs), f"measured, run {row.docs[0]['run_id']}")
    return None


def _plan_suite(args) -> int:
    from pefthub import suites
    from pefthub.commands.bench import print_suite_plan
    from pefthub.console import console

    suite = suites.load(args.suite)
    summary = suite_power(suite, args.base_accuracy)
    power = None if summary is None else {
        "test_items": summary.n_items, "seeds": summary.seeds, "base_accuracy": summary.base_accuracy,
        "base_source": summary.base_source, "power": 0.8, "alpha": 0.05, "test": "McNemar exact",
        "detectable_gain_one_way": summary.one_way, "detectable_gain_independent": summary.independent,
        "smoke": summary.smoke, "summary": summary.sentence()}
    code = print_suite_plan(args.suite, as_json=args.json, extra={"power": power})
    if not args.json:
        if summary is None:
            console().print(f"Power: no stored base result for {suite.name}; give --base-accuracy P to see the "
                            "smallest difference its test size can detect.")
        else:
            console().print(f"[bold]{'Smoke run' if summary.smoke else 'Power'}:[/] {summary.sentence()}")
    return code


def _plan_methods(args) -> int:
    from rich.table import Table

    from pefthub import plugins
    from pefthub.console import console
    from pefthub.errors import ConfigError
    from pefthub.models import meta_model
    from pefthub.planning import config_summary, parse_overrides, plan_method

    names = args.method or list(plugins.methods())
    overrides = parse_overrides(args.overrides)
    if overrides and not args.method:
        raise ConfigError("--set needs --method (config fields differ between methods)")
    plans, impossible = [], []
    for name in names:
        try:
            plans.append(plan_method(args.model, name, params=args.params, overrides=overrides))
        except ConfigError as exc:
            if len(names) == 1:
                raise
            impossible.append((name, str(exc)))  # listing all methods: show, don't abort
    if args.json:
        print(json.dumps([p.to_dict() for p in plans]
                         + [{"method": n, "error": e} for n, e in impossible], indent=2))
        return 0
    total = sum(p.numel() for p in meta_model(args.model).parameters())
    table = Table(title=f"{args.model}: {total:,} parameters"
                  + (f", budget {args.params:,}" if args.params else ""))
    for col in ("method", "config", "trainable", "% of model", "adapter fp32", "with frozen fp32",
                "with frozen bf16", "budget"):
        table.add_column(col, justify="right" if col not in ("method", "config") else "left")
    for p in plans:
        table.add_row(p.method, config_summary(p.config), f"{p.trainable_params:,}",
                      f"{100 * p.trainable_params / p.total_params:.2g}%",
                      _bytes(p.adapter_bytes["trainable_fp32"]), _bytes(p.adapter_bytes["saved_fp32"]),
                      _bytes(p.adapter_bytes["saved_bf16"]),
                      "-" if p.params_target is None else ("exact" if p.exact else "nearest"))
    for name, error in impossible:
        table.add_row(name, f"[red]{error.split(': ', 1)[-1]}[/red]", "-", "-", "-", "-", "-", "impossible")
    console().print(table)
    return 0


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return str(n)

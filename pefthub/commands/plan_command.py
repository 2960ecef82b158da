"""Plan without weights: exact trainable-parameter counts and adapter bytes, on the meta device.

  pefthub plan --model qwen2.5-7b-instruct --method tinylora --params 13
  pefthub plan --model smollm2-135m-instruct --method lora --set r=16
  pefthub plan benchmarks/paper-gsm8k          # a whole suite's grid (validated offline)
  pefthub plan cpu-paper-shape --base-accuracy 0.2

For a suite, plan also estimates each run's GPU memory per GPU (weights, trainable state, activations,
vLLM) and GPU-hours, flags the runs that do not fit their requested GPUs with the fix, and says whether
the model's weights are on this machine (pefthub/memory_plan.py; docs/gpu.md), and its wall time from runs already
measured here (--timings-from; pefthub/runtime_plan.py). It also prints its power: the smallest gain over the base model it can
detect at its seeds and test items (80% power, two-sided α 0.05; pefthub/report/power.py), with the item and seed
variance measured on the suite's stored results, or from the items alone (exact McNemar) with the base accuracy
given by --base-accuracy (docs/benchmarks.md, "Power").

Models: shipped architecture configs (qwen2.5-7b-instruct, qwen2.5-0.5b-instruct,
smollm2-135m-instruct), the tiny test models, a local directory or a cached hub id.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    parser.add_argument("--gpu-memory-gb", type=float, default=None, metavar="GB",
                        help="suite GPU plan: memory of one GPU in GB (default: 80)")
    parser.add_argument("--gpu-tflops", type=float, default=None, metavar="TFLOPS",
                        help="suite GPU plan: dense bf16 peak of one GPU (default: 989, an H100 SXM)")
    parser.add_argument("--markdown", action="store_true",
                        help="suite: print only its GPU plan as Markdown (docs/gpu-plan.md is this for paper-gsm8k)")
    parser.add_argument("--timings-from", action="append", metavar="DIR", default=None,
                        help="suite: estimate its wall time from the runs measured in this results directory "
                             "(repeatable; default: the suite's own results, where it has some)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    from pefthub.errors import ConfigError

    for flag, value in (("--gpu-memory-gb", args.gpu_memory_gb), ("--gpu-tflops", args.gpu_tflops)):
        if value is not None and not value > 0:
            raise ConfigError(f"{flag} must be > 0 (got {value:g})")
        if value is not None and not args.suite:
            raise ConfigError(f"{flag} applies to a suite (pefthub plan <suite> {flag} ...)")
    if args.base_accuracy is not None and not 0 < args.base_accuracy < 1:
        raise ConfigError(f"--base-accuracy must be a fraction between 0 and 1 (got {args.base_accuracy:g})")
    if args.suite:
        return _plan_suite(args)
    if args.markdown:
        raise ConfigError("--markdown applies to a suite (pefthub plan <suite> --markdown)")
    if args.base_accuracy is not None:
        raise ConfigError("--base-accuracy applies to a suite (pefthub plan <suite> --base-accuracy P)")
    if not args.model:
        raise ConfigError("plan needs a suite directory or --model (see pefthub plan --help)")
    from pefthub.models import resolve_name

    resolve_name(args.model)  # an unknown name fails here, before torch and the plugins load
    return _plan_methods(args)


def suite_power(suite, base_accuracy: float | None):
    """The suite's power (:func:`pefthub.report.power.suite_power`) at its seeds and test items, with the
    variance measured on its stored results when they were evaluated on as many items; ``None`` when no
    base accuracy is stored or given (weightless)."""
    from pefthub.grid import results_dir_for
    from pefthub.report.power import suite_power as power_of
    from pefthub.report.table import read_table

    n, seeds = int(suite.eval["limit"]), len(suite.seeds)
    directory = results_dir_for(suite.name)
    table = read_table(directory) if directory.is_dir() else None
    base = table.base if table is not None else None
    if base is not None and base.config.get("eval", {}).get("limit") != n:
        base = None
    rows = table.rows if base is not None else []
    return power_of(rows, base, n_items=n, seeds=seeds, base_accuracy=base_accuracy)


def _plan_suite(args) -> int:
    from pefthub import suites
    from pefthub.commands.bench_command import print_suite_plan
    from pefthub.console import console

    suite = suites.load(args.suite)
    resolution = suites.resolve(suite)  # once: the GPU plan and the table below share it
    gpu = suite_gpu_plan(suite, resolution, gpu_memory_gb=args.gpu_memory_gb, gpu_tflops=args.gpu_tflops)
    if args.markdown:
        print(gpu.markdown(args.suite), end="")
        return 0
    summary = suite_power(suite, args.base_accuracy)
    power = None if summary is None else summary.as_record()
    times = suite_time_plan(suite, resolution, args.timings_from)
    code = print_suite_plan(suite, resolution, as_json=args.json, extra={
        "power": power, "gpu": gpu.to_dict(), "time": None if times is None else times.to_dict()})
    if not args.json:
        gpu.print()
        if times is not None:
            _print_times(times, args.timings_from)
        if summary is None:
            console().print(f"Power: no stored base result for {suite.name}; give --base-accuracy P to see the "
                            "smallest difference its test size can detect.")
        else:
            console().print(f"[bold]{'Smoke run' if summary.smoke else 'Power'}:[/] {summary.sentence()}")
    return code


def suite_time_plan(suite, resolution, directories: list[str] | None):
    """The suite's wall time (:mod:`pefthub.runtime_plan`) from the runs measured in ``directories``
    (default: the suite's own results directory), or None when there are none."""
    from pefthub import suites
    from pefthub.commands.bench_command import _planned_runs
    from pefthub.errors import ConfigError
    from pefthub.grid import results_dir_for
    from pefthub.runtime_plan import read_measurements, suite_time_plan as plan

    for directory in directories or []:
        if not Path(directory).is_dir():
            raise ConfigError(f"--timings-from: {directory} is not a directory")
    references = read_measurements(directories or [results_dir_for(suite.name)])
    if not references:
        if directories:
            raise ConfigError(f"--timings-from: no finished runs in {', '.join(directories)}")
        return None
    first: dict[str, dict] = {}
    for e in suites.expand(suite, resolution):
        first.setdefault(e.group_label, e.config)
    rates = {f"{suites.method_label(m.spec.name, m.params_target)}/{t}": len(m.spec.rates(t))
             for m in resolution.methods for t in m.spec.trainers}
    rows = [(row, config, 1 if config["method"] == suites.BASE_METHOD else _planned_runs(suite, rates[row], row))
            for row, config in first.items()]
    return plan(rows, references)


def _print_times(times, directories) -> None:
    from rich.table import Table

    from pefthub.console import console

    table = Table(title="Wall-time plan: per run, from runs measured on this machine (same budget shape and "
                        "answer length)")
    for col in ("row", "runs", "minutes/run", "hours", "measured from"):
        table.add_column(col, justify="left" if col in ("row", "measured from") else "right")
    for r in times.rows:
        table.add_row(r.row, str(r.runs), "-" if r.seconds_per_run is None else f"{r.seconds_per_run / 60:,.1f}",
                      "-" if r.hours is None else f"{r.hours:,.1f}", r.source)
    out = console()
    out.print(table)
    load = "" if times.load_average is None else f", whose mean load average was {times.load_average:.1f}"
    where = ", ".join(directories) if directories else "the suite's own results"
    out.print(f"[bold]Wall time[/]: {times.hours:,.1f} hours for the suite's planned runs (before edge extensions), "
              f"from {times.references} runs measured in {where}{load}"
              + (f"; no estimate for {', '.join(times.missing)}" if times.missing else ""))


class SuiteGpuPlan:
    """A suite's GPU plan: per row, memory per GPU and GPU-hours (pefthub.planning.gpu_plan), the
    suite's total, and whether the model's weights are here."""

    def __init__(self, suite, rows, weights: tuple[bool, str], gpu_memory_gb: float, gpu_tflops: float):
        self.suite, self.rows, self.weights = suite, rows, weights
        self.gpu_memory_gb, self.gpu_tflops = gpu_memory_gb, gpu_tflops

    @property
    def gpu_hours(self) -> float:
        return sum(r.runs * r.estimate.gpu_hours for r in self.rows)

    def to_dict(self) -> dict:
        from pefthub import memory_plan as mp

        return {"gpu_memory_gb": self.gpu_memory_gb, "gpu_tflops": self.gpu_tflops, "train_mfu": mp.TRAIN_MFU,
                "generation_mfu": mp.GENERATION_MFU, "weights_present": self.weights[0],
                "weights": self.weights[1], "gpu_hours": self.gpu_hours, "rows": [r.to_dict() for r in self.rows]}

    def markdown(self, suite_ref: str) -> str:
        """The plan as a generated Markdown page (no machine-dependent lines: weights are not in it)."""
        from pefthub import memory_plan as mp

        settings = "" if (self.gpu_memory_gb, self.gpu_tflops) == (mp.DEFAULT_GPU_MEMORY_GB, mp.DEFAULT_GPU_TFLOPS) \
            else f" --gpu-memory-gb {self.gpu_memory_gb:g} --gpu-tflops {self.gpu_tflops:g}"
        lines = [f"# GPU plan: {self.suite.name}", "",
                 f"Generated by `pefthub plan {suite_ref} --markdown{settings} > docs/gpu-plan.md`; do not edit. "
                 "What each column counts and the formulas behind it: [gpu.md](gpu.md#the-plan).", "",
                 f"Model `{self.suite.model}`; {self.gpu_memory_gb:g} GB per GPU (GB = 10^9 bytes); GPU-hours at "
                 f"{self.gpu_tflops:g} TFLOPS (dense bf16) with model-FLOP utilisation {mp.TRAIN_MFU:g} for training "
                 f"and {mp.GENERATION_MFU:g} for generation. Upper bounds at the budget's caps: every sequence at "
                 "`budget.max_seq_len`, every completion at `max_new_tokens`.", "",
                 "| row | GPUs | dtype | micro-batch | weights | trainable state | activations | vLLM | total per GPU "
                 "| fits | GPU-h per run | runs | GPU-h |",
                 "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
        for r in self.rows:
            e = r.estimate
            micro = f"{e.micro_batch} × {e.seq_len}{' (checkpointed)' if e.checkpointing else ''}" if e.micro_batch else "-"
            lines.append(f"| {r.row} | {r.num_gpus:g}{' (FSDP)' if e.sharded else ''} | {e.dtype} | {micro} | "
                         f"{_gb(e.weights)} | {_gb(e.trainable_state + e.shard_buffer)} | {_gb(e.activations + e.logits)} "
                         f"| {_vllm(e)} | {_gb(e.total)} | {'yes' if e.fits else '**no**'} | "
                         f"{e.gpu_hours:,.2f} | {r.runs} | {r.runs * e.gpu_hours:,.0f} |")
        lines += ["", f"**{self.gpu_hours:,.0f} GPU-hours** for the suite's planned runs."]
        fixes = [f"- `{r.row}` does not fit: {r.fix}" for r in self.rows if r.fix]
        if fixes:
            lines += ["", *fixes]
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        from rich.table import Table

        from pefthub import memory_plan as mp
        from pefthub.console import console

        table = Table(title=f"GPU plan: peak memory per GPU ({self.gpu_memory_gb:g} GB each) and GPU-hours at "
                            f"{self.gpu_tflops:g} TFLOPS, MFU {mp.TRAIN_MFU:g} training / {mp.GENERATION_MFU:g} "
                            "generation (upper bounds at the budget's caps)")
        for col in ("row", "GPUs", "dtype", "micro-batch", "weights", "trainable state", "activations",
                    "vLLM", "total", "fits", "GPU-h/run", "runs", "GPU-h"):
            table.add_column(col, justify="left" if col in ("row", "dtype", "fits") else "right")
        for r in self.rows:
            e = r.estimate
            micro = f"{e.micro_batch}×{e.seq_len}{' ckpt' if e.checkpointing else ''}" if e.micro_batch else "-"
            table.add_row(r.row, f"{r.num_gpus:g}{' FSDP' if e.sharded else ''}", e.dtype, micro, _gb(e.weights),
                          _gb(e.trainable_state + e.shard_buffer), _gb(e.activations + e.logits), _vllm(e),
                          _gb(e.total), "yes" if e.fits else "[red]no[/red]", f"{e.gpu_hours:,.2f}", str(r.runs),
                          f"{r.runs * e.gpu_hours:,.0f}")
        out = console()
        out.print(table)
        for r in self.rows:
            if r.fix:
                out.print(f"[red]{r.row} does not fit[/red] ({_gb(r.estimate.total)} on a {self.gpu_memory_gb:g} GB "
                          f"GPU): {r.fix}")
        out.print(f"[bold]GPU-hours[/]: {self.gpu_hours:,.0f} for the suite's planned runs")
        present, sentence = self.weights
        out.print(f"[bold]Weights[/]: {sentence}" if present else f"[bold]Weights[/]: [yellow]{sentence}[/yellow]")


def suite_gpu_plan(suite, resolution=None, *, gpu_memory_gb: float | None = None,
                   gpu_tflops: float | None = None) -> SuiteGpuPlan:
    """The GPU plan of every planned run of ``suite`` (weightless and offline; ``resolution``:
    :func:`pefthub.suites.resolve` of it, computed when not given)."""
    from pefthub import memory_plan as mp
    from pefthub import suites
    from pefthub.commands.bench_command import _planned_runs
    from pefthub.planning import gpu_plan, weights_status

    resolution = suites.resolve(suite) if resolution is None else resolution
    experiments = suites.expand(suite, resolution)
    rows = [(f"{suites.method_label(m.spec.name, m.params_target)}/{t}", len(m.spec.rates(t)))
            for m in resolution.methods for t in m.spec.trainers]
    runs = {label: _planned_runs(suite, rates, label) for label, rates in rows}
    runs[f"{suites.BASE_METHOD}/{suites.BASE_TRAINER}"] = 1
    memory = gpu_memory_gb or mp.DEFAULT_GPU_MEMORY_GB
    tflops = gpu_tflops or mp.DEFAULT_GPU_TFLOPS
    rows = gpu_plan(suite.model, experiments, runs, gpu_memory_gb=memory, gpu_tflops=tflops)
    return SuiteGpuPlan(suite, rows, weights_status(suite.model), memory, tflops)


def _gb(n: float) -> str:
    return f"{n / 1e9:,.1f} GB"


def _vllm(e) -> str:
    """vLLM's share, and for rollouts how many of a step's completions its KV cache holds at once."""
    return _gb(e.vllm_reserved) + (f" ({e.rollouts_at_once}/{e.rollout_rows} at once)" if e.rollout_rows else "")


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

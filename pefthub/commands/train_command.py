"""Train one method with one trainer under a budget, evaluate it, write the result file.

  pefthub train --method tinylora --params 13 --trainer grpo
  pefthub train --method lora --set r=4 --trainer sft --steps 10 --lr 2e-4
  pefthub train --method base                    # evaluate the untrained model only

The result JSON (with the spent budget: steps, prompts, tokens, seconds, peak memory, FLOPs) goes
to ``--results`` (default ``leaderboards/adhoc/results``) and its path is printed. Method config
fields: ``--set key=value``; trainer options: ``--option key=value`` (see docs/trainers.md).
``--eval-checkpoints 10,20,40`` also scores the validation split after those optimizer steps, inside
the run (the result's ``checkpoints``: accuracy vs budget from one run).
"""

from __future__ import annotations

from pathlib import Path

NAME = "train"
HELP = "train one method with one trainer under a budget, evaluate it, write a result file"
DEFAULT_RESULTS = Path("leaderboards") / "adhoc" / "results"


def add_arguments(parser) -> None:
    from pefthub.models import EMBEDDED_MODEL
    from pefthub.schema import EVAL_BACKENDS, SCHEDULES, Budget, Evaluation, defaults as schema_defaults

    budget, evaluation = schema_defaults(Budget), schema_defaults(Evaluation)
    parser.add_argument("--method", default="tinylora", help="method name, or 'base' for the untrained model "
                                                             "(default: %(default)s)")
    parser.add_argument("--params", type=int, help="trainable-parameter budget the method config is chosen for")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                        help="method config field, e.g. --set u=13 (repeatable)")
    parser.add_argument("--trainer", default="grpo",
                        help="a registered trainer: sft, grpo, or their TRL-backed engines trl-sft, trl-grpo "
                             "(`pefthub plugins` lists all; default: %(default)s)")
    parser.add_argument("--option", dest="options", action="append", metavar="KEY=VALUE",
                        help="trainer option, e.g. --option beta=0.01 --option loss_type=dr_grpo (repeatable)")
    parser.add_argument("--task", help="task name (default: the embedded default task, see `pefthub tasks`)")
    parser.add_argument("--task-param", dest="task_params", action="append", metavar="KEY=VALUE",
                        help="task parameter, e.g. --task-param max_digits=3 (repeatable; with --task)")
    parser.add_argument("--model", default=EMBEDDED_MODEL, help="model name or path (default: %(default)s)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the method's own, shown by `pefthub methods`)")
    parser.add_argument("--steps", type=int, default=budget["steps"], help="optimizer steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=budget["batch_size"],
                        help="prompts (grpo) or examples (sft) per step (default: %(default)s)")
    parser.add_argument("--generations", type=int, default=budget["generations"],
                        help="completions per prompt, grpo (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=budget["max_new_tokens"],
                        help="longest rollout, grpo (default: %(default)s)")
    parser.add_argument("--max-seq-len", type=int, default=budget["max_seq_len"],
                        help="longest prompt + completion (default: %(default)s)")
    parser.add_argument("--schedule", choices=SCHEDULES, default=budget["schedule"],
                        help="learning-rate shape after warmup (default: %(default)s)")
    parser.add_argument("--warmup-ratio", type=float, default=budget["warmup_ratio"],
                        help="share of steps with linear warmup (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    parser.add_argument("--eval-limit", type=int, default=evaluation["limit"],
                        help="test examples to evaluate (default: %(default)s)")
    parser.add_argument("--eval-max-new-tokens", type=int, default=evaluation["max_new_tokens"],
                        help="longest evaluation answer (default: %(default)s)")
    parser.add_argument("--eval-backend", choices=EVAL_BACKENDS, default=evaluation["backend"],
                        help="evaluation engine (default: %(default)s)")
    parser.add_argument("--eval-validation-limit", type=int, default=evaluation["validation_limit"],
                        help="validation examples scored too (default: %(default)s)")
    parser.add_argument("--eval-checkpoints", metavar="STEPS",
                        help="score the validation split after these optimizer steps too, inside the run, e.g. "
                             "10,20,40 (needs --eval-validation-limit > 0)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="directory for the result file (default: %(default)s)")
    add_placement_arguments(parser)


def add_placement_arguments(parser) -> None:
    """``--device`` and ``--dtype`` (shared by `pefthub train` and `pefthub eval`)."""
    from pefthub.devices import AUTO, DEVICE_HELP, DTYPE_HELP, DTYPES

    parser.add_argument("--device", default=AUTO, help=f"{DEVICE_HELP} (default: %(default)s)")
    parser.add_argument("--dtype", default=AUTO, choices=DTYPES, help=f"{DTYPE_HELP} (default: %(default)s)")


def build_config(args) -> dict:
    """The experiment config the arguments stand for, defaults resolved (its hash is the run id)."""
    from pefthub.devices import placement_keys
    from pefthub.planning import parse_overrides
    from pefthub.runner import BASE_METHOD, NO_TRAINER, default_task, resolve_config

    base = args.method == BASE_METHOD
    if args.task_params and not args.task:
        from pefthub.errors import ConfigError

        raise ConfigError("--task-param needs --task (parameters differ between tasks)")
    config = {
        "model": args.model,
        "task": {"name": args.task, **parse_overrides(args.task_params)} if args.task else default_task(),
        "trainer": NO_TRAINER if base else args.trainer,
        "trainer_options": parse_overrides(args.options),
        "method": args.method,
        "method_config": parse_overrides(args.overrides),
        "params_target": args.params,
        "learning_rate": args.lr,
        "seed": args.seed,
        "budget": {"steps": args.steps, "batch_size": args.batch_size, "generations": args.generations,
                   "max_new_tokens": args.max_new_tokens, "max_seq_len": args.max_seq_len,
                   "schedule": args.schedule, "warmup_ratio": args.warmup_ratio},
        "eval": {"limit": args.eval_limit, "max_new_tokens": args.eval_max_new_tokens, "backend": args.eval_backend,
                 "validation_limit": args.eval_validation_limit,
                 **({"checkpoints": parse_steps(args.eval_checkpoints)} if args.eval_checkpoints else {})},
        **placement_keys(args.device, args.dtype),  # only when not "auto": run ids of default runs unchanged
    }
    return resolve_config(config)


def parse_steps(text: str, flag: str = "--eval-checkpoints") -> list[int]:
    """``"10,20,40"`` as ``[10, 20, 40]``; an item that is no integer is one line naming it (order and
    range are the schema's checks)."""
    from pefthub.errors import ConfigError

    steps = []
    for item in text.split(","):
        try:
            steps.append(int(item.strip()))
        except ValueError:
            raise ConfigError(f"{flag}: {item.strip()!r} is not a positive integer (e.g. {flag} 10,20,40)") from None
    return steps


def run(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from pefthub.console import console
    from pefthub.devices import resolve
    from pefthub.models import check_loadable
    from pefthub.results import result_path
    from pefthub.runner import run_experiment

    resolve(args.device, args.dtype, where="-")  # --device cuda on a machine without one: one line, at once
    check_loadable(args.model)  # weights must exist before a run (and its result file) starts
    config = build_config(args)
    out = console()
    trained = config["trainer"] != "none"
    out.print(f"[bold]{config['method']}[/bold] ({config['method_config'] or 'untrained'}) · "
              f"trainer {config['trainer']} · task {config['task']['name']} · model {config['model']}"
              + (f" · lr {config['learning_rate']:g}" if trained else ""))
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[stats]}"), TimeElapsedColumn()]
    with Progress(*columns, console=out, transient=False) as bar:
        job = bar.add_task("loading", total=config["budget"]["steps"] if trained else None, stats="")

        def progress(event: dict) -> None:
            phase = event.get("phase")
            if phase == "train":
                stats = "  ".join(f"{key} {event[key]:.4g}" for key in ("reward", "loss")
                                  if isinstance(event.get(key), (int, float)))
                bar.update(job, description="training", completed=event["step"], stats=stats)
            elif phase == "eval":
                after = f" after step {event['step']}" if event.get("step") is not None else ""
                bar.update(job, description=f"evaluating {event.get('split')} ({event.get('limit')}){after}")
            elif phase == "load":
                bar.update(job, description="loading model")

        doc = run_experiment(config, suite="adhoc", results_dir=args.results, progress=progress)
    path = result_path(args.results, doc["run_id"])
    spent = doc.get("budget", {}).get("spent", {})
    if doc["status"] == "success":
        test = doc["evaluation"].get(config["eval"]["split"], {})
        out.print(f"accuracy {test.get('accuracy', float('nan')):.3f} on {test.get('n')} {config['eval']['split']} "
                  f"examples · {spent.get('optimizer_steps', 0)} steps · {spent.get('seconds_total', 0):.0f} s · "
                  f"peak RSS {spent.get('peak_rss_bytes', 0) / 2**30:.2f} GiB")
        if doc.get("checkpoints"):
            out.print("validation by step: " + " · ".join(f"{p['step']}: {p['accuracy']:.3f}" for p in doc["checkpoints"])
                      + f" (n {doc['checkpoints'][0]['n']}; scoring {spent.get('seconds_checkpoint_eval', 0):.0f} s)")
    else:
        out.print(f"[red]run {doc['status']}: {doc['error']}[/red]")
    print(path)
    return 0 if doc["status"] == "success" else 1

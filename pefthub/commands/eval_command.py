"""Score a model on a task through lm-eval; print accuracy with its 95% CI; write the samples.

  pefthub eval                                      # embedded model, default task, 400 test problems
  pefthub eval --task gsm_symbolic --limit 100
  pefthub eval --task chain_sum --param max_digits=2 --param max_terms=3
  pefthub eval --task gsm8k --param 'data_files={"test": "/data/gsm8k/test.parquet"}'
  pefthub eval --model ./my-checkpoint --task '{"name": "basic_arithmetic", "operators": ["+"]}'

Writes ``<out>/<stem>.samples.jsonl`` (one line per problem: prompt, completion, extracted answer,
gold, correct) and ``<out>/<stem>.json`` (the summary, shaped like a result file's
``evaluation.<split>`` object).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pefthub.errors import ConfigError

NAME = "eval"
HELP = "score a model on a task with lm-eval (accuracy, 95%% CI, per-sample file)"
DEFAULT_OUT = Path("eval-results")


def add_arguments(parser) -> None:
    from pefthub.models import EMBEDDED_MODEL

    parser.add_argument("--model", default=EMBEDDED_MODEL, help="model name or local path (default: %(default)s)")
    parser.add_argument("--task", default="default",
                        help="task name, 'default' (the embedded default task) or a JSON object with 'name' and "
                             "parameters (default: %(default)s)")
    parser.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="task parameter; VALUE is JSON when it parses, else a string (repeatable)")
    parser.add_argument("--split", default="test", help="test, validation or train (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=400, help="first N problems of the split (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=tokens_or_task, default="task",
                        help="longest answer in tokens, or 'task': 1.5x the task's longest worked solution "
                             "(256 without solutions) (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="generation batch size (default: %(default)s)")
    parser.add_argument("--backend", default="auto",
                        help="fused (pefthub's decoder), hf, vllm, or auto: fused where it serves the model, else hf "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    from pefthub.commands.train_command import add_placement_arguments

    add_placement_arguments(parser)


def tokens_or_task(text: str) -> int | str:
    return text if text == "task" else int(text)


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def task_config(task: str, params: list[str]) -> dict[str, Any]:
    """The task config ({"name": ..., **params}) the command-line arguments stand for."""
    from pefthub.tasks import DEFAULT_TASK

    if task == "default":
        config = dict(DEFAULT_TASK)
    elif task.lstrip().startswith("{"):
        try:
            config = json.loads(task)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--task: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(config, dict) or not isinstance(config.get("name"), str):
            raise ConfigError("--task: a JSON task config needs a \"name\"")
    else:
        config = {"name": task}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param: expected KEY=VALUE (got {item!r})")
        config[key.strip()] = parse_value(value)
    return config


def output_stem(model: str, config: dict[str, Any], split: str, config_hash: str) -> str:
    model_part = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(model).name or model)
    return f"{model_part}.{config['name']}.{split}.{config_hash[:12]}"


def run(args) -> int:
    from rich.console import Console

    from pefthub.devices import Precision, resolve
    from pefthub.evaluation.core import check_settings
    from pefthub.models import check_loadable, load_model
    from pefthub.results import atomic_write_text
    from pefthub.tasks import task_from_config

    # Every argument is checked before the dataset or the model loads.
    placement = resolve(args.device, args.dtype, where="-")
    check_settings(split=args.split, limit=args.limit, max_new_tokens=args.max_new_tokens,
                   batch_size=args.batch_size, backend=args.backend)
    check_loadable(args.model)
    config = task_config(args.task, args.params)
    task = task_from_config(config)
    task.examples(args.split, 1)  # an empty split fails here, before the model loads
    console = Console(stderr=True)
    console.print(f"[dim]task {json.dumps(task.config())}[/dim]")
    loaded = load_model(args.model, dtype=placement.dtype, device=placement.device)
    from pefthub.evaluation import evaluate

    console.print(f"[dim]evaluating {args.model} on {task.name} ({args.split}, first {args.limit}) with lm-eval "
                  f"on {placement.device} in {placement.dtype}[/dim]")
    with Precision(placement.torch_dtype).autocast(placement.torch_device):
        result = evaluate(loaded.model, loaded.tokenizer, task, split=args.split, limit=args.limit,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, backend=args.backend)
    s = result.summary
    stem = output_stem(args.model, config, args.split, s["protocol"]["task_config_hash"])
    samples_path = args.out / f"{stem}.samples.jsonl"
    summary_path = args.out / f"{stem}.json"
    atomic_write_text(samples_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.samples))
    summary = {**s, "model": args.model, "samples_file": samples_path.name, "compute": placement.record()}
    atomic_write_text(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")

    out = Console()
    out.print(f"[bold]{task.name}[/bold] {args.split}: accuracy [bold]{s['accuracy']:.1%}[/bold] "
              f"(95% CI {s['ci_low']:.1%}–{s['ci_high']:.1%}, Wilson), {s['correct']}/{s['n']} correct")
    out.print(f"strict-match {s['metrics']['exact_match,strict-match']:.1%}, "
              f"flexible-extract {s['metrics']['exact_match,flexible-extract']:.1%}; "
              f"lm-eval {s['protocol']['lm_eval_version']}, task config {s['protocol']['task_config_hash'][:12]}, "
              f"greedy, max {s['protocol']['max_new_tokens']} new tokens, backend {s['protocol']['backend']}, "
              f"{s['seconds']:.0f} s")
    out.print(f"samples: {samples_path}")
    out.print(f"summary: {summary_path}")
    return 0

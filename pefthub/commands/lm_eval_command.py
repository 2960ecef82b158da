"""lm-eval's own command line with pefthub's lm-eval models registered (``--model pefthub``: greedy
``generate_until`` on the fused decoder). Every argument after ``lm-eval`` goes to lm-eval unchanged;
``pefthub lm-eval --help`` is lm-eval's help. ``python -m pefthub.lm_eval_cli ARGS`` is the same.

  pefthub lm-eval --model pefthub --model_args pretrained=smollm2-135m-instruct --tasks gsm8k --limit 20
  pefthub lm-eval run --model pefthub --model_args pretrained=./ckpt,peft=./adapter --tasks my_task \\
      --include_path ./tasks --apply_chat_template --log_samples --output_path ./out
  pefthub lm-eval ls tasks
"""

from __future__ import annotations

NAME = "lm-eval"
HELP = "lm-eval's own command line with pefthub's models registered (--model pefthub)"
#: pefthub's parser stops at this command; the rest of the command line is lm-eval's (pefthub/cli.py).
PASSTHROUGH = True


def add_arguments(parser) -> None:
    """No arguments of its own: pefthub/cli.py hands everything after the command to :func:`run`
    as ``args.passthrough``."""


def run(args) -> int:
    from pefthub.lm_eval_cli import main

    return main(list(getattr(args, "passthrough", [])))

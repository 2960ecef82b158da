"""lm-eval's own command line with pefthub's lm-eval models registered: ``python -m pefthub.lm_eval_cli
ARGS`` (and ``pefthub lm-eval ARGS``) is ``lm-eval ARGS`` with ``--model pefthub`` available.

Why a wrapper: lm-eval (0.4.13, the newest on PyPI) finds models in a fixed map of its own and
discovers no plugins, so a model exists on its command line only once the module registering it is
imported. ARGS go to lm-eval's own entry point unchanged (``run``, ``ls``, ``validate``, or the
legacy form without a subcommand; ``--include_path``, ``--log_samples``, ``--output_path``,
``--apply_chat_template`` and every other flag mean what lm-eval's documentation says).
"""

from __future__ import annotations

import sys


def register() -> list[str]:
    """Register pefthub's models in lm-eval's model registry; their names there."""
    from pefthub.evaluation.fused_backend import LM_EVAL_NAME

    return [LM_EVAL_NAME]


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's command line on ``argv`` (default: this process's arguments) with pefthub's
    models registered; lm-eval's own exit status (help and argument errors exit as lm-eval does)."""
    register()
    from lm_eval.__main__ import cli_evaluate

    args = sys.argv[1:] if argv is None else list(argv)
    saved = sys.argv
    sys.argv = ["lm-eval", *args]  # lm-eval's parser reads sys.argv itself
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())

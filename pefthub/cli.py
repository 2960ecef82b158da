"""`pefthub` command line. Each subcommand lives in its own module under ``pefthub/commands/``
exposing ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.

Errors caused by input (:class:`PefthubError`) print one line and exit 2; anything else prints one
line and exits 1. ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from pefthub import __version__, commands
from pefthub.errors import PefthubError


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"pefthub.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pefthub",
        description="Benchmark parameter-efficient fine-tuning methods under matched budgets.",
    )
    parser.add_argument("--version", action="version", version=f"pefthub {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.__doc__ or module.HELP,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, except that a command whose module sets ``PASSTHROUGH = True``
    (``lm-eval``) gets every argument after its name unparsed, as ``args.passthrough``."""
    at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if at is not None and argv[at] in {m.NAME for m in _command_modules() if getattr(m, "PASSTHROUGH", False)}:
        args = parser.parse_args(argv[:at + 1])
        args.passthrough = argv[at + 1:]
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse(parser, sys.argv[1:] if argv is None else list(argv))
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except PefthubError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

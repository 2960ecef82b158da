"""One rich console for the CLI: wide enough for result tables even when output is piped."""

from __future__ import annotations

import shutil
import sys

from rich.console import Console


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else max(160, shutil.get_terminal_size((160, 40)).columns)
    return Console(file=stream, width=width)

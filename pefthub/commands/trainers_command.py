"""List registered trainers: the algorithm each runs, the plugin that registered it, and its
options (``--option key=value`` of ``pefthub train``, ``trainer_options`` of a suite) with help
text and defaults."""

from __future__ import annotations

import json

NAME = "trainers"
HELP = "list trainers, the algorithm each runs and their options"


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="show only this trainer")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def describe_trainers(name: str | None = None) -> list[dict]:
    from pefthub import plugins
    from pefthub.settings import accepted

    registry = plugins.trainers()
    out = []
    for n in ([name] if name else list(registry)):
        cls = registry.get(n)
        out.append({"name": n, "plugin": registry.owner[n], "algorithm": cls.algorithm(), "summary": cls.summary,
                    "options": [{"name": f, "help": h, "default": d, "accepts": accepted(cls.options_class)[f]}
                    for f, h, d in cls.options_class.field_help()]})
    return out


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    trainers = describe_trainers(args.name)
    if args.json:
        print(json.dumps(trainers, indent=2, default=str))
        return 0
    console = Console()
    for t in trainers:
        table = Table(title=f"[bold]{t['name']}[/bold] ({t['plugin']}; runs {t['algorithm']}): {t['summary']}",
                      title_justify="left")
        table.add_column("option")
        table.add_column("default")
        table.add_column("accepts")
        table.add_column("help")
        for o in t["options"]:
            table.add_row(o["name"], json.dumps(o["default"]), o["accepts"], o["help"])
        console.print(table)
    return 0

"""List registered tasks with their parameters (help text and defaults), answer format and
rewards. The embedded default task is marked."""

from __future__ import annotations

import json

NAME = "tasks"
HELP = "list tasks, their parameters and rewards"


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="show only this task")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def describe_tasks(name: str | None = None) -> list[dict]:
    from pefthub import plugins
    from pefthub.settings import accepted
    from pefthub.tasks import DEFAULT_TASK

    registry = plugins.tasks()
    out = []
    for n in ([name] if name else list(registry)):
        cls = registry.get(n)
        out.append({
            "name": n, "plugin": registry.owner[n], "description": cls.description,
            "answer_format": getattr(cls.answer_format, "name", ""), "reward": cls.reward,
            "format_reward": cls.format_reward,
            "default_task": DEFAULT_TASK if DEFAULT_TASK["name"] == n else None,
            "params": [{"name": f, "help": h, "default": d, "accepts": accepted(cls.params_class)[f]}
                       for f, h, d in cls.params_class.field_help()],
        })
    return out


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    tasks = describe_tasks(args.name)
    if args.json:
        print(json.dumps(tasks, indent=2, default=str))
        return 0
    console = Console()
    for t in tasks:
        caption = f"answer format: {t['answer_format']}; reward: {t['reward']} (format reward: {t['format_reward']}, off by default)"
        if t["default_task"]:
            params = {k: v for k, v in t["default_task"].items() if k != "name"}
            caption += f"\ndefault task: {t['name']} with {json.dumps(params)}"
        table = Table(title=f"[bold]{t['name']}[/bold] ({t['plugin']}): {t['description']}", title_justify="left",
                      caption=caption, caption_justify="left")
        table.add_column("parameter")
        table.add_column("default")
        table.add_column("accepts")
        table.add_column("help")
        for p in t["params"]:
            table.add_row(p["name"], json.dumps(p["default"]), p["accepts"], p["help"])
        console.print(table)
    return 0

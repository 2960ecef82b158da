"""List registered fine-tuning methods, their config fields (with help text and defaults), the
trainers each supports, and what each does beyond its textbook definition."""

from __future__ import annotations

import json

NAME = "methods"
HELP = "list fine-tuning methods, their config fields and supported trainers"


def add_arguments(parser) -> None:
    parser.add_argument("name", nargs="?", help="show only this method")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def describe_methods(name: str | None = None) -> list[dict]:
    from pefthub import plugins

    registry = plugins.methods()
    names = [name] if name else list(registry)
    out = []
    for n in names:
        cls = registry.get(n)
        out.append({
            "name": n, "plugin": registry.owner[n], "summary": cls.summary, "notes": cls.notes,
            "trainers": list(cls.supported_trainers), "identity_at_init": cls.identity_at_init,
            "mergeable": cls.mergeable, "exact_params": cls.exact_params,
            "fields": [{"name": f, "help": h, "default": d} for f, h, d in cls.config_class.field_help()],
        })
    return out


def run(args) -> int:
    from rich.console import Console
    from rich.table import Table

    methods = describe_methods(args.name)
    if args.json:
        print(json.dumps(methods, indent=2, default=str))
        return 0
    console = Console()
    for m in methods:
        flags = [f"trainers: {', '.join(m['trainers'])}",
                 "identity at init" if m["identity_at_init"] else "not identity at init",
                 "mergeable" if m["mergeable"] else "not mergeable",
                 "exact params budgets" if m["exact_params"] else "nearest params budget"]
        title = f"[bold]{m['name']}[/bold] ({m['plugin']}): {m['summary']}"
        table = Table(title=title, title_justify="left", caption="; ".join(flags)
                      + (f"\nnote: {m['notes']}" if m["notes"] else ""), caption_justify="left")
        table.add_column("field")
        table.add_column("default")
        table.add_column("help")
        for f in m["fields"]:
            table.add_row(f["name"], repr(f["default"]), f["help"])
        console.print(table)
    return 0

"""List loaded plugins: name, distribution, version, and the hooks each implements.

PEFTHUB_LOAD_PLUGINS=a,b loads only those third-party plugins (built-ins always load);
PEFTHUB_DISABLE_PLUGIN_AUTOLOAD=1 loads none.
"""

from __future__ import annotations

import json
import sys

NAME = "plugins"
HELP = "list installed plugins and the hooks they implement"


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from dataclasses import asdict

    from pefthub.console import console
    from rich.table import Table

    from pefthub import plugins

    host = plugins.host()
    for name in host.unmatched_allowlist:
        print(f"warning: PEFTHUB_LOAD_PLUGINS names '{name}', which matches no installed plugin or distribution",
              file=sys.stderr)
    infos = list(host.info.values())
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return 0
    table = Table(title="pefthub plugins")
    for col in ("plugin", "distribution", "version", "hooks", "built-in"):
        table.add_column(col)
    for info in infos:
        table.add_row(info.name, info.distribution, info.version, ", ".join(info.hooks),
                      "yes" if info.builtin else "")
    console().print(table)
    return 0

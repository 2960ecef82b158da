"""Build the static leaderboard site from result files, or serve a built site locally.

  pefthub site build [leaderboards/] [-o DIR]   read every suite's results, write the site
  pefthub site serve [DIR] [--port 8000]        serve a built site on http://127.0.0.1:PORT/

The built site opens straight from disk (DIR/index.html); a run page's completions load from the
suite's items file, which browsers only read over HTTP (any static host, or `serve`). Corrupt or foreign
result files are reported (file and reason) on stderr and on the site, and skipped.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import os
import re
import sys
from pathlib import Path

from pefthub.errors import ConfigError

NAME = "site"
HELP = "build the static leaderboard site from results (or serve it locally)"
DEFAULT_ROOT = "leaderboards"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="site_action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="write the site from <root>/<suite>/results/*.json",
                           description="Read every suite's result files under ROOT and write a static site "
                                       "that works offline, opened from disk.")
    build.add_argument("root", nargs="?", default=DEFAULT_ROOT,
                       help="directory holding <suite>/results/ (or one suite directory); default: %(default)s")
    build.add_argument("-o", "--output", default=None,
                       help="output directory (default: ROOT/site); replaced on each build")
    build.add_argument("--max-samples", type=int, default=200,
                       help="completions a run page lists when they load, the rest on request (default: %(default)s)")
    serve = sub.add_parser("serve", help="serve a built site on 127.0.0.1 (run pages' completions need a server)")
    serve.add_argument("directory", nargs="?", default=f"{DEFAULT_ROOT}/site", help="built site (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default: %(default)s; 0 picks one)")


def run(args: argparse.Namespace) -> int:
    if args.site_action == "build":
        return _build(args)
    return _serve(args)


def _build(args: argparse.Namespace) -> int:
    from pefthub.site import build_site  # deferred so `pefthub --help` stays fast

    if args.max_samples < 0:
        raise ConfigError(f"--max-samples must be >= 0, got {args.max_samples}")
    root = Path(args.root)
    out = Path(args.output) if args.output else root / "site"
    result = build_site(root, out, max_samples=args.max_samples)
    for problem in result.problems:
        print(f"warning: skipped {problem.file}: {problem.reason}", file=sys.stderr)
    runs = sum(result.suites.values())
    print(f"built {len(result.suites)} suite(s), {runs} run(s), {result.pages} run page(s)"
          + (f"; {len(result.problems)} file(s) skipped (see above)" if result.problems else ""), file=sys.stderr)
    print(result.index.resolve())
    return 0


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """The standard static handler, plus ``Range: bytes=A-B`` answered with 206 and those bytes, as
    static hosts answer it, so a run page fetches only its run's part of the suite's items file."""

    def send_head(self):
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        path = self.translate_path(self.path)
        if wanted is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start, end = int(wanted[1]), min(int(wanted[2]) if wanted[2] else size - 1, size - 1)
        if start > end:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(end - start + 1)
        self.send_response(206)
        self.send_header("Content-Type", self.guess_type(path))
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        return io.BytesIO(data)


def _serve(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not (directory / "index.html").is_file():
        raise ConfigError(f"{directory} has no index.html; build it first with `pefthub site build -o {directory}`")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    handler = functools.partial(RangeHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    host, port = server.server_address[:2]
    print(f"serving {directory.resolve()} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0

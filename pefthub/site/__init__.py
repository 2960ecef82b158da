"""The static leaderboard site: a pure function of the result files.

``build_site(root, out)`` reads ``<root>/<suite>/results/*.json`` (through :mod:`pefthub.results`),
one file at a time, and writes HTML, SVG charts, CSS/JS assets, CSV/JSON downloads and one data
file per suite that run pages load their samples from; everything but those samples works opened
from disk with no network. Nothing here imports torch or loads a model.

Modules: ``load`` (suites and runs, streamed), ``aggregate`` (the report layer's rows, presented),
``metrics`` + ``metrics.toml`` (the metric schema and formats), ``svg``/``plots`` (charts),
``items`` (the per-suite data file), ``render`` + ``templates/`` (pages), ``build`` (writing the
site), ``assets/`` (CSS/JS).
"""

from pefthub.site.build import BuildResult, build_site

__all__ = ["BuildResult", "build_site"]

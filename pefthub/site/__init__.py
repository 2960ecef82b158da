"""The static leaderboard site: a pure function of the result files.

``build_site(root, out)`` reads ``<root>/<suite>/results/*.json`` (through :mod:`pefthub.results`),
and writes HTML, inline SVG charts, CSS/JS assets and CSV/JSON downloads that work opened from
disk with no network. Nothing here imports torch or loads a model.

Modules: ``load`` (suites and runs), ``aggregate`` (seeds, learning-rate selection, fronts),
``metrics`` + ``metrics.toml`` (the metric schema and formats), ``svg``/``plots`` (charts),
``render`` + ``templates/`` (pages), ``build`` (writing the site), ``assets/`` (CSS/JS).
"""

from pefthub.site.build import BuildResult, build_site

__all__ = ["BuildResult", "build_site"]

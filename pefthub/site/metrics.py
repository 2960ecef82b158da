"""The metric schema (``metrics.toml``) and how each format turns a number into text.

Formatting is hand-written because it is a dozen lines per unit and must stay dependency-free;
every function returns plain text, escaping happens in the templates.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pefthub.report.stats import is_number  # noqa: F401 (re-exported: the site reads numbers by this rule)

SCHEMA_FILE = Path(__file__).with_name("metrics.toml")
FORMATS = ("percent", "pp", "count", "integer", "bytes", "duration", "sci", "float")
MISSING = "—"


@dataclass(frozen=True)
class Metric:
    key: str
    name: str
    short: str
    format: str
    description: str
    higher_is_better: bool | None = None

    def fmt(self, value: Any) -> str:
        return format_value(self.format, value)

    @property
    def direction(self) -> str:
        """An arrow for headers: which way is better."""
        return {True: "↑", False: "↓"}.get(self.higher_is_better, "")


@lru_cache(maxsize=1)
def load_metrics(path: str | Path = SCHEMA_FILE) -> dict[str, Metric]:
    """Parse and check the metric schema; a malformed schema is a packaging bug, so it raises."""
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    metrics = {}
    for key, spec in data.get("metrics", {}).items():
        unknown = set(spec) - {"name", "short", "format", "description", "higher_is_better"}
        if unknown:
            raise ValueError(f"{path}: metric {key!r} has unknown fields {sorted(unknown)}")
        if spec.get("format") not in FORMATS:
            raise ValueError(f"{path}: metric {key!r} has format {spec.get('format')!r}, expected one of {FORMATS}")
        metrics[key] = Metric(key=key, name=spec["name"], short=spec.get("short", spec["name"]),
                              format=spec["format"], description=spec.get("description", ""),
                              higher_is_better=spec.get("higher_is_better"))
    return metrics


def metric(key: str) -> Metric:
    """The schema entry for ``key``; an unknown key (a trainer's new curve) gets a plain fallback."""
    known = load_metrics()
    if key in known:
        return known[key]
    return Metric(key=key, name=key.replace("_", " ").capitalize(), short=key, format="float", description="")




def format_value(kind: str, value: Any) -> str:
    if not is_number(value):
        return MISSING if value is None else str(value)
    if kind == "percent":
        return f"{100 * value:.1f}%"
    if kind == "pp":
        return f"{100 * value:+.1f} pp"
    if kind == "count":
        return compact_count(value)
    if kind == "integer":
        return f"{round(value):,}"
    if kind == "bytes":
        return human_bytes(value)
    if kind == "duration":
        return human_duration(value)
    if kind == "sci":
        return sci(value)
    return f"{value:.4g}"


def compact_count(value: float) -> str:
    """13 → "13", 1234 → "1.23K", 134515008 → "135M" (exact figures go in a tooltip)."""
    sign = "-" if value < 0 else ""
    value = abs(value)
    for threshold, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= threshold:
            scaled = value / threshold
            digits = 0 if scaled >= 100 else 1 if scaled >= 10 else 2
            return f"{sign}{scaled:.{digits}f}{suffix}"
    return f"{sign}{value:,.0f}" if float(value).is_integer() else f"{sign}{value:.3g}"


def human_bytes(value: float) -> str:
    """Binary units: 52 → "52 B", 2_400_000 → "2.29 MiB"."""
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.3g} {unit}"
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    """4.2 → "4.2 s", 812 → "13 min 32 s", 7300 → "2 h 01 min"."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def sci(value: float) -> str:
    """Learning rates: 0.0001 → "1e-4", 0.0005 → "5e-4", 0.02 → "2e-2", 0 → "0"."""
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = f"{value / 10 ** exponent:.3g}"
    if mantissa in ("10", "-10"):  # rounding carried into the next decade
        mantissa, exponent = mantissa[:-1], exponent + 1
    return f"{mantissa}e{exponent}"

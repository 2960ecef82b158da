"""A tiny SVG writer and chart axes.

Hand-written on purpose: the site must open offline from disk, and the charts it needs (a log-x
scatter with error bars, step fronts, line curves) are a few hundred lines of SVG, far less than
vendoring a multi-megabyte plotting bundle. Every attribute value and text node goes through
:func:`markupsafe.escape`, so data (method names, configs) can never become markup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from markupsafe import Markup, escape


def _attr_name(name: str) -> str:
    name = name.rstrip("_").replace("_", "-")
    # Attribute names only ever come from this package's code; refusing event handlers here
    # means a future chart cannot add one by accident.
    if not name.replace("-", "").replace(":", "").isalnum() or name.lower().startswith("on"):
        raise ValueError(f"refusing SVG attribute name {name!r}")
    return name


def number(value: float) -> str:
    """A coordinate to 0.1 px (charts are a few hundred px wide), without trailing zeros."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


_num = number


def tag(name: str, attrs: dict | None = None, *children: object) -> Markup:
    """``<name attrs>children</name>``; strings are escaped, :class:`Markup` is kept, floats rounded."""
    parts = []
    for key, value in (attrs or {}).items():
        if value is None or value is False:
            continue
        if isinstance(value, float):
            value = _num(value)
        parts.append(f' {_attr_name(key)}="{escape(value)}"')
    inner = "".join(str(c) if isinstance(c, Markup) else str(escape(c)) for c in children if c is not None)
    return Markup(f"<{name}{''.join(parts)}>{inner}</{name}>")


def group(*children: object, **attrs: object) -> Markup:
    return tag("g", attrs, *children)


def text(x: float, y: float, content: object, **attrs: object) -> Markup:
    return tag("text", {"x": x, "y": y, **attrs}, content)


def line(x1: float, y1: float, x2: float, y2: float, **attrs: object) -> Markup:
    return tag("line", {"x1": x1, "y1": y1, "x2": x2, "y2": y2, **attrs})


def path(d: str, **attrs: object) -> Markup:
    """``<path d=…>`` (unfilled unless ``fill`` says otherwise)."""
    return tag("path", {"d": d, "fill": attrs.pop("fill", "none"), **attrs})


def polyline(points: list[tuple[float, float]], **attrs: object) -> Markup:
    return tag("polyline", {"points": " ".join(f"{_num(x)},{_num(y)}" for x, y in points), "fill": "none", **attrs})


def title(content: object) -> Markup:
    """A native tooltip: the browser shows it on hover, no script needed."""
    return tag("title", {}, content)


def svg(width: float, height: float, *children: object, **attrs: object) -> Markup:
    return tag("svg", {"xmlns": "http://www.w3.org/2000/svg", "viewBox": f"0 0 {_num(width)} {_num(height)}",
                       "width": width, "height": height, **attrs}, *children)


def marker(shape: str, x: float, y: float, size: float, **attrs: object) -> Markup:
    """circle | diamond | square | triangle centred on (x, y)."""
    if shape == "circle":
        return tag("circle", {"cx": x, "cy": y, "r": size, **attrs})
    if shape == "square":
        s = size * 0.9
        return tag("rect", {"x": x - s, "y": y - s, "width": 2 * s, "height": 2 * s, **attrs})
    if shape == "triangle":
        s = size * 1.2
        pts = [(x, y - s), (x + s, y + s * 0.8), (x - s, y + s * 0.8)]
    else:  # diamond
        s = size * 1.25
        pts = [(x, y - s), (x + s, y), (x, y + s), (x - s, y)]
    return tag("polygon", {"points": " ".join(f"{_num(a)},{_num(b)}" for a, b in pts), **attrs})


# ---- axes ------------------------------------------------------------------------------------
def nice_step(span: float, target_ticks: int = 5) -> float:
    """A 1/2/5 x 10^k step giving about ``target_ticks`` ticks over ``span``."""
    raw = span / max(1, target_ticks)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


@dataclass
class LinearAxis:
    lo: float
    hi: float
    start: float          # pixel of lo
    end: float            # pixel of hi
    label: Callable[[float], str] = lambda v: f"{v:g}"

    @classmethod
    def nice(cls, lo: float, hi: float, start: float, end: float, *, label=None, clamp: tuple | None = None,
             target_ticks: int = 5) -> "LinearAxis":
        """An axis over [lo, hi] widened to whole ticks (and to a visible span when lo == hi)."""
        if hi <= lo:
            pad = abs(lo) * 0.1 or 1.0
            lo, hi = lo - pad, hi + pad
        step = nice_step(hi - lo, target_ticks)
        lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
        if clamp:
            lo, hi = max(clamp[0], lo), min(clamp[1], hi)
        return cls(lo, hi, start, end, label or (lambda v: f"{v:g}"))

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def ticks(self, target_ticks: int = 5) -> list[float]:
        step = nice_step(self.hi - self.lo, target_ticks)
        first = math.ceil(self.lo / step - 1e-9) * step
        out, v = [], first
        while v <= self.hi + step * 1e-9:
            out.append(round(v, 12))
            v += step
        return out


@dataclass
class LogAxis:
    lo: float
    hi: float
    start: float
    end: float
    label: Callable[[float], str] = lambda v: f"{v:g}"

    @classmethod
    def padded(cls, lo: float, hi: float, start: float, end: float, *, label=None, factor: float = 2.0) -> "LogAxis":
        """A log axis a ``factor`` wider than the data on each side (so the largest point, full
        fine-tuning, sits at the right edge without touching it)."""
        lo, hi = max(lo, 1e-12), max(hi, 1e-12)
        return cls(lo / factor, hi * factor, start, end, label or (lambda v: f"{v:g}"))

    def __call__(self, value: float) -> float:
        a, b = math.log10(self.lo), math.log10(self.hi)
        return self.start + (math.log10(value) - a) / (b - a) * (self.end - self.start)

    def ticks(self) -> list[float]:
        """Every decade inside the range (every other one when there are more than eight); a range
        narrower than two decades gets 1-2-5 ticks instead, so it is never unlabelled."""
        first, last = math.ceil(math.log10(self.lo) - 1e-9), math.floor(math.log10(self.hi) + 1e-9)
        decades = list(range(first, last + 1))
        if len(decades) < 2:
            return [m * 10.0 ** d for d in range(first - 1, last + 2) for m in (1, 2, 5)
                    if self.lo <= m * 10.0 ** d <= self.hi]
        stride = 1 if len(decades) <= 8 else 2
        return [10.0 ** d for d in decades[::stride]]

    def minor_ticks(self) -> list[float]:
        first, last = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
        return [m * 10.0 ** d for d in range(first, last + 1) for m in range(2, 10) if self.lo <= m * 10.0 ** d <= self.hi]

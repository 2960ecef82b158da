"""The site's charts: accuracy vs trainable parameters (the paper's Figure 1) and Pareto fronts of
accuracy vs cost as inline SVG, and per-run training curves as compact specs site.js draws.

Every SVG chart returns :class:`markupsafe.Markup`; all data reaches the SVG through :mod:`svg`,
which escapes it. Points carry ``class="pt"`` so tests (and readers of the source) can count them.
A new index chart is one more function here returning ``(Markup, points)`` that
:func:`pefthub.site.pages.suite_context` places; :func:`_frame` draws any chart's axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from markupsafe import Markup

from pefthub.report.curves import BudgetCurves, Curve
from pefthub.site import svg
from pefthub.site.aggregate import LR_UNSELECTED, Row
from pefthub.site.metrics import format_value, metric, sci

# Colour-blind-safe qualitative palette (Okabe-Ito, extended with Tableau tones for >8 methods).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7A5195", "#8C6D31",
           "#444444", "#B07AA1"]
#: Built-in methods get the same colour on every page and every suite, in this order.
METHOD_ORDER = ["tinylora", "lora_xs", "lora", "vera", "bitfit", "prompt_tuning", "full"]
#: (marker, dash pattern) per trainer: SFT and RL are told apart by shape and line, not colour.
TRAINER_STYLES = {"sft": ("circle", None), "grpo": ("diamond", "7 4")}
OTHER_TRAINER_STYLES = [("square", "2 3"), ("triangle", "9 3 2 3")]
TRAINER_LABELS = {"sft": "SFT", "grpo": "GRPO", "none": "none"}
LEGEND_LABELS = {"sft": "SFT (supervised)", "grpo": "GRPO (RL)"}
LEGEND_CHARS = 20
BASE_COLOUR = "#6b7280"
FONT = 12


def trainer_label(trainer: str) -> str:
    return TRAINER_LABELS.get(trainer, trainer)


@dataclass
class Styles:
    """Stable colour per method and marker/dash per trainer across the whole site."""

    colours: dict[str, str]
    trainers: dict[str, tuple[str, str | None]]

    @classmethod
    def for_names(cls, methods: Sequence[str], trainers: Sequence[str]) -> "Styles":
        known = [m for m in METHOD_ORDER if m in methods]
        ordered = known + sorted(set(methods) - set(known))
        colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(ordered)}
        styles, extra = {}, iter(OTHER_TRAINER_STYLES * 4)
        for t in sorted(set(trainers), key=lambda t: (t not in TRAINER_STYLES, t)):
            styles[t] = TRAINER_STYLES.get(t) or next(extra, ("square", "2 3"))
        return cls(colours, styles)

    def colour(self, method: str) -> str:
        return self.colours.get(method, PALETTE[-1])

    def trainer(self, trainer: str) -> tuple[str, str | None]:
        return self.trainers.get(trainer, ("square", "2 3"))


def _shorten(name: str, limit: int = LEGEND_CHARS) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def count_tick(v: float) -> str:
    """Decade ticks: 1, 10, 100, 1K, 10K, 100K, 1M, ... (no "1.00K")."""
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if v >= threshold:
            return f"{v / threshold:g}{suffix}"
    return f"{v:g}"


def _percent_label(v: float) -> str:
    return f"{100 * v:.0f}%" if abs(100 * v - round(100 * v)) < 1e-6 else f"{100 * v:.1f}%"


def _point_tooltip(row: Row) -> str:
    interval = ""
    if row.ci_low is not None and row.ci_high is not None:
        interval = f" [{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
    lr = f"lr {sci(row.learning_rate)}" if row.learning_rate is not None else "lr —"
    if row.lr_selection == LR_UNSELECTED:
        lr += " (unselected: no validation score)"
    seeds = f"{row.seeds} seed{'s' if row.seeds != 1 else ''}"
    return (f"{row.name} · {trainer_label(row.trainer)} · {row.trainable_params:,} params · {lr} · {seeds}\n"
            f"test accuracy {100 * row.accuracy:.1f}%{interval}")


def _frame(x_axis, y_axis, x_ticks, y_ticks, x_title: str, y_title: str, box) -> list[Markup]:
    """Grid, ticks, tick labels and axis titles for the plot area ``box`` = (left, top, right, bottom);
    grid lines and axes are one path each and tick labels share their group's attributes, so a chart
    costs a few hundred bytes besides its data (a site has one page, with charts, per run)."""
    left, top, right, bottom = box
    ys, xs = [y_axis(v) for v in y_ticks], [x_axis(v) for v in x_ticks]
    n = svg.number
    grid = "".join(f"M{n(left)} {n(y)}H{n(right)}" for y in ys) + "".join(f"M{n(x)} {n(top)}V{n(bottom)}" for x in xs)
    parts = [svg.tag("rect", {"x": left, "y": top, "width": right - left, "height": bottom - top, "class": "plot-bg"})]
    if grid:
        parts.append(svg.path(grid, class_="grid"))
    parts.append(svg.group(*(svg.text(left - 8, y + 4, y_axis.label(v)) for v, y in zip(y_ticks, ys)),
                           class_="tick", text_anchor="end"))
    parts.append(svg.group(*(svg.text(x, bottom + 18, x_axis.label(v)) for v, x in zip(x_ticks, xs)),
                           class_="tick", text_anchor="middle"))
    parts.append(svg.path(f"M{n(left)} {n(top)}V{n(bottom)}H{n(right)}", class_="axis"))
    parts.append(svg.text((left + right) / 2, bottom + 40, x_title, class_="axis-title", text_anchor="middle"))
    cy = (top + bottom) / 2
    parts.append(svg.text(16, cy, y_title, class_="axis-title", text_anchor="middle",
                          transform=f"rotate(-90 16 {cy:.1f})"))
    return parts


def _y_axis_for(values: list[float], top: float, bottom: float) -> svg.LinearAxis:
    return svg.LinearAxis.nice(min(values), max(values), bottom, top, label=_percent_label, clamp=(0.0, 1.0))


def _error_bar(x: float, y_low: float, y_high: float, colour: str) -> Markup:
    cap = 3.5
    return svg.group(svg.line(x, y_low, x, y_high), svg.line(x - cap, y_low, x + cap, y_low),
                     svg.line(x - cap, y_high, x + cap, y_high), class_="ci", stroke=colour)


def _base_reference(base: Row | None, y_axis, left: float, right: float, *, detailed: bool = True) -> list[Markup]:
    """The base model's accuracy as a dashed line; ``detailed`` adds its CI band (the legend
    carries the label: inside the plot it would sit on top of the small adapters' points)."""
    if base is None or base.accuracy is None:
        return []
    parts = []
    if detailed and base.ci_low is not None and base.ci_high is not None:
        y1, y2 = y_axis(max(base.ci_low, y_axis.lo)), y_axis(min(base.ci_high, y_axis.hi))
        parts.append(svg.tag("rect", {"x": left, "y": min(y1, y2), "width": right - left, "height": abs(y1 - y2),
                                      "class": "base-band"}))
    y = y_axis(base.accuracy)
    parts.append(svg.line(left, y, right, y, class_="base-line", stroke=BASE_COLOUR))
    return [svg.group(*parts, class_="base-ref")]


def _legend(styles: Styles, methods: list[str], trainers: list[str], x: float, y: float, *,
            base: Row | None, hollow: bool) -> Markup:
    parts, row_h = [], 18
    parts.append(svg.text(x, y, "Method", class_="legend-title"))
    y += row_h
    for m in methods:
        colour = styles.colour(m)
        parts.append(svg.line(x, y - 4, x + 22, y - 4, stroke=colour, class_="series"))
        parts.append(svg.marker("circle", x + 11, y - 4, 4, fill=colour))
        parts.append(svg.group(svg.title(m), svg.text(x + 30, y, _shorten(m), class_="legend-label")))
        y += row_h
    y += 6
    parts.append(svg.text(x, y, "Trainer", class_="legend-title"))
    y += row_h
    for t in trainers:
        shape, dash = styles.trainer(t)
        parts.append(svg.line(x, y - 4, x + 22, y - 4, stroke="#374151", stroke_dasharray=dash, class_="series"))
        parts.append(svg.marker(shape, x + 11, y - 4, 4, fill="#374151"))
        parts.append(svg.text(x + 30, y, _shorten(LEGEND_LABELS.get(t, trainer_label(t))), class_="legend-label"))
        y += row_h
    if base is not None and base.accuracy is not None:
        y += 6
        parts.append(svg.tag("rect", {"x": x, "y": y - 10, "width": 22, "height": 12, "class": "base-band"}))
        parts.append(svg.line(x, y - 4, x + 22, y - 4, class_="base-line", stroke=BASE_COLOUR))
        parts.append(svg.text(x + 30, y, f"base model {100 * base.accuracy:.1f}%", class_="legend-label"))
        y += row_h
    if hollow:
        parts.append(svg.marker("circle", x + 11, y - 4, 4, fill="#ffffff", stroke="#374151"))
        parts.append(svg.text(x + 30, y, "LR unselected", class_="legend-label"))
    return svg.group(*parts, class_="legend")


def params_accuracy_plot(rows: list[Row], base: Row | None, styles: Styles) -> tuple[Markup, int, list[Row]]:
    """Accuracy (±CI) against trainable parameters on a log axis, one series per (method, trainer),
    the base model as a horizontal band, full fine-tuning marked at the right edge.

    Returns the SVG, the number of points drawn, and the rows left out (no params or no score).
    """
    plotted = [r for r in rows if not r.is_base and r.accuracy is not None and (r.trainable_params or 0) > 0]
    skipped = [r for r in rows if not r.is_base and r not in plotted]
    width, height = 970, 470
    box = left, top, right, bottom = 72, 18, 730, height - 58
    if not plotted:
        return Markup(""), 0, skipped
    params = [r.trainable_params for r in plotted]
    x_axis = svg.LogAxis.padded(min(params), max(params), left, right, label=count_tick, factor=2.0)
    y_values = [v for r in plotted for v in (r.accuracy, r.ci_low, r.ci_high) if v is not None]
    if base is not None and base.accuracy is not None:
        y_values += [v for v in (base.accuracy, base.ci_low, base.ci_high) if v is not None]
    y_axis = _y_axis_for(y_values, top, bottom)
    parts = _frame(x_axis, y_axis, x_axis.ticks(), y_axis.ticks(), "Trainable parameters (log scale)",
                   "Test accuracy", box)
    parts += [svg.line(x_axis(v), bottom, x_axis(v), bottom + 4, class_="axis") for v in x_axis.minor_ticks()]
    parts += _base_reference(base, y_axis, left, right)

    full = [r for r in plotted if r.method == "full"]
    if full:
        x = x_axis(max(r.trainable_params for r in full))
        parts.append(svg.group(svg.line(x, top, x, bottom, class_="full-line"),
                               svg.text(x - 4, top + 12, "full fine-tuning", class_="full-label", text_anchor="end"),
                               class_="full-ref"))

    trainers = sorted({r.trainer for r in plotted}, key=lambda t: list(styles.trainers).index(t)
                      if t in styles.trainers else 99)
    dodge = {t: (i - (len(trainers) - 1) / 2) * 5.0 for i, t in enumerate(trainers)}
    series: dict[tuple[str, str], list[Row]] = {}
    for row in sorted(plotted, key=lambda r: (r.name, r.trainer, r.trainable_params, r.learning_rate or 0)):
        series.setdefault((row.name, row.trainer), []).append(row)

    lines, points = [], []
    for (method, trainer), members in series.items():
        colour = styles.colour(method)
        shape, dash = styles.trainer(trainer)
        connected = [r for r in members if r.lr_selection != LR_UNSELECTED]
        if len(connected) > 1:
            pts = [(x_axis(r.trainable_params) + dodge[trainer], y_axis(r.accuracy)) for r in connected]
            lines.append(svg.polyline(pts, stroke=colour, stroke_dasharray=dash, class_="series"))
        for r in members:
            x, y = x_axis(r.trainable_params) + dodge[trainer], y_axis(r.accuracy)
            bar = None
            if r.ci_low is not None and r.ci_high is not None:
                bar = _error_bar(x, y_axis(max(r.ci_low, y_axis.lo)), y_axis(min(r.ci_high, y_axis.hi)), colour)
            hollow = r.lr_selection == LR_UNSELECTED
            mark = svg.marker(shape, x, y, 5, fill="#ffffff" if hollow else colour, stroke=colour if hollow else "#ffffff",
                              class_="marker")
            points.append(svg.group(svg.title(_point_tooltip(r)), bar, mark, class_="pt", data_method=method,
                                    data_trainer=trainer, data_params=r.trainable_params,
                                    data_accuracy=f"{r.accuracy:.6f}"))
    parts += lines + points
    methods = [m for m in styles.colours if any(r.name == m for r in plotted)]
    parts.append(_legend(styles, methods, trainers, right + 28, top + 12, base=base,
                         hollow=any(r.lr_selection == LR_UNSELECTED for r in plotted)))
    chart = svg.svg(width, height, *parts, class_="chart params-plot", role="img",
                    aria_label="Test accuracy against trainable parameters")
    return chart, len(points), skipped


# ---- Pareto fronts -----------------------------------------------------------------------------
def _unit(kind: str, max_value: float) -> tuple[float, str]:
    if kind == "bytes":
        for factor, name in ((1024 ** 3, "GiB"), (1024 ** 2, "MiB"), (1024, "KiB")):
            if max_value >= factor:
                return factor, name
        return 1, "B"
    if kind == "duration":
        if max_value >= 2 * 3600:
            return 3600, "h"
        if max_value >= 120:
            return 60, "min"
        return 1, "s"
    return 1, ""


def pareto_plot(rows: list[Row], base: Row | None, styles: Styles, *, cost: Callable[[Row], float | None],
                kind: str, x_title: str, front: list[Row]) -> tuple[Markup, int]:
    """Accuracy against one cost (memory or time): every row as a faint point, the non-dominated
    ones joined by the staircase a reader can pick from."""
    plotted = [r for r in rows if not r.is_base and r.accuracy is not None and cost(r) is not None]
    if not plotted:
        return Markup(""), 0
    width, height = 460, 330
    box = left, top, right, bottom = 64, 14, width - 16, height - 56
    factor, unit = _unit(kind, max(cost(r) for r in plotted))
    costs = [cost(r) / factor for r in plotted]
    x_axis = svg.LinearAxis.nice(min(costs), max(costs), left, right, label=lambda v: f"{v:g}", clamp=(0, math.inf),
                                 target_ticks=4)
    y_values = [r.accuracy for r in plotted] + ([base.accuracy] if base and base.accuracy is not None else [])
    y_axis = _y_axis_for(y_values, top, bottom)
    parts = _frame(x_axis, y_axis, x_axis.ticks(4), y_axis.ticks(), f"{x_title} ({unit})" if unit else x_title,
                   "Test accuracy", box)
    parts += _base_reference(base, y_axis, left, right, detailed=False)
    on_front = {id(r) for r in front}
    if len(front) > 1:
        stairs = []
        for i, r in enumerate(front):
            x, y = x_axis(cost(r) / factor), y_axis(r.accuracy)
            if i:
                stairs.append((x, stairs[-1][1]))
            stairs.append((x, y))
        parts.append(svg.polyline(stairs, class_="front"))
    points = []
    for r in sorted(plotted, key=lambda r: id(r) in on_front):
        shape, _ = styles.trainer(r.trainer)
        x, y = x_axis(cost(r) / factor), y_axis(r.accuracy)
        tip = _point_tooltip(r) + f"\n{x_title.lower()} {format_value(kind, cost(r))}" + (
            " · on the Pareto front" if id(r) in on_front else "")
        points.append(svg.group(svg.title(tip), svg.marker(shape, x, y, 5, fill=styles.colour(r.name), stroke="#ffffff"),
                                class_="pt front-pt" if id(r) in on_front else "pt dominated",
                                data_method=r.name, data_trainer=r.trainer))
    parts += points
    chart = svg.svg(width, height, *parts, class_="chart pareto-plot", role="img",
                    aria_label=f"Test accuracy against {x_title.lower()}")
    return chart, len(points)


# ---- training curves ---------------------------------------------------------------------------
#: Up to this many steps a curve marks each one (and its tooltip lists every value).
MAX_CURVE_MARKS = 80
#: A curve chart's size and plot area (left, top, right, bottom), in px.
CURVE_FRAME = (430, 236, 62, 12, 416, 184)
CURVE_COLOUR = "#0072B2"


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{svg.number(x)},{svg.number(y)}" for x, y in points)


def curve_spec(steps: list[float], values: list[float | None], key: str, *,
               band: list[float | None] | None = None) -> dict[str, str] | None:
    """One training curve against optimizer step, as the few strings site.js draws it from
    (``CURVE_FRAME``): pixel coordinates of the line (gaps, null values, break it into ``;``-separated
    segments), of the ± ``band`` (e.g. reward ± its standard deviation) and of the step markers, tick
    positions with their labels, and one tooltip listing every step's value; ``None`` without values.
    The axes and every label are computed here; a run page carries a chart in a few hundred bytes,
    where an inline SVG cost several times that (a site has one page per run)."""
    info = metric(key)
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None]
    if not pairs:
        return None
    _, _, left, top, right, bottom = CURVE_FRAME
    ys = [v for _, v in pairs]
    if band:
        ys += [v + b for v, b in zip(values, band) if v is not None and b is not None]
        ys += [v - b for v, b in zip(values, band) if v is not None and b is not None]
    xs = [s for s, _ in pairs]
    x_axis = svg.LinearAxis.nice(min(xs), max(xs), left, right, target_ticks=5)
    if info.format == "sci":
        label = sci
    elif info.format == "duration":
        label = lambda v: f"{v:g} s"  # noqa: E731  (axis in seconds, short labels)
    else:
        label = lambda v: f"{v:g}"  # noqa: E731
    y_axis = svg.LinearAxis.nice(min(ys), max(ys), bottom, top, label=label, target_ticks=4)
    x_ticks = [t for t in x_axis.ticks(5) if float(t).is_integer()] or x_axis.ticks(5)
    segments: list[list[tuple[float, float]]] = [[]]
    for s, v in zip(steps, values):
        if v is None:
            segments.append([])
        else:
            segments[-1].append((x_axis(s), y_axis(v)))
    spec = {"label": f"{info.name} against optimizer step", "y-title": info.short,
            "x-ticks": "|".join(f"{svg.number(x_axis(t))}:{x_axis.label(t)}" for t in x_ticks),
            "y-ticks": "|".join(f"{svg.number(y_axis(t))}:{y_axis.label(t)}" for t in y_axis.ticks(4)),
            "line": ";".join(_points(seg) for seg in segments if len(seg) > 1)}
    if band:
        upper = [(x_axis(s), y_axis(v + b)) for s, v, b in zip(steps, values, band) if v is not None and b is not None]
        lower = [(x_axis(s), y_axis(v - b)) for s, v, b in zip(steps, values, band) if v is not None and b is not None]
        if len(upper) > 1:
            spec["band"] = _points(upper + lower[::-1])
    if len(pairs) <= MAX_CURVE_MARKS:
        spec["marks"] = _points([(x_axis(s), y_axis(v)) for s, v in pairs])
        spec["tip"] = f"{info.short} by step: " + " · ".join(f"{s:g}: {info.fmt(v)}" for s, v in pairs)
    else:
        (s0, v0), (s1, v1) = pairs[0], pairs[-1]
        spec["tip"] = f"{info.short}: {len(pairs)} steps, step {s0:g}: {info.fmt(v0)} … step {s1:g}: {info.fmt(v1)}"
    return spec


# ---- budget curves -----------------------------------------------------------------------------
#: The budget axes of :func:`budget_curves_plot`: (title, unit kind, the curve point's value).
BUDGET_AXES = (("Optimizer step", "steps", lambda p: p.step),
               ("Tokens (trained + generated)", "tokens", lambda p: p.tokens),
               ("Training wall time", "duration", lambda p: p.seconds))
#: Panel size and plot area (left, top, right, bottom) in px, and the legend's column width.
BUDGET_PANEL = (320, 270, 58, 14, 304, 214)
BUDGET_LEGEND_COLUMN = 240


def _shade(colour: str, amount: float) -> str:
    """``colour`` mixed towards white (``amount`` > 0) or black (< 0) by ``|amount|``."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    target = 255 if amount > 0 else 0
    return "#" + "".join(f"{round(c + (target - c) * abs(amount)):02x}" for c in rgb)


def _curve_colours(curves: Sequence[Curve], styles: Styles) -> dict[str, str]:
    """The method's site colour per curve; a method at several parameter budgets goes from lighter
    (fewest parameters) to darker (most), so ``tinylora@1`` and ``tinylora@120`` stay apart."""
    targets: dict[str, list] = {}
    for c in curves:
        group = targets.setdefault(c.name, [])
        if c.params_target not in group:
            group.append(c.params_target)
    out = {}
    for c in curves:
        group = sorted(targets[c.name], key=lambda p: (p is not None, p or 0))
        base = styles.colour(c.name)
        if len(group) < 2:
            out[c.label] = base
        else:
            out[c.label] = _shade(base, 0.45 - 0.8 * group.index(c.params_target) / (len(group) - 1))
    return out


def _budget_x_axis(kind: str, values: list[float], left: float, right: float) -> tuple[svg.LinearAxis, float, str]:
    """An x axis from 0 to the largest value, with the factor and unit its values are divided by."""
    factor, unit = _unit(kind, max(values)) if kind == "duration" else (1, "")
    label = count_tick if kind == "tokens" else (lambda v: f"{v:g}")
    axis = svg.LinearAxis.nice(0.0, max(values) / factor, left, right, label=label, clamp=(0, math.inf),
                               target_ticks=4)
    return axis, factor, unit


def _budget_tooltip(curve: Curve, p) -> str:
    interval = f" [{100 * p.low:.1f}, {100 * p.high:.1f}]" if p.low is not None and p.high is not None else ""
    seeds = f"{p.seeds} seed{'s' if p.seeds != 1 else ''}"
    items = f", {p.n} items" if p.n is not None else ""
    return (f"{curve.label} · step {p.step}\nvalidation accuracy {100 * p.accuracy:.1f}%{interval} "
            f"({p.interval or 'as recorded'}; {seeds}{items})\n"
            f"{format_value('count', p.tokens)} tokens · {format_value('duration', p.seconds)} training")


def budget_curves_plot(curves: BudgetCurves | None, styles: Styles) -> tuple[Markup, int]:
    """Validation accuracy (±95% interval over seeds) at each checkpoint step, one series per row, in three
    panels: against optimizer steps, tokens trained + generated, and training wall time; the base model's
    validation accuracy is the dashed line. Returns the SVG and the points drawn (empty without curves)."""
    if curves is None or not curves.curves:
        return Markup(""), 0
    width, height, left, top, right, bottom = BUDGET_PANEL
    colours = _curve_colours(curves.curves, styles)
    y_values = [v for c in curves.curves for p in c.points for v in (p.accuracy, p.low, p.high) if v is not None]
    base = curves.base
    if base is not None:
        y_values += [v for v in (base.accuracy, base.ci_low, base.ci_high) if v is not None]
    y_axis = _y_axis_for(y_values, top, bottom)
    dodge = {c.label: (i - (len(curves.curves) - 1) / 2) * min(1.5, 16 / len(curves.curves))
             for i, c in enumerate(curves.curves)}
    panels, n_points = [], 0
    for title_text, kind, value in BUDGET_AXES:
        values = [value(p) for c in curves.curves for p in c.points if value(p) is not None]
        if not values:
            continue
        x_axis, factor, unit = _budget_x_axis(kind, values, left, right)
        x_ticks = [t for t in x_axis.ticks(4) if kind != "steps" or float(t).is_integer()] or x_axis.ticks(4)
        parts = _frame(x_axis, y_axis, x_ticks, y_axis.ticks(), f"{title_text} ({unit})" if unit else title_text,
                       "Validation accuracy", (left, top, right, bottom))
        parts += _base_reference(base, y_axis, left, right)
        lines, points = [], []
        for curve in curves.curves:
            colour, (shape, dash) = colours[curve.label], styles.trainer(curve.trainer)
            shift = dodge[curve.label] if kind == "steps" else 0.0
            drawn = [(x_axis(value(p) / factor) + shift, y_axis(p.accuracy), p)
                     for p in curve.points if value(p) is not None]
            if len(drawn) > 1:
                lines.append(svg.polyline([(x, y) for x, y, _ in drawn], stroke=colour, stroke_dasharray=dash,
                                          class_="series"))
            for x, y, p in drawn:
                bar = None
                if p.low is not None and p.high is not None:
                    bar = _error_bar(x, y_axis(max(p.low, y_axis.lo)), y_axis(min(p.high, y_axis.hi)), colour)
                points.append(svg.group(svg.title(_budget_tooltip(curve, p)), bar,
                                        svg.marker(shape, x, y, 4, fill=colour, stroke="#ffffff", class_="marker"),
                                        class_="pt", data_row=curve.label, data_step=p.step,
                                        data_accuracy=f"{p.accuracy:.6f}"))
        n_points += len(points)
        panels.append(svg.group(*parts, *lines, *points, class_=f"budget-panel budget-{kind}",
                                transform=f"translate({len(panels) * width} 0)"))
    columns = max(1, (len(panels) * width) // BUDGET_LEGEND_COLUMN)
    entries = [(c.label, colours[c.label], styles.trainer(c.trainer)) for c in curves.curves]
    legend, row_h = [], 18
    for i, (label, colour, (shape, dash)) in enumerate(entries):
        x, y = 12 + (i % columns) * BUDGET_LEGEND_COLUMN, height + 4 + (i // columns) * row_h
        legend += [svg.line(x, y - 4, x + 22, y - 4, stroke=colour, stroke_dasharray=dash, class_="series"),
                   svg.marker(shape, x + 11, y - 4, 4, fill=colour),
                   svg.group(svg.title(label), svg.text(x + 30, y, _shorten(label, 28), class_="legend-label"))]
    rows_used = (len(entries) + columns - 1) // columns
    if base is not None:
        y = height + 4 + rows_used * row_h
        legend += [svg.tag("rect", {"x": 12, "y": y - 10, "width": 22, "height": 12, "class": "base-band"}),
                   svg.line(12, y - 4, 34, y - 4, class_="base-line", stroke=BASE_COLOUR),
                   svg.text(42, y, f"base model {100 * base.accuracy:.1f}% on validation", class_="legend-label")]
        rows_used += 1
    chart = svg.svg(len(panels) * width, height + 8 + rows_used * row_h, *panels, svg.group(*legend, class_="legend"),
                    class_="chart budget-plot", role="img",
                    aria_label="Validation accuracy against optimizer steps, tokens and training time")
    return chart, n_points

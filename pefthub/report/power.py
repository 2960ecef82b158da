"""Power: the smallest gain over the base model a suite can detect, and the seeds it would take.

One function, :func:`suite_power`, for `pefthub findings`, `bench` and `plan`. A row's paired
difference with base varies over items and over seeds: its variance at S seeds on n items is
σ²_item/n + σ²_resid/(n·S) + σ²_seed/S (items × seeds random effects, the same model as
:func:`pefthub.report.stats.paired_variance`). The three components are estimated from the suite's
own runs (every trained row with several seeds against its base run, pooled), so the detectable
difference at the suite's seeds includes the seed-to-seed spread, and more seeds shrink only the
parts divided by S. Before any run (`pefthub plan` without results) only the item part can be
assumed, from exact McNemar on the items (:func:`detectable_difference`), and the figures say so.
"""

from __future__ import annotations

from collections import Counter
import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from pefthub.report import stats
from pefthub.report.stats import ALPHA, fmt_pct

#: The power every figure is computed at.
POWER = 0.8
#: The most seeds :meth:`Power.seeds_to_detect` looks at.
MAX_SEEDS = 100


def mcnemar_power(n: int, delta: float, discordance: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided exact McNemar test on n items when the rows disagree on a share
    ``discordance`` of them and the first is right on ``(discordance + delta)/2`` of them.
    Hand-written (a sum over scipy binomials): statsmodels' power tools have no exact McNemar."""
    import numpy as np
    from scipy.stats import binom

    if discordance <= 0 or abs(delta) > discordance + 1e-12:
        return 0.0
    m = np.arange(1, n + 1)
    c = binom.ppf(alpha / 2, m, 0.5)                       # largest c with 2·P(X ≤ c) ≤ alpha ...
    c = np.where(binom.cdf(c, m, 0.5) > alpha / 2, c - 1, c)
    share = min(1.0, (discordance + abs(delta)) / (2 * discordance))
    reject = np.where(c >= 0, binom.cdf(c, m, share) + binom.sf(m - c - 1, m, share), 0.0)
    return float((binom.pmf(m, n, discordance) * reject).sum())


def detectable_difference(n: int, base_accuracy: float, *, assumption: str, power: float = 0.8,
                          alpha: float = ALPHA, step: float = 0.005) -> float | None:
    """Smallest improvement over ``base_accuracy`` the exact McNemar test detects with ``power`` on n items.

    ``assumption`` fixes the discordance rate ψ: ``"one-way"`` ψ = Δ (the row only fixes base errors;
    the best case) or ``"independent"`` ψ = p₀(1−p₁) + p₁(1−p₀) (errors independent of base's).
    """
    delta = step
    while base_accuracy + delta <= 1.0 + 1e-9:
        p1 = base_accuracy + delta
        psi = delta if assumption == "one-way" else base_accuracy * (1 - p1) + p1 * (1 - base_accuracy)
        if mcnemar_power(n, delta, psi, alpha) >= power:
            return round(delta, 6)
        delta += step
    return None



@dataclass(frozen=True)
class Components:
    """Variance components of a trained row's per-item difference with base (0/1 scores), pooled
    over ``rows`` rows: ``item`` (items differ in how much the row gains on them), ``resid`` (an item
    scores differently from seed to seed) and ``seed`` (a whole seed lands higher or lower)."""

    item: float
    resid: float
    seed: float
    rows: int

    def variance(self, n: int, seeds: int) -> float:
        """Variance of the paired Δ of a row at ``seeds`` seeds against a one-run base on ``n`` items."""
        return self.item / n + self.resid / (n * seeds) + self.seed / seeds

    def df(self, n: int, seeds: int) -> float:
        """Satterthwaite degrees of freedom of that variance (items: n − 1; seeds: S − 1)."""
        a, b = (self.item + self.resid / seeds) / n, self.seed / seeds
        if b <= 0 or seeds < 2:
            return float(n - 1)
        return (a + b) ** 2 / (a ** 2 / (n - 1) + b ** 2 / (seeds - 1))


def components(rows: Sequence, base) -> Components | None:
    """:class:`Components` pooled (mean) over the trained rows with at least two seeds that pair with
    ``base`` on their items and did not fail to train (their flags); ``None`` when no row qualifies."""
    found = list(row_components(rows, base).values())
    if not found:
        return None
    item, resid, seed = (statistics.fmean(v) for v in zip(*((c.item, c.resid, c.seed) for c in found)))
    return Components(item, resid, seed, len(found))


def row_components(rows: Sequence, base) -> dict[str, Components]:
    """Each qualifying row's own :class:`Components` (see :func:`components`), by label."""
    import numpy as np

    from pefthub.report.health import did_not_train

    if base is None:
        return {}
    try:
        reference = stats.item_scores(base)
    except stats.PairingError:
        return {}
    found = {}
    for row in rows:
        if row.is_base or row.seeds < 2 or row.accuracy is None or did_not_train(row.flags):
            continue
        scores = stats.pairable_scores(row, reference)
        if scores is None:
            continue
        d = scores.scores - reference.scores.mean(axis=1, keepdims=True)
        n, s = d.shape
        ms_seed, ms_resid = (float(v) for v in stats._seed_components(d))
        ms_item = s * float(np.var(d.mean(axis=1), ddof=1))
        found[row.label] = Components(max(0.0, (ms_item - ms_resid) / s), ms_resid, max(0.0, (ms_seed - ms_resid) / n), 1)
    return found


def _detectable(parts: Components, n: int, seeds: int, power: float = POWER, alpha: float = ALPHA) -> float:
    from scipy.stats import t

    df = parts.df(n, seeds)
    return float((t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * math.sqrt(parts.variance(n, seeds)))


@dataclass(frozen=True)
class Power:
    """What a suite of n test items and S seeds can tell apart from its base model (80% power, α 0.05)."""

    n_items: int
    seeds: int
    base_accuracy: float
    base_source: str                     # "measured, run …" | "given"
    one_way: float | None                # exact McNemar on items alone, one seed: the row only fixes base errors
    independent: float | None            # ... its errors independent of base's
    parts: Components | None = None      # measured on the suite's rows, pooled (None: not measurable)
    observed: float | None = None        # median |Δ| vs base of the rows that trained
    smallest: tuple[str, float] | None = None   # the row with the smallest |Δ| vs base among them, and that |Δ|
    widest: tuple[str, Components] | None = None   # the row with the largest seed component, and its own
    family: int = 1                      # rows in the Holm family against base (the rows that trained)

    @property
    def detectable(self) -> float | None:
        """Smallest gain over base detected at the suite's seeds, items and seeds both counted."""
        return None if self.parts is None else _detectable(self.parts, self.n_items, self.seeds)

    @property
    def detectable_holm(self) -> float | None:
        """The same at Holm's strictest step over the family (α/k), where the best row of a suite is tested."""
        if self.parts is None or self.family < 2:
            return None
        return _detectable(self.parts, self.n_items, self.seeds, alpha=ALPHA / self.family)

    @property
    def floor(self) -> float | None:
        """The detectable gain with unlimited seeds: the item part, which only more items lower."""
        if self.parts is None:
            return None
        return _detectable(Components(self.parts.item, 0.0, 0.0, self.parts.rows), self.n_items, 1)

    def seeds_to_detect(self, effect: float, parts: Components | None = None) -> int | None:
        """Fewest seeds (up to :data:`MAX_SEEDS`) at which ``effect`` is detectable with ``parts`` (default:
        the pooled components); ``None`` past that."""
        parts = parts or self.parts
        if parts is None:
            return None
        return next((s for s in range(1, MAX_SEEDS + 1) if _detectable(parts, self.n_items, s) <= abs(effect)), None)

    @property
    def smoke(self) -> bool:
        """Too small to separate rows by less than about ten points even in the best case."""
        best = self.detectable if self.parts is not None else self.one_way
        return best is None or best > 0.1

    def sentence(self) -> str:
        s = "s" if self.seeds != 1 else ""
        text = (f"{self.n_items} test items, {self.seeds} seed{s}, base accuracy {fmt_pct(self.base_accuracy)}% "
                f"({self.base_source}): at 80% power (two-sided α 0.05)")
        mcnemar = (f"{fmt_pct(self.one_way)} points if the row only fixes base errors, {fmt_pct(self.independent)} if "
                   f"its errors are independent of the base model's" if self.one_way is not None
                   and self.independent is not None else "no difference")
        if self.parts is None:
            text += (f", counting item-level disagreement only (exact McNemar), it detects a gain over base of "
                     f"{mcnemar}. The spread between seeds is not measured here (no trained row with several "
                     "seeds pairs with base), and it adds to every figure: they are optimistic")
        else:
            p = self.parts
            text += (f", with the variance measured on this suite ({p.rows} trained row{'s' if p.rows != 1 else ''} "
                     f"with several seeds: a seed moves a row's accuracy by {fmt_pct(math.sqrt(p.seed))} points (sd), "
                     f"items disagree with base by {math.sqrt(p.item + p.resid):.2f} (sd of the per-item difference)), "
                     f"a row at {self.seeds} seed{s} is detected when it gains {fmt_pct(self.detectable)} points over "
                     f"base" + (f" ({fmt_pct(self.detectable_holm)} at Holm's strictest step over the {self.family} "
                                f"rows that trained, α 0.05/{self.family})" if self.detectable_holm is not None else "")
                     + f"; no number of seeds takes that below {fmt_pct(self.floor)} points at {self.n_items} items "
                     f"(exact McNemar on items alone, one seed: {mcnemar})")
            if self.widest is not None and self.widest[1].seed > p.seed:
                label, own = self.widest
                text += (f". The widest spread between seeds is `{label}`'s ({fmt_pct(math.sqrt(own.seed))} points): "
                         f"a row like it needs a gain of {fmt_pct(_detectable(own, self.n_items, self.seeds))} points "
                         f"at {self.seeds} seed{s}")
            if self.observed is not None:
                text += (f". The rows that trained differ from base by {fmt_pct(self.observed)} points (median |Δ|): "
                         + _seeds_words(self.seeds_to_detect(self.observed)) + " at the pooled spread"
                         + (f", {_seeds_words(self.seeds_to_detect(self.observed, self.widest[1]))} at the widest"
                            if self.widest is not None and self.widest[1].seed > p.seed else ""))
            if self.smallest is not None and self.smallest[1] < (self.observed or 0):
                label, gap = self.smallest
                text += (f"; at the pooled spread, for the smallest, `{label}`'s {fmt_pct(gap)} points, "
                         + _seeds_words(self.seeds_to_detect(gap)))
        if self.smoke:
            text += (". A smoke run: it can tell a method that clearly learned the task from one that did not, "
                     "not methods a few points apart; a null here is not evidence of no effect")
        return text + "."

    def as_record(self) -> dict:
        p = self.parts
        return {"test_items": self.n_items, "seeds": self.seeds, "base_accuracy": self.base_accuracy,
                "base_source": self.base_source, "power": POWER, "alpha": ALPHA,
                "detectable_gain": self.detectable, "detectable_gain_holm_first": self.detectable_holm,
                "holm_family": self.family, "detectable_gain_unlimited_seeds": self.floor,
                "variance_item": p.item if p else None, "variance_item_seed": p.resid if p else None,
                "variance_seed": p.seed if p else None, "rows_measured": p.rows if p else 0,
                "observed_median_gain": self.observed, "widest_seed_spread_row": self.widest[0] if self.widest else None,
                "seeds_to_detect_observed": self.seeds_to_detect(self.observed) if p and self.observed else None,
                "observed_smallest_gain": self.smallest[1] if self.smallest else None,
                "observed_smallest_row": self.smallest[0] if self.smallest else None,
                "seeds_to_detect_smallest": self.seeds_to_detect(self.smallest[1]) if p and self.smallest else None,
                "detectable_gain_one_way": self.one_way, "detectable_gain_independent": self.independent,
                "smoke": self.smoke, "summary": self.sentence()}


def _seeds_words(need: int | None) -> str:
    if need is None:
        return f"more than {MAX_SEEDS} seeds would detect that (only more test items would)"
    return f"{need} seed{'s' if need != 1 else ''} would detect that"


def suite_power(rows: Sequence = (), base=None, *, n_items: int | None = None, seeds: int | None = None,
                base_accuracy: float | None = None) -> Power | None:
    """THE power of a suite: from its rows (:class:`pefthub.report.rows.Row`, flags and ``vs_base`` as
    :func:`pefthub.report.table.suite_table` fills them) and reference ``base`` row, at ``seeds`` seeds
    (default: the count most trained rows have, the smaller on a tie) on ``n_items`` items (default: the base
    run's test items).
    ``base_accuracy`` given (`pefthub plan` before a run) replaces the measured one. ``None`` when there is
    neither a scored base row nor a given accuracy, or no item count."""
    trained = [r for r in rows if not r.is_base and r.accuracy is not None]
    if base is not None and base.accuracy is not None and base_accuracy is None:
        accuracy, source = base.accuracy, f"measured, run {base.run_ids[0]}"
    elif base_accuracy is not None:
        accuracy, source = base_accuracy, "given"
    else:
        return None
    if n_items is None and base is not None:
        n_items = ((base.records[0].doc.get("evaluation") or {}).get("test") or {}).get("n")
    if not n_items:
        return None
    counts = Counter(r.seeds for r in trained)
    seeds = seeds or min(counts, key=lambda s: (-counts[s], s), default=1)
    own = row_components(rows, base) if base is not None else {}
    parts = components(rows, base) if own else None
    widest = max(own.items(), key=lambda kv: (kv[1].seed, kv[0]), default=None)
    tested = [(r.label, abs(r.vs_base.delta)) for r in trained if r.vs_base is not None and r.vs_base.p_holm is not None]
    observed = [gap for _, gap in tested]
    return Power(int(n_items), seeds, accuracy, source,
                 detectable_difference(int(n_items), accuracy, assumption="one-way"),
                 detectable_difference(int(n_items), accuracy, assumption="independent"),
                 parts, statistics.median(observed) if observed else None,
                 min(tested, key=lambda kv: (kv[1], kv[0])) if tested else None, widest, max(1, len(observed)))

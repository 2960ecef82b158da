"""Statistics of result documents: learning-rate selection, across-seed intervals and paired
comparisons on the same items (power is :mod:`pefthub.report.power`). The CLI (`pefthub bench`,
`compare`, `plan`, `findings`) and the site call this one module, so they report the same numbers;
docs/benchmarks.md ("Reading the numbers") explains each rule.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable, Sequence

from pefthub.errors import PefthubError
from pefthub.results import canonical_json

BASE_METHOD = "base"
ALPHA = 0.05
LEVEL = 0.95

#: How a row's learning rate was chosen.
LR_SELECTED = "validation"      # best mean validation accuracy of several rates
LR_SINGLE = "single"            # only one rate ran
LR_UNSELECTED = "unselected"    # several rates ran, one lacks validation scores: none is chosen

#: Where a rate chosen on validation sits in its row's grid when it is the smallest or largest one.
LR_EDGE_LOW, LR_EDGE_HIGH = "low", "high"

#: Verdicts of a row against the base model after Holm's correction.
BETTER, WORSE, SAME = "better than base", "worse than base", "not significant after Holm"


def null_words(c: "Comparison") -> str:
    """The null verdict with the row's seeds, e.g. "not significant after Holm (3 seeds)"."""
    return f"{SAME} ({c.seeds_a} seed{'' if c.seeds_a == 1 else 's'})"


class PairingError(PefthubError):
    """Two rows cannot be compared item by item; the message says why."""


# ---- documents -----------------------------------------------------------------------------------
def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def accuracy(doc: dict, split: str = "test") -> float | None:
    block = (doc.get("evaluation") or {}).get(split)
    value = block.get("accuracy") if isinstance(block, dict) else None
    return float(value) if is_number(value) else None


def point_key(config: dict) -> str:
    """A config without seed and learning rate: the seeds and rates of one leaderboard point share it."""
    return canonical_json({k: v for k, v in config.items() if k not in ("learning_rate", "seed")})


def row_label(config: dict) -> str:
    """``tinylora@13/grpo``, ``lora/sft``, ``base``: how a row is named on the command line."""
    if config.get("method") == BASE_METHOD:
        return BASE_METHOD
    name = config.get("variant") or config.get("method")
    params = config.get("params_target")
    return f"{name if params is None else f'{name}@{params}'}/{config.get('trainer')}"


# ---- learning-rate selection and the across-seed interval -----------------------------------------
@dataclass
class Selection:
    """The learning rate(s) of one point that reach the leaderboard, and why."""

    rule: str                            # LR_SELECTED | LR_SINGLE | LR_UNSELECTED
    candidates: list[float | None]       # rates with at least one successful run, ascending
    chosen: dict[Any, list[dict]]        # rate -> its successful docs (one rate unless unselected)
    one_answer: list[float | None] = field(default_factory=list)  # rates passed over: one answer to everything

    @property
    def at_edge(self) -> str | None:
        """``"low"``/``"high"`` when the rate chosen on validation is the smallest/largest of several that
        ran (the best may lie outside the grid), else ``None``."""
        rates = [lr for lr in self.candidates if is_number(lr)]
        if self.rule != LR_SELECTED or len(rates) < 2:
            return None
        (lr,) = self.chosen
        return LR_EDGE_LOW if lr == rates[0] else LR_EDGE_HIGH if lr == rates[-1] else None


def select_learning_rate(successes: Iterable[dict], attempted: Iterable[dict] | None = None,
                         one_answer: Collection[str] = ()) -> Selection | None:
    """Choose a point's learning rate on validation, never test; ``None`` if nothing succeeded.

    Only successful runs count. One rate: it. Several, all with validation scores: the best mean
    validation accuracy over the seeds every rate was run with (``attempted``: the point's runs,
    failed ones included; default the successes), ties to the smaller rate. So a grid tuned on its
    first seed is judged there, and a seed that failed for one rate only drops out of that rate's
    mean. A rate with a run in ``one_answer`` (run ids that gave one answer to their validation items,
    :func:`pefthub.report.floor.one_answer_runs`) is passed over unless every rate has one: on a task
    with few answers, a run that always answers the most common one scores its share without learning.
    Otherwise none is chosen (every rate is returned).
    """
    by_lr: dict[Any, list[dict]] = {}
    for doc in successes:
        by_lr.setdefault(doc["config"].get("learning_rate"), []).append(doc)
    if not by_lr:
        return None
    candidates = sorted(by_lr, key=lambda lr: (lr is None, lr or 0.0))
    if len(by_lr) == 1:
        return Selection(LR_SINGLE, candidates, dict(by_lr))
    val = {lr: {str(d["config"].get("seed")): v for d in docs if (v := accuracy(d, "validation")) is not None}
           for lr, docs in by_lr.items()}
    if all(val.values()):
        ran: dict[Any, set[str]] = {}
        for doc in (attempted if attempted is not None else [d for docs in by_lr.values() for d in docs]):
            ran.setdefault(doc["config"].get("learning_rate"), set()).add(str(doc["config"].get("seed")))
        shared = set.intersection(*(ran.get(lr, set(v)) for lr, v in val.items()))
        mean = {lr: statistics.fmean([v[s] for s in shared if s in v] or v.values()) for lr, v in val.items()}
        constant = [lr for lr in candidates if any(d.get("run_id") in one_answer for d in by_lr[lr])]
        if len(constant) == len(candidates):
            constant = []                  # every rate gave one answer: choose among them as before
        eligible = [lr for lr in candidates if lr not in constant]
        best = max(eligible, key=lambda lr: (mean[lr], -(lr if lr is not None else math.inf)))
        return Selection(LR_SELECTED, candidates, {best: by_lr[best]}, constant)
    return Selection(LR_UNSELECTED, candidates, {lr: by_lr[lr] for lr in candidates})


@dataclass
class Interval:
    """Mean test accuracy over seeds with its 95% interval."""

    mean: float | None
    low: float | None
    high: float | None
    method: str | None
    seeds: int


def t_quantile(df: float, level: float = LEVEL) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def seed_interval(docs: Sequence[dict]) -> Interval:
    """Test accuracy over runs (one per seed) with a 95% interval.

    One run: its recorded (Wilson) interval over test problems. Several: the Student t interval of
    the seed means, widened to at least the runs' mean recorded interval, because every seed is
    scored on the same test problems and more seeds do not shrink that part of the uncertainty.
    """
    scored = [d for d in docs if accuracy(d, "test") is not None]
    if not scored:
        return Interval(None, None, None, None, 0)
    accs = [accuracy(d, "test") for d in scored]
    blocks = [d["evaluation"]["test"] for d in scored]
    lows = [b.get("ci_low") for b in blocks if is_number(b.get("ci_low"))]
    highs = [b.get("ci_high") for b in blocks if is_number(b.get("ci_high"))]
    mean = statistics.fmean(accs)
    if len(scored) == 1:
        method = blocks[0].get("ci_method") if isinstance(blocks[0].get("ci_method"), str) else None
        return Interval(mean, lows[0] if lows else None, highs[0] if highs else None, method, 1)
    half = t_quantile(len(accs) - 1) * statistics.stdev(accs) / math.sqrt(len(accs))
    low, high = max(0.0, mean - half), min(1.0, mean + half)
    method = f"t over {len(accs)} seeds"
    if len(lows) == len(scored) and len(highs) == len(scored):
        eval_low, eval_high = statistics.fmean(lows), statistics.fmean(highs)
        if eval_low < low or eval_high > high:
            low, high = min(low, eval_low), max(high, eval_high)
            method += ", widened to the per-run interval"
    return Interval(mean, low, high, method, len(scored))


# ---- item scores ----------------------------------------------------------------------------------------
#: Protocol fields that decide which items a run was scored on and how (``merged`` and timing do not).
PROTOCOL_FIELDS = ("harness", "task_config_hash", "split", "generation", "max_new_tokens", "chat_template",
                   "system_prompt")


@dataclass
class ItemScores:
    """A row's 0/1 scores on one split, items × seeds, with what identifies its items."""

    label: str
    ids: list[str]
    scores: Any                          # numpy array (n_items, n_seeds)
    seeds: list[Any]
    task: Any
    protocol: dict
    items: list[Any]                     # per seed: its :class:`pefthub.report.records.Items`

    @property
    def n(self) -> int:
        return len(self.ids)

    def answers(self, item: str) -> tuple[list, Any]:
        """(each seed's extracted answer, the gold answer) of one item."""
        found = [(items.extracted[pos[item]], items.gold[pos[item]])
                 for items, pos in zip(self.items, self._positions())]
        return [a for a, _ in found], found[0][1]

    def _positions(self) -> list[dict[str, int]]:
        if not hasattr(self, "_pos"):
            self._pos = [items.position() for items in self.items]
        return self._pos


def _natural(text: str) -> list:
    """``item-2`` before ``item-10``."""
    import re

    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


@functools.lru_cache(maxsize=256)
def _natural_sorted(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(ids), key=_natural))


def _natural_order(ids: tuple[str, ...]) -> list[str]:
    """The distinct ``ids`` in :func:`_natural` order (sorted once per distinct tuple: runs scored on
    the same items share one, and a suite sorts it for every seed of every comparison)."""
    return list(_natural_sorted(ids))


def _protocol(doc: dict) -> dict:
    block = (doc.get("evaluation") or {}).get("test") or {}
    protocol = block.get("protocol") if isinstance(block.get("protocol"), dict) else {}
    out = {k: protocol[k] for k in PROTOCOL_FIELDS if k in protocol}
    out["metric"] = block.get("metric")
    eval_config = doc["config"].get("eval") or {}
    for key in ("limit", "split"):
        if key in eval_config:
            out[f"eval.{key}"] = eval_config[key]
    return out


def item_scores(row, split: str = "test") -> ItemScores:
    """A row's per-item scores on ``split`` from its runs' records (:class:`pefthub.report.rows.Row`:
    ``label``, ``config`` and ``records``, one per seed)."""
    import numpy as np

    per_seed = []
    for record in row.records:
        items = record.items.get(split)
        if items is None or not items.ids:
            if record.problem:
                raise PairingError(f"{row.label}: {record.samples_file.name}: {record.problem}")
            if record.samples_file is None:
                raise PairingError(f"{row.label}: run {record.run_id} has no samples file beside its result, "
                                   "so it has no per-item scores to pair")
            raise PairingError(f"{row.label}: run {record.run_id} has no {split} items with an id in "
                               f"{record.samples_file.name}")
        per_seed.append(items)
    ids = _natural_order(per_seed[0].ids)
    for record, items in zip(row.records[1:], per_seed[1:]):
        if _natural_order(items.ids) != ids:
            raise PairingError(f"{row.label}: its seeds were scored on different items (run {record.run_id})")
    columns = []
    for items in per_seed:
        pos = items.position()
        columns.append(items.correct[[pos[i] for i in ids]])
    scores = np.column_stack(columns).astype(float) if columns else np.zeros((0, 0))
    return ItemScores(row.label, ids, scores, [r.seed for r in row.records], row.config.get("task"),
                      _protocol(row.records[0].doc), per_seed)


def pairable_scores(row, reference: ItemScores) -> ItemScores | None:
    """``row``'s item scores when they pair with ``reference``'s (same task, items and split), else None."""
    try:
        scores = item_scores(row)
        check_pairable(scores, reference)
    except PairingError:
        return None
    return scores


def check_pairable(a: ItemScores, b: ItemScores) -> None:
    """Raise :class:`PairingError` naming why ``a`` and ``b`` were not scored on the same items."""
    if canonical_json(a.task) != canonical_json(b.task):
        raise PairingError(f"cannot pair {a.label} with {b.label}: different task configs "
                           f"({canonical_json(a.task)} vs {canonical_json(b.task)})")
    for key in sorted(set(a.protocol) | set(b.protocol)):
        if key in a.protocol and key in b.protocol and a.protocol[key] != b.protocol[key]:
            raise PairingError(f"cannot pair {a.label} with {b.label}: different evaluation protocol "
                               f"({key} {a.protocol[key]!r} vs {b.protocol[key]!r})")
    if a.ids != b.ids:
        only_a, only_b = len(set(a.ids) - set(b.ids)), len(set(b.ids) - set(a.ids))
        raise PairingError(f"cannot pair {a.label} with {b.label}: evaluated on different items "
                           f"({only_a} of {a.n} test items only in the first, {only_b} of {b.n} only in the second)")


# ---- the paired difference ----------------------------------------------------------------------------
def _seed_components(x):
    """Per-row two-way (items × seeds) mean squares: (MS_seed, MS_resid), vectorised over leading axes."""
    n, s = x.shape[-2], x.shape[-1]
    grand = x.mean(axis=(-2, -1), keepdims=True)
    item_means = x.mean(axis=-1, keepdims=True)
    seed_means = x.mean(axis=-2, keepdims=True)
    ms_seed = n * ((seed_means - grand) ** 2).sum(axis=(-2, -1)) / (s - 1)
    resid = x - item_means - seed_means + grand
    ms_resid = (resid ** 2).sum(axis=(-2, -1)) / ((n - 1) * (s - 1))
    return ms_seed, ms_resid


def paired_variance(a, b):
    """Δ = mean(a) − mean(b), the variance of Δ over items and seeds, and its Satterthwaite df.

    ``a`` is (..., n, S_a) and ``b`` (..., n, S_b) 0/1 scores on the same n items (leading axes are
    independent data sets). Var = s²(d̄ᵢ)/n + Σ_rows max(0, MS_seed − MS_resid)/(n·S), d̄ᵢ the
    per-item difference of seed means: the crossed items × seeds random-effects variance of the
    grand mean, written per row so unequal seed counts need no pairing of unrelated seeds. With one
    seed on each side it is Miller's (2024) paired-difference variance. Hand-written because no
    library offers this crossed-design variance vectorised over many data sets (the coverage test).
    """
    import numpy as np

    a, b = np.asarray(a, float), np.asarray(b, float)
    n = a.shape[-2]
    dbar = a.mean(axis=-1) - b.mean(axis=-1)
    delta = dbar.mean(axis=-1)
    v_item = dbar.var(axis=-1, ddof=1) / n
    var = v_item.copy()
    df_denominator = v_item ** 2 / (n - 1)
    for x in (a, b):
        s = x.shape[-1]
        if s < 2:
            continue
        ms_seed, ms_resid = _seed_components(x)
        component = (ms_seed - ms_resid) / (n * s)
        keep = component > 0
        var = var + np.where(keep, component, 0.0)
        df_denominator = df_denominator + np.where(
            keep, (ms_seed / (n * s)) ** 2 / (s - 1) + (ms_resid / (n * s)) ** 2 / ((n - 1) * (s - 1)), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(df_denominator > 0, var ** 2 / df_denominator, n - 1)
    return delta, var, df


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: the discordant pairs against a fair coin (1.0 if none).

    scipy's two-sided p sums the outcomes no likelier than the observed one; under a fair coin the
    binomial is symmetric, so that equals twice the smaller tail, the p that the equal-tailed
    Clopper–Pearson interval of :func:`exact_paired_interval` inverts (tests/stats/test_stats.py checks both).
    """
    from scipy.stats import binomtest

    m = a_only + b_only
    return 1.0 if m == 0 else float(binomtest(a_only, m, 0.5).pvalue)


EXACT_INTERVAL = "exact: Clopper–Pearson on the discordant split × on the discordance"
#: A t interval cut at ±1 (±100 points), the most a difference of two accuracies can be; p is the t test's.
CLIPPED_INTERVAL = "t, items × seeds, cut at ±100 points"
CUT_WORDS = "cut at ±100 points, the most a difference of accuracies can be"


def within_one(low: float, high: float) -> tuple[float, float]:
    """An interval of a difference of accuracies cut to ±1, where every such difference lies."""
    return max(low, -1.0), min(high, 1.0)


@functools.lru_cache(maxsize=4096)  # a pure function of counts that repeat across a suite's seeds
def exact_paired_interval(a_only: int, b_only: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The single-seed interval of Δ = (a_only − b_only)/n that agrees with :func:`mcnemar_p`.

    Δ = ψ(2π − 1), ψ the share of discordant items and π the share of those that A wins. Clopper–Pearson
    intervals for π (a_only of m, the exact test's own conditional model) and for ψ (m of n) give the
    box of Δ values; it contains 0 exactly when π's interval contains ½, that is when p ≥ 1 − level.
    With no discordant item π is undefined and the box is ±ψ's upper bound: the items show no
    difference, but as much disagreement as ψ_high could hide one that large.
    """
    from scipy.stats import binomtest

    m = a_only + b_only
    psi = binomtest(m, n).proportion_ci(level, method="exact")
    if m == 0:
        return -float(psi.high), float(psi.high)
    pi = binomtest(a_only, m).proportion_ci(level, method="exact")
    lo, hi = 2 * pi.low - 1, 2 * pi.high - 1
    return (float(lo * (psi.high if lo < 0 else psi.low)), float(hi * (psi.high if hi > 0 else psi.low)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (hand-written: scipy has no Holm, and it is four lines)."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [1.0] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class Comparison:
    """Row A against row B on the same test items."""

    a: str
    b: str
    n_items: int
    seeds_a: int
    seeds_b: int
    accuracy_a: float
    accuracy_b: float
    delta: float                         # accuracy_a − accuracy_b
    se: float
    df: float
    low: float
    high: float
    p_value: float
    test: str                            # "McNemar exact" | "t, items × seeds"
    interval: str                        # EXACT_INTERVAL (one seed each) | "t, items × seeds"
    both_right: int                      # item counts on seed-averaged scores
    a_only: int
    b_only: int
    both_wrong: int
    split_items: int                     # items where neither is 0/1 on every seed and they tie
    disagreements: list[dict]
    p_holm: float | None = None
    verdict: str | None = None

    def as_dict(self, *, items: bool = True) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "disagreements"}
        if items:
            out["disagreements"] = self.disagreements
        return out


def compare(a: ItemScores, b: ItemScores, level: float = LEVEL) -> Comparison:
    """Paired Δ accuracy of ``a`` over ``b`` with its interval and p-value (see docs/benchmarks.md)."""
    import numpy as np
    from scipy.stats import t

    check_pairable(a, b)
    delta, var, df = (float(v) for v in paired_variance(a.scores, b.scores))
    se = math.sqrt(max(var, 0.0))
    half = t_quantile(df, level) * se
    ma, mb = a.scores.mean(axis=1), b.scores.mean(axis=1)
    a_only, b_only = int((ma > mb).sum()), int((mb > ma).sum())
    both_right, both_wrong = int(((ma == 1) & (mb == 1)).sum()), int(((ma == 0) & (mb == 0)).sum())
    low, high = delta - half, delta + half
    if a.scores.shape[1] == 1 and b.scores.shape[1] == 1:
        p, test = mcnemar_p(a_only, b_only), "McNemar exact"
        (low, high), interval = exact_paired_interval(a_only, b_only, a.n, level), EXACT_INTERVAL
    else:
        p = 1.0 if se == 0 else float(2 * t.sf(abs(delta) / se, df))
        test = interval = "t, items × seeds"
        if low < -1.0 or high > 1.0:  # few seeds far apart: the t interval runs past what a Δ can be
            (low, high), interval = within_one(low, high), CLIPPED_INTERVAL
    disagreements = []
    for i, x, y in zip(a.ids, ma, mb):
        if x != y:
            (a_answers, gold), (b_answers, _) = a.answers(i), b.answers(i)
            disagreements.append({"id": i, "a": float(x), "b": float(y), "a_answers": a_answers,
                                  "b_answers": b_answers, "gold": gold})
    return Comparison(a.label, b.label, a.n, a.scores.shape[1], b.scores.shape[1], float(np.mean(a.scores)),
                      float(np.mean(b.scores)), delta, se, df, low, high, p, test, interval,
                      both_right, a_only, b_only, both_wrong, a.n - a_only - b_only - both_right - both_wrong,
                      disagreements)


def compare_rows(a, b) -> Comparison:
    """Paired comparison of two rows (:class:`pefthub.report.rows.Row`) on their test items."""
    return compare(item_scores(a), item_scores(b))


def trainer_pairs(rows: Sequence) -> list[tuple]:
    """Rows that differ only in trainer (same method, variant, config and parameter budget), GRPO first."""
    groups: dict[str, list] = {}
    for row in rows:
        if row.is_base:
            continue
        key = canonical_json([row.config.get(k) for k in ("method", "variant", "method_config", "params_target",
                                                           "model", "task", "eval")])
        groups.setdefault(key, []).append(row)
    order = {"grpo": 0, "sft": 1}
    pairs = []
    for members in groups.values():
        members = sorted(members, key=lambda r: (order.get(r.trainer, 2), r.trainer))
        pairs += [(x, y) for i, x in enumerate(members) for y in members[i + 1:] if x.trainer != y.trainer]
    return pairs


def fmt_pct(x: float | None, digits: int = 1, sign: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:+.{digits}f}" if sign else f"{100 * x:.{digits}f}"


def fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def interval_text(c: Comparison) -> str:
    """``+6.2 [-3.1, +15.5]`` (percentage points)."""
    return f"{fmt_pct(c.delta, sign=True)} [{fmt_pct(c.low, sign=True)}, {fmt_pct(c.high, sign=True)}]"


def to_json(value: Any) -> str:
    return json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False, default=str)


def seeds_words(c: Comparison) -> str:
    """``"3 seeds"``, or ``"3 and 1 seeds"`` when the arms differ."""
    n = c.seeds_a if c.seeds_a == c.seeds_b else f"{c.seeds_a} and {c.seeds_b}"
    return f"{n} seed{'' if n == 1 else 's'}"

"""Run health: flags saying a finished run did not change the model (``no-op``) or broke it
(``collapsed``), plus two warnings (``runaway``, ``no-signal``), and one row-level flag over a GRPO
row's seeds (``flat-reward``: its training reward did not rise, see :func:`reward_rise`).

Every flag is a pure function of a run's result document, its test samples, its training log
(``doc["curves"]``) and the base-model run of the same suite evaluated the same way. Flags never
change a result's status and flagged runs stay in the store and the tables: they are shown beside
the score (``pefthub bench``, ``pefthub compare``, ``pefthub findings`` and the README headline, the
site, its downloads, ``pefthub health``). The thresholds live in
:class:`Thresholds`, each with its rationale; docs/benchmarks.md explains them and
``pefthub health quick --markdown`` (docs/run-health.md) lists the values measured on the
committed results next to them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, fields
from typing import Any, Iterable, Sequence

from pefthub.report.records import Items, at_token_cap, eval_max_new_tokens, has_answer, items_of  # noqa: F401
from pefthub.report import rows as row_rules
from pefthub.report.floor import ONE_ANSWER_SHARE, one_answer
from pefthub.report.rows import STRICT_METRIC, Row, comparable, strict_accuracy  # noqa: F401

BASE_METHOD = "base"
NO_OP, COLLAPSED, RUNAWAY, NO_SIGNAL = "no-op", "collapsed", "runaway", "no-signal"
FLAT_REWARD = "flat-reward"
#: Flag name -> severity ("error": the score does not measure the method; "warning": read with care).
SEVERITY = {COLLAPSED: "error", NO_OP: "warning", RUNAWAY: "warning", NO_SIGNAL: "warning", FLAT_REWARD: "warning"}
#: The flags one run can carry (:func:`assess`); ``flat-reward`` is judged over a row's seeds (:func:`row_health`).
RUN_FLAGS = (COLLAPSED, NO_OP, RUNAWAY, NO_SIGNAL)
#: What each flag means, one line (CLI legends, site tooltips, docs).
MEANING = {
    NO_OP: "the run did not change the model: mostly byte-identical test completions to the base model's and the same score",
    COLLAPSED: "the model's outputs degenerated (answers gone, strict format gone, one answer to every question, or the trainer stopped on collapse)",
    RUNAWAY: "many more test completions than the base model's run to the token cap (longer, costlier evaluation)",
    NO_SIGNAL: "GRPO had almost no learning signal: reward near zero and nearly every group at zero advantage",
    FLAT_REWARD: "GRPO training reward did not rise: the second half of the steps did not score detectably above "
                 "the first (95% interval over seeds, or over steps for one seed)",
}


def _rule(default: float, why: str):
    return field(default=default, metadata={"why": why})


@dataclass(frozen=True)
class Thresholds:
    """Every threshold a flag uses, in one place; ``metadata["why"]`` is its one-line rationale."""

    noop_min_identical: float = _rule(
        0.5, "no-op needs at least half the test completions byte-identical to base: the same score from "
             "mostly different text is a different model that ties, not an untouched one")
    no_answer_excess: float = _rule(
        0.3, "collapsed when the share of completions with no extractable answer exceeds base's by this much: "
             "a working run changes its answer format on a few items, a collapsed one on most")
    strict_floor: float = _rule(
        0.02, "collapsed when strict-match is at most this (about one item in fifty) while base's is not, "
              "and flexible accuracy did not beat base: the format the task asks for is gone")
    strict_base_min: float = _rule(
        0.10, "the strict-match rule applies only when base's own strict-match is at least this, so a model "
              "that never used the strict format is not called collapsed")
    cap_excess_collapse: float = _rule(
        0.5, "collapsed when the share of completions cut off by the token cap exceeds base's by this much "
             "and the score fell below base: most answers ran on instead of ending")
    cap_excess_runaway: float = _rule(
        0.25, "runaway when the share cut off by the token cap exceeds base's by this much: evaluation cost "
              "grows with it even when the answers are still there")
    one_answer_share: float = _rule(
        ONE_ANSWER_SHARE,
        "collapsed when one extracted answer is given to at least this share of the test items while no gold "
        "answer is that common: the model answers the same whatever the question (on validation, the same "
        "rule keeps a rate from being chosen: pefthub.report.floor.one_answer_runs)")
    reward_floor: float = _rule(
        0.05, "no-signal when the mean GRPO training reward over all steps is at most this (near zero)")
    zero_advantage_min: float = _rule(
        0.85, "no-signal when at least this share of GRPO groups had zero advantage (all completions scored "
              "alike), so nearly no rollout carried a gradient")
    reward_rise_min: float = _rule(
        0.02, "flat-reward unless the 95% interval of the GRPO reward's rise (mean of the second half of the "
              "steps minus the first half) lies above 0 and reaches past this: a rise of under 2 points of a "
              "0-1 reward is within what a changed prompt mix moves")

    def rationale(self) -> list[tuple[str, float, str]]:
        """(name, value, why) for every threshold, in declaration order."""
        return [(f.name, getattr(self, f.name), f.metadata["why"]) for f in fields(self)]


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Flag:
    """One health flag on one run: its name, severity and a one-line measured detail."""

    name: str
    detail: str

    @property
    def severity(self) -> str:
        return SEVERITY[self.name]

    def as_record(self) -> dict:
        return {"name": self.name, "severity": self.severity, "detail": self.detail}


@dataclass
class Health:
    """A run's flags and the measurements behind them (``None`` where a measure is unavailable)."""

    run_id: str
    base_run_id: str | None
    flags: list[Flag]
    measures: dict[str, Any]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.flags]

    def as_record(self) -> dict:
        return {"run_id": self.run_id, "base_run_id": self.base_run_id,
                "flags": [f.as_record() for f in self.flags], "measures": dict(self.measures)}


# ---- per-run measures ---------------------------------------------------------------------------
def test_items(samples: Items | Iterable[dict] | None, doc: dict) -> Items | None:
    """A run's test :class:`~pefthub.report.records.Items` (sample records are read as
    :func:`pefthub.report.records.read_records` streams them; records without a split count as test)."""
    if samples is None or isinstance(samples, Items):
        return samples
    return items_of(samples, "test", eval_max_new_tokens(doc))


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _test_block(doc: dict) -> dict:
    return _dict(_dict(doc.get("evaluation")).get("test"))


def _share(k: int | None, n: int | None) -> float | None:
    return None if k is None or not n else k / n


def _strict(doc: dict) -> float | None:
    return strict_accuracy(doc)


def _accuracy(doc: dict) -> float | None:
    return _number(_test_block(doc).get("accuracy"))


def _grpo_signal(doc: dict) -> tuple[float | None, float | None]:
    """(mean reward over steps, share of groups with zero advantage) from the training log."""
    curves = [c for c in (doc.get("curves") or []) if isinstance(c, dict)] if isinstance(doc.get("curves"), list) else []
    rewards = [_number(c.get("reward")) for c in curves if _number(c.get("reward")) is not None]
    groups = _dict(_dict(doc.get("config")).get("budget")).get("batch_size")
    if not (isinstance(groups, int) and not isinstance(groups, bool) and groups > 0):
        groups = None
    zero, sampled = 0.0, 0.0
    for c in curves:
        n_zero = _number(c.get("zero_advantage_groups"))
        # With dynamic sampling a step rolls out several batches: its groups are the prompts it sampled.
        n_groups = _number(c.get("prompts_sampled")) or groups
        if n_zero is not None and n_groups:
            zero, sampled = zero + n_zero, sampled + n_groups
    reward = statistics.fmean(rewards) if rewards else None
    return reward, (zero / sampled if sampled else None)


@dataclass(frozen=True)
class RewardRise:
    """How much a GRPO row's training reward rose: per seed, the mean reward of the second half of its
    steps minus the first half (the middle step of an odd count left out); the mean of those rises with a
    95% t interval over seeds, or, for one seed, Welch's interval over the two halves' steps."""

    rise: float
    low: float
    high: float
    seeds: int
    steps: int
    basis: str                    # "seeds" | "steps"

    def rose(self, thresholds: Thresholds | None = None) -> bool:
        """True when the interval lies above 0 and its upper end passes ``reward_rise_min``."""
        t = thresholds or THRESHOLDS
        return self.low > 0 and self.high > t.reward_rise_min

    def detail(self) -> str:
        return (f"reward rise (second half of {self.steps} steps − first half) {self.rise:+.3f}, 95% interval "
                f"[{self.low:+.3f}, {self.high:+.3f}] over {self.seeds} seed{'s' if self.seeds > 1 else ''}"
                + (" (over steps)" if self.basis == "steps" else ""))


def _rewards(doc: dict) -> list[float]:
    curves = doc.get("curves") if isinstance(doc.get("curves"), list) else []
    return [_number(c.get("reward")) for c in curves if isinstance(c, dict) and _number(c.get("reward")) is not None]


def reward_rise(docs: Iterable[dict]) -> RewardRise | None:
    """The :class:`RewardRise` of a row's runs (``None``: no run logged at least two rewards, or one
    seed with fewer than four). scipy gives the intervals."""
    from scipy import stats as st

    logs = [r for r in (_rewards(d) for d in docs) if len(r) >= 2]
    if not logs:
        return None
    halves = [(r[:len(r) // 2], r[len(r) - len(r) // 2:]) for r in logs]
    steps = max(len(r) for r in logs)
    if len(logs) > 1:
        rises = [statistics.fmean(b) - statistics.fmean(a) for a, b in halves]
        mean = statistics.fmean(rises)
        if statistics.pstdev(rises) == 0:
            return RewardRise(mean, mean, mean, len(logs), steps, "seeds")
        ci = st.ttest_1samp(rises, 0.0).confidence_interval(0.95)
        return RewardRise(mean, float(ci.low), float(ci.high), len(logs), steps, "seeds")
    first, second = halves[0]
    if len(first) < 2:
        return None
    mean = statistics.fmean(second) - statistics.fmean(first)
    if statistics.pstdev(first) == 0 and statistics.pstdev(second) == 0:
        return RewardRise(mean, mean, mean, 1, steps, "steps")
    ci = st.ttest_ind(second, first, equal_var=False).confidence_interval(0.95)
    return RewardRise(mean, float(ci.low), float(ci.high), 1, steps, "steps")


def stopped_early(doc: dict) -> dict | None:
    """The trainer's own early-stop record (``doc["training"]["stopped_early"]``), if any."""
    record = _dict(doc.get("training")).get("stopped_early")
    return record if isinstance(record, dict) else None


# ---- the assessment --------------------------------------------------------------------------
def assess(doc: dict, samples: Items | Iterable[dict] | None, base: dict | None = None,
           base_samples: Items | Iterable[dict] | None = None, thresholds: Thresholds = THRESHOLDS) -> Health:
    """Flags and measures of one successful run against the base-model run (``None``: no base);
    ``samples`` are the run's test items (:class:`~pefthub.report.records.Items`) or sample records."""
    t = thresholds
    mine = test_items(samples, doc)
    m: dict[str, Any] = {"n": mine.n if mine else None}
    m["no_answer"] = mine.no_answer if mine else None
    m["at_cap"] = mine.at_cap if mine else None
    m["strict"] = _strict(doc)
    m["accuracy"] = _accuracy(doc)
    m["reward_mean"], m["zero_advantage_share"] = _grpo_signal(doc)
    m.update(identical=None, shared=None, correct=None, base_correct=None, base_no_answer=None, base_at_cap=None,
             base_n=None, base_strict=None, base_accuracy=None)
    flags: list[Flag] = []

    base_ok = base is not None and base.get("run_id") != doc.get("run_id") and comparable(doc, base)
    theirs = test_items(base_samples, base) if base_ok else None
    if base_ok:
        m["base_strict"], m["base_accuracy"] = _strict(base), _accuracy(base)
    if theirs:
        m["base_n"], m["base_no_answer"], m["base_at_cap"] = theirs.n, theirs.no_answer, theirs.at_cap
    if mine and theirs:
        where = theirs.position()
        pairs = [(i, where[item]) for i, item in enumerate(mine.ids) if item in where]
        if pairs:
            m["shared"] = len(pairs)
            m["identical"] = sum(int(mine.completions[i] == theirs.completions[j]) for i, j in pairs)
            m["correct"] = sum(int(mine.correct[i]) for i, _ in pairs)
            m["base_correct"] = sum(int(theirs.correct[j]) for _, j in pairs)
    pairs = m["shared"]

    # no-op: the model answered (nearly) as base did and scored the same on the same items.
    if pairs and m["correct"] == m["base_correct"] and m["identical"] / m["shared"] >= t.noop_min_identical:
        flags.append(Flag(NO_OP, f"{m['identical']}/{m['shared']} test completions byte-identical to base; "
                                 f"same score ({m['correct']}/{m['shared']})"))

    # collapsed: any one of these.
    why = []
    stop = stopped_early(doc)
    if stop and stop.get("reason") == COLLAPSED:
        detail = f": {stop['detail']}" if isinstance(stop.get("detail"), str) and stop["detail"] else ""
        why.append(f"trainer stopped early at step {stop.get('step', '?')}{detail}")
    share_na, base_na = _share(m["no_answer"], m["n"]), _share(m["base_no_answer"], m["base_n"])
    if share_na is not None and share_na - (base_na or 0.0) >= t.no_answer_excess:
        why.append(f"no extractable answer in {m['no_answer']}/{m['n']}"
                   + (f" (base {m['base_no_answer']}/{m['base_n']})" if base_na is not None else ""))
    if (m["strict"] is not None and m["base_strict"] is not None and m["strict"] <= t.strict_floor
            and m["base_strict"] >= t.strict_base_min
            and (m["accuracy"] is None or m["base_accuracy"] is None or m["accuracy"] <= m["base_accuracy"])):
        why.append(f"strict-match {100 * m['strict']:.1f}% (base {100 * m['base_strict']:.1f}%)")
    share_cap, base_cap = _share(m["at_cap"], m["n"]), _share(m["base_at_cap"], m["base_n"])
    cap_excess = None if share_cap is None else share_cap - (base_cap or 0.0)
    fell = m["accuracy"] is not None and m["base_accuracy"] is not None and m["accuracy"] < m["base_accuracy"]
    if cap_excess is not None and cap_excess >= t.cap_excess_collapse and fell:
        why.append(f"{m['at_cap']}/{m['n']} completions cut off by the token cap"
                   + (f" (base {m['base_at_cap']}/{m['base_n']})" if base_cap is not None else "")
                   + " and the score fell below base")
    one = one_answer(mine)
    m["one_answer"], m["gold_top"] = (one.count, one.gold_top) if one is not None else (None, None)
    if one is not None and one.holds(t.one_answer_share):
        shown = one.answer if len(one.answer) <= 30 else one.answer[:29] + "…"
        why.append(f"the same answer \"{shown}\" to {one.count}/{mine.n} test items (the most common gold answer "
                   f"covers {one.gold_top})")
    if why:
        flags.append(Flag(COLLAPSED, "; ".join(why)))
    elif cap_excess is not None and cap_excess >= t.cap_excess_runaway:
        flags.append(Flag(RUNAWAY, f"{m['at_cap']}/{m['n']} test completions cut off by the token cap"
                                   + (f" (base {m['base_at_cap']}/{m['base_n']})" if base_cap is not None else "")))

    if (m["reward_mean"] is not None and m["zero_advantage_share"] is not None
            and m["reward_mean"] <= t.reward_floor and m["zero_advantage_share"] >= t.zero_advantage_min):
        flags.append(Flag(NO_SIGNAL, f"mean training reward {m['reward_mean']:.3f}; "
                                     f"{100 * m['zero_advantage_share']:.0f}% of groups at zero advantage"))
    return Health(run_id=doc.get("run_id", ""), base_run_id=base.get("run_id") if base_ok else None,
                  flags=flags, measures=m)


def flags_text(flags: Iterable[Flag]) -> str:
    return ", ".join(f.name for f in flags)


#: Flags that leave nothing to compare: the row's score is the base model's (no-op) or a broken model's.
UNTESTED = (NO_OP, COLLAPSED)
#: Flags that mean a row did not train, so no comparison with it is tested: ``no-op`` or ``collapsed`` on
#: a majority of its seeds, or ``flat-reward`` (a row-level flag). :attr:`RowFlag.untested` applies it.
DID_NOT_TRAIN = (*UNTESTED, FLAT_REWARD)


@dataclass(frozen=True)
class RowFlag:
    """One flag of a row over its seeds: on how many of them, and the measured detail in one line."""

    name: str
    flagged: int
    seeds: int
    detail: str

    @property
    def severity(self) -> str:
        return SEVERITY[self.name]

    @property
    def untested(self) -> bool:
        """True when the flag says the row did not train: ``no-op`` or ``collapsed`` on a majority of its
        seeds, or ``flat-reward``. A comparison with such a row is not tested."""
        if self.name == FLAT_REWARD:
            return True
        return self.name in UNTESTED and 2 * self.flagged > self.seeds

    def words(self) -> str:
        """``"no-op"`` when every seed carries it, else ``"no-op on 1 of 3 seeds"``."""
        return self.name + (f" on {self.flagged} of {self.seeds} seeds" if self.flagged < self.seeds else "")

    def sentence(self, who: str) -> str:
        """``"<who> is flagged no-op[ on 1 of 3 seeds]: <detail>"``."""
        return f"{who} is flagged {self.words()}: {self.detail}"

    def as_record(self) -> dict:
        return {"name": self.name, "severity": self.severity, "seeds_flagged": self.flagged, "seeds": self.seeds,
                "detail": self.detail, "meaning": MEANING[self.name], "untested": self.untested}


def legend(names: Iterable[str]) -> str:
    """``"<flag>: <meaning>; ..."`` for the flags named, in :data:`SEVERITY` order (empty when none)."""
    names = set(names)
    return "; ".join(f"{n}: {m}" for n, m in MEANING.items() if n in names)


def did_not_train(flags: Iterable[RowFlag]) -> list[RowFlag]:
    """The flags of a row (:func:`row_health`) that say it did not train (:attr:`RowFlag.untested`)."""
    return [f for f in flags if f.untested]


def is_base(doc: dict) -> bool:
    return _dict(doc.get("config")).get("method") == BASE_METHOD


def row_flags(healths: Iterable[Health | None], docs: Iterable[dict] = ()) -> list[RowFlag]:
    """THE row flags: a row's flags over its seeds' healths (``None``: a seed not assessed), each once with
    how many seeds carry it (a no-op's detail lists each flagged seed's identical completions,
    ``380/377/384 of 400``), and with the runs' result ``docs`` ``flat-reward`` when their GRPO reward
    did not rise (:func:`reward_rise`)."""
    healths = [h for h in healths if h is not None]
    out = []
    for name in SEVERITY:
        hits = [(h, f) for h in healths for f in h.flags if f.name == name]
        if not hits:
            continue
        shared = {h.measures.get("shared") for h, _ in hits}
        if name == NO_OP and len(shared) == 1 and None not in shared:
            same = {(h.measures.get("correct"), h.measures.get("base_correct")) for h, _ in hits}
            n = shared.pop()
            detail = (f"{'/'.join(str(h.measures['identical']) for h, _ in hits)} of {n} test completions "
                      f"byte-identical to base" + ("; same score" if all(a == b for a, b in same) else ""))
            others = [h for h in healths if name not in h.names and h.measures.get("shared") == n
                      and h.measures.get("identical") is not None]
            if others:
                detail += (f" (the other seed{'s' if len(others) > 1 else ''}: "
                           f"{'/'.join(str(h.measures['identical']) for h in others)} of {n} identical, score changed)")
        else:
            detail = " | ".join(dict.fromkeys(f.detail for _, f in hits))
        out.append(RowFlag(name, len(hits), len(healths), detail))
    rise = reward_rise(d for d in docs if not is_base(d))
    if rise is not None and not rise.rose():
        out.append(RowFlag(FLAT_REWARD, rise.seeds, rise.seeds, rise.detail()))
    return out


def suite_health(records: Iterable, rows: Sequence[Row], thresholds: Thresholds = THRESHOLDS) -> dict[str, Health]:
    """Health of every successful trained run of a suite, by run id, each against the first run of its
    base row (:func:`pefthub.report.rows.base_row`, comparable to the run)."""
    out = {}
    for record in records:
        if record.status != "success" or record.is_base:
            continue
        base = row_rules.base_row(rows, like=record.doc)
        ref = base.records[0] if base is not None else None
        out[record.run_id] = assess(record.doc, record.items.get("test"), ref.doc if ref else None,
                                    ref.items.get("test") if ref else None, thresholds)
    return out


def row_health(row: Row, healths: dict[str, Health]) -> list[RowFlag]:
    """:func:`row_flags` of a row from the suite's healths (:func:`suite_health`)."""
    return row_flags((healths.get(r.run_id) for r in row.records), [r.doc for r in row.records])


def flags_words(flags: Sequence[RowFlag]) -> str:
    """A row's flags in a table cell: ``"no-op on 1 of 3 seeds, no-signal"`` (empty when none)."""
    return ", ".join(f.words() for f in flags)

"""The paper's questions answered from a suite's results: for each, the paired Δ with its interval, a
verdict and the paper's own figure beside it, and each compared row's run-health flags
(:mod:`pefthub.report.health`). `pefthub findings <suite>` writes the Markdown; the
site shows the same report. The only typed numbers are the published figures in :data:`PAPER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pefthub.report import curves, health, stats, strata
from pefthub.report.floor import ONE_ANSWER_SHARE, Floor, above, constant_answer, one_answer_runs
from pefthub.report.control import (CONTROL_NOT_MEASURED, CONTROL_QUESTION, Control, declared_control,  # noqa: F401
                                    declared_suite, positive_control)
from pefthub.report.health import flags_words
from pefthub.report.power import suite_power
from pefthub.report.records import RunRecord
from pefthub.report import rows as row_rules
from pefthub.report.rows import Row, one_run_row
from pefthub.report.stats import seeds_words
from pefthub.report.table import versus_base

MORRIS = 'Morris et al. 2026, "Learning to Reason in 13 Parameters" (arXiv 2602.04118)'
PEFT = "peft method_comparison (MetaMathQA → GSM8K, Llama-3.2-3B, SFT)"


@dataclass(frozen=True)
class Figure:
    """A published pair of accuracies (A, B in %) and where it comes from."""

    a: float
    b: float
    setting: str
    source: str

    @property
    def delta(self) -> float:
        return self.a - self.b

    def text(self) -> str:
        return f"{self.delta:+.1f} ({self.a:g}% vs {self.b:g}%; {self.setting}; {self.source})"


#: Published figures (percent), keyed by the comparison they stand beside.
PAPER: dict[str, Figure] = {
    "grpo-vs-sft@13": Figure(91, 83, "GSM8K, Qwen2.5-7B-Instruct", MORRIS),
    "grpo:120-vs-13": Figure(95, 91, "GSM8K, Qwen2.5-7B-Instruct", MORRIS),
    "sft:120-vs-13": Figure(84, 83, "GSM8K, Qwen2.5-7B-Instruct", MORRIS),
    "grpo:13-vs-full": Figure(50.1, 55.2, "Table 2, mean of six math benchmarks, Qwen2.5-7B-Instruct", MORRIS),
    "grpo:13-vs-large": Figure(50.1, 54.6, "Table 2, 13 vs 100,352 trained parameters, Qwen2.5-7B-Instruct",
                               MORRIS),
    "sft:13-vs-base": Figure(83, 76, "GSM8K, Qwen2.5-7B-Instruct", MORRIS),
    "sft:tiny-vs-lora": Figure(0.45, 47.8, "TinyLoRA 64 parameters vs LoRA r32", PEFT),
}


@dataclass(frozen=True)
class Claim:
    """One comparison a question asks for: rows A and B, the direction the paper reports."""

    key: str
    a: tuple[str, int | str | None, str]      # (method, params target or "~120", trainer)
    b: tuple[str, int | str | None, str]
    sign: int                                 # +1: the paper has A above B; -1: below
    paper: str | None                         # key into PAPER, or None when our notes have no figure


QUESTIONS: list[tuple[str, list[Claim]]] = [
    ("GRPO vs SFT at 13 parameters", [
        Claim("grpo-vs-sft@13", ("tinylora", 13, "grpo"), ("tinylora", 13, "sft"), +1, "grpo-vs-sft@13")]),
    ("TinyLoRA's parameter count 1 → 13 → ~120, under each trainer", [
        Claim("grpo:13-vs-1", ("tinylora", 13, "grpo"), ("tinylora", 1, "grpo"), +1, None),
        Claim("grpo:120-vs-13", ("tinylora", "~120", "grpo"), ("tinylora", 13, "grpo"), +1, "grpo:120-vs-13"),
        Claim("sft:13-vs-1", ("tinylora", 13, "sft"), ("tinylora", 1, "sft"), +1, None),
        Claim("sft:120-vs-13", ("tinylora", "~120", "sft"), ("tinylora", 13, "sft"), +1, "sft:120-vs-13")]),
    ("How close tiny adapters come to LoRA and full fine-tuning", [
        Claim("grpo:13-vs-lora", ("tinylora", 13, "grpo"), ("lora", None, "grpo"), -1, "grpo:13-vs-large"),
        Claim("grpo:13-vs-full", ("tinylora", 13, "grpo"), ("full", None, "grpo"), -1, "grpo:13-vs-full")]),
    ("Whether tiny adapters fail under SFT", [
        Claim("sft:13-vs-base", ("tinylora", 13, "sft"), ("base", None, "none"), +1, "sft:13-vs-base"),
        Claim("sft:13-vs-lora", ("tinylora", 13, "sft"), ("lora", None, "sft"), -1, "sft:tiny-vs-lora")]),
]

SUPPORTED, CONTRADICTED = "supported", "contradicted"
NOT_MEASURED, NOT_COMPARABLE = "not measured in this suite", "not comparable"
#: A null after correction; the verdict adds the seeds, e.g. "not significant after Holm (3 seeds)".
NULL = stats.SAME
#: An arm did not train (:func:`pefthub.report.health.did_not_train`): no verdict, and not in any Holm family.
NOT_TESTED = "not tested"
#: The pair of rows was already compared higher on the page: each comparison is counted once.
COUNTED_ONCE = "counted once"
PRIMARY_QUESTION = "Primary comparison, declared in the suite (tested on its own, not in the Holm family)"
PRIMARY, EXPLORATORY = "primary", "exploratory"
NEAR_120 = (100, 200)   # params targets that stand for the paper's "~120"


@dataclass
class Finding:
    """One claim checked against the suite; ``family`` says which multiple-testing family it is in."""

    claim: Claim
    a: str
    b: str
    comparison: stats.Comparison | None
    verdict: str
    note: str = ""
    family: str = EXPLORATORY
    floor: Floor | None = None                    # set when B is the base model and the items have gold answers
    versus_floor: stats.Comparison | None = None  # A against the floor (descriptive)

    @property
    def below_floor(self) -> bool:
        """A beat B (the base model) but is not shown above the constant-answer floor."""
        return (self.floor is not None and self.comparison is not None and self.comparison.delta > 0
                and not above(self.versus_floor))

    def floor_words(self) -> str:
        """``not above always "2" (36.0%): Δ -4.5 [-10.1, +1.2]``; empty unless :attr:`below_floor`."""
        if not self.below_floor:
            return ""
        c = self.versus_floor
        return (f"not above {self.floor.label} ({stats.fmt_pct(self.floor.accuracy)}%)"
                + (f": Δ {stats.interval_text(c)}" if c is not None else ""))

    @property
    def figure(self) -> Figure | None:
        return PAPER.get(self.claim.paper) if self.claim.paper else None

    @property
    def tested(self) -> bool:
        return self.comparison is not None and self.verdict not in (NOT_TESTED, COUNTED_ONCE)


def _find(rows: Sequence[Row], method: str, params, trainer: str) -> Row | None:
    matches = [r for r in rows if r.config.get("method") == method and not r.config.get("variant")
               and (r.trainer == trainer or method == stats.BASE_METHOD)]
    if params == "~120":
        near = [r for r in matches if isinstance(r.params_target, int) and NEAR_120[0] <= r.params_target <= NEAR_120[1]]
        return min(near, key=lambda r: abs(r.params_target - 120), default=None)
    return next((r for r in matches if r.params_target == params), None)


def _name(method: str, params, trainer: str) -> str:
    if method == stats.BASE_METHOD:
        return "base"
    return f"{method}{'' if params is None else f'@{params}'}/{trainer}"


def untrained_note(labels: Sequence[str], flags: dict[str, list[health.RowFlag]]) -> str:
    """``"tinylora@13/grpo did not train (flat-reward)"`` for each arm that did not train; empty when none."""
    return "; ".join(f"{label} did not train ({flags_words(gates)})" for label in dict.fromkeys(labels)
                     if (gates := health.did_not_train(flags.get(label, []))))


def untested_reason(row: Row, flags: dict[str, list[health.RowFlag]], control: Control | None = None) -> str:
    """Why a row's comparison with base is not tested: the failed positive control and/or the row's
    did-not-train flags (``"did not train (no-op)"``); empty when it is tested."""
    gates = health.did_not_train(flags.get(row.label, []))
    return "; ".join(filter(None, [control.note() if control is not None and control.gates(row) else "",
                                   f"did not train ({flags_words(gates)})" if gates else ""]))


def control_lines(control: Control | None, flags: dict[str, list[health.RowFlag]]) -> list[str]:
    """Markdown: the positive control's section, right after the primary comparison on the findings page (nothing
    without one)."""
    if control is None:
        return []
    c, floor, beyond = control.comparison, control.floor, control.versus_floor
    verdict = "**passed**" if control.passed else f"**not passed**: {control.note()}"
    against = (f"the base model, and against the constant answer ({floor.words()}; [why](../benchmarks.md#the-constant-answer-floor)),"
               if floor is not None else "the base model")
    lines = [f"## {CONTROL_QUESTION}", "",
             f"The suite declares `{control.label}` as its positive control: it passes only if it trained and the "
             f"95% intervals of Δ against {against} lie wholly above 0. If it does not pass, every comparison "
             f"with a {control.trainer.upper()} arm, above or below, reads *not tested* and is left out of its Holm family.", "",
             "| A − B | A | B | Δ [95% CI] | p (own test) | seeds | verdict | health |", "|---|---|---|---|---|---|---|---|",
             "| " + " | ".join([f"`{control.label}` − `{c.b if c else 'base'}`",
                               f"{stats.fmt_pct(c.accuracy_a)}%" if c else "-",
                               f"{stats.fmt_pct(c.accuracy_b)}%" if c else "-",
                               stats.interval_text(c) if c else "-", stats.fmt_p(c.p_value) if c else "-",
                               seeds_words(c) if c else "-", verdict,
                               flags_words(flags.get(control.label, [])) or "ok"]) + " |"]
    if floor is not None and beyond is not None:
        lines.append("| " + " | ".join([f"`{control.label}` − {floor.label}", f"{stats.fmt_pct(beyond.accuracy_a)}%",
                                        f"{stats.fmt_pct(beyond.accuracy_b)}%", stats.interval_text(beyond),
                                        stats.fmt_p(beyond.p_value), seeds_words(beyond),
                                        "above" if above(beyond) else "**not above**", "-"]) + " |")
    return lines + ["", f"- {control.sentence()}.", ""]


def check(rows: Sequence[Row], alpha: float = stats.ALPHA, *, primary: Sequence[tuple[str, str]] = (),
          flags: dict[str, list[health.RowFlag]] | None = None, control: Control | None = None,
          floor: Floor | None = None) -> list[tuple[str, list[Finding]]]:
    """Every question's findings, the ``primary`` comparisons (row labels A, B from the suite's
    ``primary`` key) first as their own question. A comparison with an arm that did not train, or with an
    arm of the trainer of a ``control`` that did not pass (:func:`positive_control`), is
    :data:`NOT_TESTED`; a pair of rows already compared is :data:`COUNTED_ONCE`; the rest are tested, the
    primary ones Holm-corrected among themselves and the others over the page's exploratory family. A
    comparison with the base model also compares A with the constant-answer ``floor`` (descriptive)."""
    flags = flags_of(rows) if flags is None else flags
    by_label = {r.label: r for r in rows}
    seen: dict[frozenset, str] = {}
    families: dict[str, list[Finding]] = {PRIMARY: [], EXPLORATORY: []}

    def judge(claim: Claim, a, b, a_name: str, b_name: str, family: str, where: str) -> Finding:
        if a is None or b is None:
            missing = [name for name, r in ((a_name, a), (b_name, b)) if r is None]
            return Finding(claim, a_name, b_name, None, NOT_MEASURED, f"no {' and no '.join(missing)} row", family)
        pair = frozenset((a.label, b.label))
        if pair in seen:
            return Finding(claim, a.label, b.label, None, COUNTED_ONCE, f"the same rows as {seen[pair]}", family)
        seen[pair] = where
        try:
            comparison = stats.compare_rows(a, b)
        except stats.PairingError as exc:
            return Finding(claim, a.label, b.label, None, NOT_COMPARABLE, str(exc), family)
        gated = control.note() if control is not None and (control.gates(a) or control.gates(b)) else ""
        note = "; ".join(filter(None, [gated, untrained_note((a.label, b.label), flags)]))
        if note:
            return Finding(claim, a.label, b.label, comparison, NOT_TESTED, note, family)
        finding = Finding(claim, a.label, b.label, comparison, NULL, "", family)
        if floor is not None and b.is_base:
            finding.floor, finding.versus_floor = floor, a.vs_floor
        families[family].append(finding)
        return finding

    out = []
    if primary:
        found = []
        for la, lb in primary:
            a, b = by_label.get(la), by_label.get(lb)
            claim = next((c for _, claims in QUESTIONS for c in claims
                          if a is not None and b is not None and _find(rows, *c.a) is a and _find(rows, *c.b) is b),
                         Claim(f"primary:{la} - {lb}", (la, None, ""), (lb, None, ""), 0, None))
            found.append(judge(claim, a, b, la, lb, PRIMARY, "the primary comparison"))
        out.append((PRIMARY_QUESTION, found))
    for question, claims in QUESTIONS:
        out.append((question, [judge(claim, _find(rows, *claim.a), _find(rows, *claim.b), _name(*claim.a),
                                     _name(*claim.b), EXPLORATORY, f"“{question}”") for claim in claims]))
    for members in families.values():
        for finding, adjusted in zip(members, stats.holm([f.comparison.p_value for f in members])):
            c = finding.comparison
            c.p_holm = adjusted
            if adjusted >= alpha:
                finding.verdict = (f"{NULL} ({seeds_words(c)})" if finding.family == EXPLORATORY or len(members) > 1
                                   else f"not significant ({seeds_words(c)})")
            elif finding.claim.sign == 0:
                finding.verdict = f"{finding.a} {'higher' if c.delta > 0 else 'lower'}"
            else:
                finding.verdict = SUPPORTED if (c.delta > 0) == (finding.claim.sign > 0) else CONTRADICTED
    return out


def p_words(f: Finding) -> str:
    """What stands in brackets after a finding's p: ``"Holm 0.075"``, ``"own test"`` (a primary
    comparison) or ``"not in the family"`` (not tested)."""
    if not f.tested:
        return "not in the family"
    return f"Holm {stats.fmt_p(f.comparison.p_holm)}" if f.family == EXPLORATORY else "own test"


def declared_primary(suite: str) -> list[tuple[str, str]]:
    """The ``primary`` comparisons of ``benchmarks/<suite>/suite.toml`` (none when there is no such file)."""
    declared = declared_suite(suite)
    return declared.primary if declared is not None else []


def declared_excluded(suite: str) -> list[str]:
    """The ``grid.exclude`` rows of ``benchmarks/<suite>/suite.toml`` (none when there is no such file)."""
    declared = declared_suite(suite)
    return declared.exclude if declared is not None else []


def made(results: Sequence[tuple[str, list[Finding]]], family: str = EXPLORATORY) -> list[Finding]:
    """The tested findings of one family (the comparisons its Holm correction ran over)."""
    return [f for _, found in results for f in found if f.family == family and f.tested]


def figure_words(f: Finding) -> str | None:
    """Where the published figure sits against the interval: ``"contradicts the published +8.0"`` when
    the interval lies wholly on the other side of 0, ``"excludes ..."`` when it only misses it,
    ``"contains ..."`` otherwise (``None`` without a figure or a comparison)."""
    if f.figure is None or f.comparison is None:
        return None
    c, d = f.comparison, f.figure.delta
    low, high = 100 * c.low, 100 * c.high
    if low <= d <= high:
        return f"its interval contains the published {d:+.1f}"
    if (d > 0 and high < 0) or (d < 0 and low > 0):
        return f"contradicts the published {d:+.1f}"
    return f"excludes the published {d:+.1f}"


def statement(f: Finding) -> str:
    """One sentence per finding; a null is stated as a null, an untested one says why."""
    if f.comparison is None:
        return f"{f.a} vs {f.b}: {f.verdict} ({f.note})."
    c = f.comparison
    ci = f"{stats.fmt_pct(c.low, sign=True)} to {stats.fmt_pct(c.high, sign=True)}"
    if f.verdict == NOT_TESTED:
        return (f"{f.a} vs {f.b}: not tested: {f.note}. For the record only (no verdict, not in the Holm family): "
                f"Δ {stats.fmt_pct(c.delta, sign=True)} points (95% CI {ci}, p {stats.fmt_p(c.p_value)}).")
    p = f"Holm p {stats.fmt_p(c.p_holm)}" if f.family == EXPLORATORY else f"p {stats.fmt_p(c.p_holm)}, its own test"
    head = (f"{f.a} scores {stats.fmt_pct(c.accuracy_a)}% and {f.b} {stats.fmt_pct(c.accuracy_b)}% on the same "
            f"{c.n_items} items: Δ {stats.fmt_pct(c.delta, sign=True)} points (95% CI {ci}, {p})")
    words = figure_words(f)
    tail = f"; the interval {words.removeprefix('its interval ')}" if words else ""
    paper = (f"the published {f.figure.delta:+.1f}" if f.figure else
             f"the paper's direction ({'higher' if f.claim.sign > 0 else 'lower'})")
    beyond = f.floor_words()
    tail += (f"; {f.a} is {beyond}, so the gain is not shown to be more than a change towards the most common "
             "answer" if beyond else "")
    if f.verdict == SUPPORTED:
        return f"{head}. The difference has the sign of {paper}{tail}."
    if f.verdict == CONTRADICTED:
        return f"{head}. The difference has the opposite sign to {paper}{tail}."
    if f.claim.sign == 0:
        return f"{head}: {f.verdict}."
    return f"{head}: {f.verdict}{tail}."


def render_markdown(suite: str, rows: Sequence[Row], source: str, *, records: Sequence[RunRecord] = (),
                    pilots: Sequence[tuple[str, list[RunRecord]]] = (), command: str | None = None,
                    primary: Sequence[tuple[str, str]] = (), strata_of=None, control: str | None = None,
                    excluded: Sequence[str] = ()) -> str:
    """The findings page for ``suite`` from its ``rows`` (:func:`pefthub.report.table.suite_table`;
    deterministic: regenerating unchanged results is a no-op). With ``records`` (every run of the suite)
    it also says how learning rates were chosen and what the runs cost; ``pilots`` are (source, run
    records) compared with the suite's runs; ``primary`` the suite's declared primary comparisons (row
    labels A, B), stated first; ``strata_of`` (:func:`pefthub.tasks.strata_of`) adds accuracy by stratum;
    ``control`` the suite's positive-control row label (:func:`positive_control`), stated right after them;
    ``excluded`` the rows the suite does not run (its ``grid.exclude``), named under the task."""
    flags = flags_of(rows)
    gate = positive_control(rows, control, flags)
    floor = constant_answer(row_rules.base_row(rows))
    results = check(rows, primary=primary, flags=flags, control=gate, floor=floor)
    family = made(results)
    power = suite_power(rows, row_rules.base_row(rows))
    docs = [r.doc for r in records]
    selected = [d for r in rows for d in r.docs]
    models = sorted({d["config"].get("model") for d in selected})
    tasks = sorted({stats.canonical_json(d["config"].get("task")) for d in selected})
    lines = [f"# Findings: suite `{suite}`", "",
             f"Generated by `{command or f'pefthub findings {suite}'}` from the {len(selected)} selected runs in `{source}`. "
             "Do not edit by hand: rerun the command. How to read Δ, the interval, p and Holm: "
             "[docs/benchmarks.md](../benchmarks.md#reading-the-numbers).", "",
             f"Model {', '.join(f'`{m}`' for m in models)}; task {', '.join(f'`{t}`' for t in tasks)}.", ""]
    if excluded:
        lines += [f"Not run, by the suite's decision (`grid.exclude`; its suite.toml says why): "
                  f"{', '.join(f'`{r}`' for r in excluded)}. A comparison with one of them reads *{NOT_MEASURED}*.", ""]
    if power is not None:
        lines += [f"**{'Smoke run' if power.smoke else 'Power'}.** {power.sentence()}", ""]
    lines += ["Each comparison is paired on the same test items (Δ = A − B in accuracy points; 95% interval exact for "
              "one seed per side, containing 0 exactly when McNemar's p ≥ 0.05, over items and seeds otherwise, "
              f"{stats.CUT_WORDS}). "
              + ("The primary comparison declared in the suite is tested on its own; " if primary else "")
              + f"p-values are Holm-corrected over the {counted(len(family), 'exploratory comparison')} on this page, each pair "
              "of rows counted once. A comparison with an arm that did not train (flagged `no-op` or `collapsed` on "
              "a majority of its seeds, or `flat-reward`: [run health](../benchmarks.md#run-health)) is *not tested*: "
              "its numbers are shown for the record, with no verdict, and it is left out of the Holm family. "
              "A claim is *supported* when "
              "the difference is significant with the paper's sign, *contradicted* when significant with the opposite "
              "sign. The published figures come from larger models, other tasks and full budgets: they give the "
              "direction to test, not a number to reproduce; the verdict says whether the interval contains, "
              "excludes or contradicts (excludes, on the other side of 0) the published Δ.", ""]
    opening = results[:1] if results and results[0][0] == PRIMARY_QUESTION else []
    for question, findings in opening:
        lines += question_lines(question, findings, flags, gate)
    lines += control_lines(gate, flags)
    for question, findings in results[len(opening):]:
        lines += question_lines(question, findings, flags, gate)
    seeds = per_seed(rows)
    lines += versus_base_lines(rows, flags, seeds, gate)
    lines += strata_lines(rows, strata_of)
    lines += budget_lines(rows)
    lines += per_seed_lines(rows, seeds)
    lines += tuning_lines(records)
    for pilot_source, pilot_records in pilots:
        lines += pilot_lines(records, pilot_records, pilot_source)
    lines += cost_lines(docs)
    return "\n".join(lines)


def question_lines(question: str, findings: Sequence[Finding], flags: dict[str, list[health.RowFlag]],
                   gate: Control | None) -> list[str]:
    """Markdown: one question's section of the findings page (table, health, one statement per finding)."""
    lines = [f"## {question}", "", "| A − B | A | B | Δ [95% CI] | p (Holm) | verdict | health | published |",
              "|---|---|---|---|---|---|---|---|"]
    for f in findings:
        c = f.comparison
        p = f"{stats.fmt_p(c.p_value)} ({p_words(f).removeprefix('Holm ')})" if c else "-"
        verdict = f"**{f.verdict}**" + (f": {f.note}" if f.verdict in (NOT_TESTED, COUNTED_ONCE) else "")
        words = "; ".join(filter(None, [figure_words(f) if f.tested else None, f.floor_words() if f.tested else ""]))
        lines.append("| " + " | ".join([
            f"`{f.a}` − `{f.b}`",
            f"{stats.fmt_pct(c.accuracy_a)}%" if c else "-", f"{stats.fmt_pct(c.accuracy_b)}%" if c else "-",
            stats.interval_text(c) if c else "-", p, verdict + (f"; {words}" if words else ""),
            comparison_health(f, flags),
            f.figure.text() if f.figure else "not reported in our notes"]) + " |")
    lines.append("")
    untested = [f for f in findings if f.verdict == NOT_TESTED]
    if untested:
        lines += [f"Not tested, and left out of the Holm family: {counted(len(untested), 'comparison')} "
                  "with an arm that did not train"
                  + (f" or a {gate.trainer.upper()} arm while the positive control has not passed"
                     if gate is not None and not gate.passed else "") + ".", ""]
    lines += health_lines({label: flags.get(label, []) for f in findings for label in (f.a, f.b)})
    lines += [f"- {statement(f)}" for f in findings]
    lines.append("")
    return lines


EXAMPLE_START = ("<!-- worked example: generated by `pefthub findings cpu-pilots-quick-v1 --results "
                 "leaderboards/cpu-pilots/quick-v1/results --worked-example docs/benchmarks.md` -->")
EXAMPLE_END = "<!-- end of worked example -->"


def worked_example(suite: str, rows: Sequence[Row]) -> str:
    """Markdown that walks through one row's comparison with base step by step (the row with the smallest p)."""
    family = {label: c for label, c in tested_versus_base(rows).items()
              if isinstance(c, stats.Comparison) and c.p_holm is not None}
    if not family:
        return "(no row of this suite that trained can be paired with a base row)"
    label, c = min(family.items(), key=lambda kv: (kv[1].p_value, kv[0]))
    n, m = c.n_items, c.a_only + c.b_only
    ranks = sorted(family.values(), key=lambda x: x.p_value)
    rank = ranks.index(c)
    lines = [
        f"Row A = `{c.a}`, B = `{c.b}` in suite `{suite}`: {n} shared test items, {c.seeds_a} and {c.seeds_b} "
        "seed(s). The paired table counts items:", "",
        f"| | `{c.b}` right | `{c.b}` wrong |", "|---|---|---|",
        f"| `{c.a}` right | {c.both_right} | {c.a_only} |", f"| `{c.a}` wrong | {c.b_only} | {c.both_wrong} |", "",
        f"1. **Accuracies**: A {stats.fmt_pct(c.accuracy_a)}%, B {stats.fmt_pct(c.accuracy_b)}%. "
        f"**Δ** = ({c.a_only} − {c.b_only}) / {n} = {stats.fmt_pct(c.delta, sign=True)} points: only the "
        f"{m} items where they disagree move it.",
        *interval_steps(c),
        f"4. **McNemar**: of the {m} discordant items A wins {c.a_only}; if neither row were better each would "
        f"be a fair coin, and a split at least as lopsided as {c.a_only}–{c.b_only} (either way) has probability "
        f"p = {stats.fmt_p(c.p_value)}.",
        f"5. **Holm**: {len(family)} rows that trained were compared with base (a row that did not train is left "
        f"out: see Run health). Sorted by p this one is number {rank + 1}, "
        f"so its p is multiplied by {len(family) - rank} (and never below an earlier adjusted p): "
        f"{stats.fmt_p(c.p_holm)}. {'Below' if c.p_holm < stats.ALPHA else 'Not below'} 0.05, so the row is "
        f"marked **{row_verdict(c)}**.",
    ]
    power = suite_power(rows, row_rules.base_row(rows))
    if power is not None:
        lines.append(f"6. **Power**: {power.sentence()}")
    return "\n".join(lines)


def interval_steps(c: stats.Comparison) -> list[str]:
    """Steps 2 and 3 of the worked example: how the comparison's 95% interval was computed."""
    import math

    from scipy.stats import binomtest

    n, m = c.n_items, c.a_only + c.b_only
    interval = f"[{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}]"
    if c.interval != stats.EXACT_INTERVAL:
        sd = c.se * math.sqrt(n)
        return [f"2. **Standard error**: the per-item differences dᵢ have standard deviation {sd:.3f} over items "
                f"and seeds, so SE = {100 * c.se:.2f} points.",
                f"3. **95% interval**: Δ ± t₀.₉₇₅ with {c.df:.0f} df × SE = {stats.fmt_pct(c.delta, sign=True)} ± "
                f"{stats.t_quantile(c.df):.2f} × {100 * c.se:.2f} = {interval}"
                + (f", {stats.CUT_WORDS}." if c.interval == stats.CLIPPED_INTERVAL else ".")]
    psi = binomtest(m, n).proportion_ci(stats.LEVEL, method="exact")
    if m == 0:
        return ["2. **Exact interval**: the rows agree on every item, so Δ = 0 and the discordant split is undefined.",
                f"3. **95% interval**: the share of items on which they could disagree is at most "
                f"{psi.high:.3f} (Clopper–Pearson, 0 of {n}), so |Δ| ≤ that: {interval}."]
    pi = binomtest(c.a_only, m).proportion_ci(stats.LEVEL, method="exact")
    return [f"2. **Exact interval**: Δ = ψ·(2π − 1), ψ the share of items on which the rows disagree and π the share "
            f"of those A wins. Clopper–Pearson 95% intervals: π ∈ [{pi.low:.3f}, {pi.high:.3f}] "
            f"({c.a_only} of {m}; the exact McNemar test's own model), ψ ∈ [{psi.low:.3f}, {psi.high:.3f}] "
            f"({m} of {n}).",
            f"3. **95% interval**: the smallest and largest ψ·(2π − 1) over those ranges: {interval}. It contains 0 "
            "exactly when π's interval contains ½, i.e. exactly when the McNemar p below is ≥ 0.05."]


def replace_worked_example(text: str, example: str) -> str:
    """``text`` with the block between :data:`EXAMPLE_START` and :data:`EXAMPLE_END` replaced."""
    from pefthub.errors import ConfigError

    if EXAMPLE_START not in text or EXAMPLE_END not in text:
        raise ConfigError("the file has no worked-example markers (see pefthub/report/findings.py EXAMPLE_START)")
    head, rest = text.split(EXAMPLE_START, 1)
    _, tail = rest.split(EXAMPLE_END, 1)
    return f"{head}{EXAMPLE_START}\n{example}\n{EXAMPLE_END}{tail}"


HEADLINE_END = "<!-- end of headline -->"


def headline_start(suite: str) -> str:
    return f"<!-- headline of {suite}: generated by `pefthub findings {suite} --headline FILE`; do not edit -->"


def headline(suite: str, rows: Sequence[Row], flags: dict[str, list[health.RowFlag]] | None = None,
             primary: Sequence[tuple[str, str]] = (), control: str | None = None) -> str:
    """One paragraph a README can carry: the ``primary`` comparisons first, then the positive ``control`` (a row
    label, :func:`positive_control`; without a primary, the paper's 13-parameter GRPO − SFT comparison comes last),
    then which rows did not train, and how many of the rest beat, match or fall below the base model on the
    same test items (Holm over the rows tested), with the rows significant on every seed and the seeds
    significantly worse than base; each row it names carries its run-health flags (``flags``: by label,
    the rows' own when omitted)."""
    flags = flags_of(rows) if flags is None else flags
    gate = positive_control(rows, control, flags)
    outcomes = tested_versus_base(rows, gate)
    compared = {label: c for label, c in outcomes.items() if isinstance(c, stats.Comparison)}
    family = {label: c for label, c in compared.items() if c.p_holm is not None}
    if not compared:
        return f"Suite `{suite}` has no row paired with a base-model row yet."
    trained = [r for r in rows if not r.is_base]
    seeds = sorted({len(r.docs) for r in trained})
    budgets = sorted({(r.config.get("budget") or {}).get("steps") for r in trained} - {None})
    sizes = sorted({(r.config.get("budget") or {}).get("batch_size") for r in trained} - {None})
    per = per_seed(rows)
    floor = constant_answer(row_rules.base_row(rows))
    results = check(rows, primary=primary, flags=flags, control=gate, floor=floor)

    def named(c: stats.Comparison) -> str:
        words = flags_words(flags.get(c.a, []))
        return f"`{c.a}` {stats.interval_text(c)}" + (f", flagged {words}" if words else "")

    def comparison_text(f: Finding, name: str) -> str:
        c = f.comparison
        if not f.tested:
            return f"{name}: {f.verdict}" + (f": {f.note}" if f.note else "")
        words = "; ".join(f"`{label}` flagged {flags_words(flags[label])}" for label in (f.a, f.b) if flags.get(label))
        fig = f.figure
        if f.family == PRIMARY:
            p = f"p {stats.fmt_p(c.p_value)}, its own test"
        else:
            p = (f"p {stats.fmt_p(c.p_value)}; {stats.fmt_p(c.p_holm)} after Holm over the "
                 f"{len(made(results))} comparisons of the findings page")
        figure = figure_words(f)
        published = f" ({figure.removeprefix('its interval ')}, {fig.a:g}% vs {fig.b:g}% on {fig.setting})" if fig else ""
        return (f"{name}{f' ({words})' if words else ''}: {stats.interval_text(c)} points ({p}), "
                f"{f.verdict}{published}")

    any_c = next(iter(compared.values()))
    shape = ", ".join(filter(None, [
        f"{budgets[0]} steps of {sizes[0]}" if len(budgets) == 1 and len(sizes) == 1 else None,
        f"{len(trained)} rows",
        f"{seeds[0]} seed{'s' if seeds[0] > 1 else ''} each" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]} seeds",
        f"{any_c.n_items} paired test items"]))
    parts = []
    primaries = [f for question, found in results if question == PRIMARY_QUESTION for f in found]
    for f in primaries:
        parts.append(comparison_text(f, f"Primary comparison `{f.a}` − `{f.b}`"))

    def listed(verdict: str) -> list[str]:
        ordered = sorted((c for c in family.values() if c.verdict == verdict), key=lambda c: -abs(c.delta))
        return [named(c) for c in ordered]

    untrained = [label for label, c in compared.items() if c.p_holm is None and health.did_not_train(flags.get(label, []))]
    gated = [label for label, c in compared.items() if c.p_holm is None and label not in untrained]
    base_pct = f"{stats.fmt_pct(any_c.accuracy_b)}%"
    text = f"on `{suite}` ({shape}), "
    if gated:
        text += (f"{len(gated)} {gate.trainer.upper()} row{'s' if len(gated) > 1 else ''} that trained "
                 f"{'are' if len(gated) > 1 else 'is'} not tested for want of a positive control ("
                 + ", ".join(f"`{label}`" for label in gated) + "); ")
    if untrained:
        text += (f"{len(untrained)} row{'s' if len(untrained) > 1 else ''} did not train and "
                 f"{'are' if len(untrained) > 1 else 'is'} not tested ("
                 + "; ".join(f"{words}: {', '.join(f'`{label}`' for label in labels)}"
                             for words, labels in _grouped(untrained, flags).items())
                 + "); ")
    better, worse = listed(stats.BETTER), listed(stats.WORSE)
    same = [c for c in family.values() if c.verdict == stats.SAME]
    steady = [c for c in same if every_seed_significant(per.get(c.a, ()))]
    text += (f"after Holm correction over the {len(family)} row{'' if len(family) == 1 else 's'} "
             f"{'tested' if gated else 'that trained'}, "
             + (f"{len(better)} beat the base model's {base_pct} ({'; '.join(better)})" if better
                else f"no row beats the base model's {base_pct}")
             + f", {len(same)} {'is' if len(same) == 1 else 'are'} not significant after Holm"
             + (f" ({len(steady)} of them significant on every seed: "
                f"{'; '.join(named(c) for c in sorted(steady, key=lambda c: -abs(c.delta)))})" if steady else "")
             + " and "
             + (f"{len(worse)} {'is' if len(worse) == 1 else 'are'} worse ({'; '.join(worse)})" if worse
                else "none is worse"))
    if floor is not None and better:
        by_label = {r.label: r for r in rows}
        beyond = [label for label, c in family.items() if c.verdict == stats.BETTER
                  and above(by_label[label].vs_floor)]
        if len(beyond) < len(better):    # named only where it changes the reading
            text += (f"; only {len(beyond)} of them also beat{'s' if len(beyond) == 1 else ''} the constant answer ("
                     f"{floor.words()}): " + ", ".join(f"`{label}`" for label in beyond) if beyond else
                     f"; none of them beats the constant answer ({floor.words()}), so no row is shown to have "
                     "learned more than to give the most common answer")
    bad = worse_seeds(per)
    text += ("; seeds significantly worse than base: " + "; ".join(
        f"`{label}` seed {r.seed} ({stats.fmt_pct(r.comparison.accuracy_a)}%, p {stats.fmt_p(r.comparison.p_value)})"
        for label, r in bad) if bad else "; no seed is significantly worse than base")
    rest = [text[0].upper() + text[1:]]
    if not primaries:
        grpo_sft = next((f for question, found in results for f in found
                         if f.claim.a == ("tinylora", 13, "grpo") and f.claim.b == ("tinylora", 13, "sft")), None)
        if grpo_sft is not None and grpo_sft.comparison is not None:
            rest.append(comparison_text(grpo_sft, "TinyLoRA at 13 parameters, GRPO − SFT"))
    lead = [gate.sentence()] if gate is not None else []
    return "".join(f"{'; '.join(sentence)}. " for sentence in (parts, lead, rest) if sentence) + \
        "Δ in accuracy points, 95% interval over items and seeds."


def _grouped(labels: Sequence[str], flags: dict[str, list[health.RowFlag]]) -> dict[str, list[str]]:
    """Rows that did not train, grouped by the words of the flags that say so."""
    out: dict[str, list[str]] = {}
    for label in labels:
        out.setdefault(flags_words(health.did_not_train(flags[label])), []).append(label)
    return out


def replace_headline(text: str, suite: str, paragraph: str) -> str:
    """``text`` with the block between ``suite``'s headline markers replaced by ``paragraph``."""
    from pefthub.errors import ConfigError

    start = headline_start(suite)
    if start not in text or HEADLINE_END not in text.split(start, 1)[1]:
        raise ConfigError(f"the file has no headline markers for suite {suite} (see pefthub/report/findings.py headline_start)")
    head, rest = text.split(start, 1)
    _, tail = rest.split(HEADLINE_END, 1)
    return f"{head}{start}\n{paragraph}\n{HEADLINE_END}{tail}"


def tested_versus_base(rows: Sequence[Row], control: Control | None = None) -> dict[str, stats.Comparison | str]:
    """Every trained row against the base model as :func:`pefthub.report.table.versus_base` compared it
    (Holm over the rows that trained; a row that did not train is compared for the record only: no Holm
    p, no verdict), by label: the comparison, or why there is none. A ``control`` that did not pass takes
    the rows of its trainer out of the family too (compared afresh, the rows' own comparisons untouched)."""
    gated = [r.label for r in rows if control is not None and control.gates(r)]
    if gated:
        return versus_base(rows, row_rules.base_row(rows), untested=gated)
    return {r.label: r.vs_base or r.vs_base_note for r in rows if not r.is_base and (r.vs_base or r.vs_base_note)}


def flags_of(rows: Sequence[Row]) -> dict[str, list[health.RowFlag]]:
    """Each row's run-health flags (:func:`pefthub.report.health.row_flags`), by label."""
    return {r.label: list(r.flags) for r in rows}


@dataclass(frozen=True)
class SeedResult:
    """One seed of a row against the base model on the same test items (McNemar, exact)."""

    seed: object
    comparison: stats.Comparison

    @property
    def significant(self) -> bool:
        return self.comparison.p_value < stats.ALPHA


def per_seed(rows: Sequence[Row]) -> dict[str, list[SeedResult]]:
    """Each trained row's seeds one by one against the base model's first run, by row label; ``p_holm``
    of each comparison is Holm over every per-seed comparison of the suite."""
    base = row_rules.base_row(rows)
    if base is None or not base.records:
        return {}
    reference = base.seed_row(base.records[0])
    try:
        ref_scores = stats.item_scores(reference)
    except stats.PairingError:
        return {}
    out: dict[str, list[SeedResult]] = {}
    for row in rows:
        if row.is_base:
            continue
        for record in row.records:
            try:
                c = stats.compare(stats.item_scores(row.seed_row(record)), ref_scores)
            except stats.PairingError:
                continue
            out.setdefault(row.label, []).append(SeedResult(record.seed, c))
    every = [r.comparison for found in out.values() for r in found]
    for c, adjusted in zip(every, stats.holm([c.p_value for c in every])):
        c.p_holm = adjusted
    return out


def every_seed_significant(found: Sequence[SeedResult]) -> int:
    """+1 (or -1) when a row has several seeds and each is significantly above (below) base; else 0."""
    if len(found) < 2 or not all(r.significant for r in found):
        return 0
    signs = {r.comparison.delta > 0 for r in found}
    return 0 if len(signs) > 1 else (1 if signs.pop() else -1)


def worse_seeds(seeds: dict[str, list[SeedResult]]) -> list[tuple[str, SeedResult]]:
    """(row label, seed) for every seed significantly worse than base (McNemar p < 0.05 before correction)."""
    return [(label, r) for label, found in seeds.items() for r in found if r.significant and r.comparison.delta < 0]


def row_verdict(c: stats.Comparison, found: Sequence[SeedResult] = ()) -> str:
    """A row's verdict against base in words: better/worse, or "not significant after Holm (3 seeds)",
    adding when every seed was significant on its own."""
    if c.verdict != stats.SAME:
        return c.verdict
    text = stats.null_words(c)
    direction = every_seed_significant(found)
    if direction:
        worst = max(r.comparison.p_value for r in found)
        text += (f"; {'above' if direction > 0 else 'below'} base on every seed (per-seed McNemar p ≤ "
                 f"{stats.fmt_p(worst)})")
    return text


def versus_base_lines(rows: Sequence[Row], flags: dict[str, list[health.RowFlag]] | None = None,
                      seeds: dict[str, list[SeedResult]] | None = None, control: Control | None = None) -> list[str]:
    """Markdown: every row against the base model on the same test items, Holm-corrected over the rows
    that trained, with each row's run-health flags (``flags``: by label, the rows' own when omitted) and
    ``seeds`` (:func:`per_seed`, computed when omitted); a ``control`` that did not pass leaves its
    trainer's rows untested."""
    flags = flags_of(rows) if flags is None else flags
    outcomes = tested_versus_base(rows, control)
    if not any(isinstance(c, stats.Comparison) for c in outcomes.values()):
        return []
    seeds = per_seed(rows) if seeds is None else seeds
    base = row_rules.base_row(rows)
    floor = constant_answer(base)
    family = [c for c in outcomes.values() if isinstance(c, stats.Comparison) and c.p_holm is not None]
    trained = sorted((r for r in rows if not r.is_base), key=lambda r: (r.trainer, r.trainable_params or 0, r.label))
    lines = ["## Every row against the base model", "",
             "Test accuracy of each row (its chosen rate, every seed) and Δ = row − base on the same items, "
             + (f"p Holm-corrected over the {counted(len(family), 'row')} tested; a row that did not train is *not tested*, "
                f"and so is every {control.trainer.upper()} row, the positive control `{control.label}` not having "
                "passed " if control is not None and not control.passed else
                f"p Holm-corrected over the {counted(len(family), 'row')} that trained; a row that did not train is *not tested* ")
             + "(its numbers for the record, outside the family). *accuracy* is the task's scored metric; "
             "*strict-match* (mean over seeds) counts only answers in the exact format the prompt asks for, so a "
             "gain in accuracy that strict-match does not share is a change of answer format"
             + (f" (base: {strict_text(base)})" if base else "") + "."
             + (f" *Δ vs {floor.label}*: {floor.words()}; a row whose interval against it does not lie above 0 has "
                "not shown that it learned more than to give the most common answer ([the constant-answer floor]"
                "(../benchmarks.md#the-constant-answer-floor); descriptive, not corrected)." if floor else ""), "",
             "| row | trained parameters | seeds | accuracy | strict-match | Δ vs base [95% CI] | p (Holm) | verdict | "
             + (f"Δ vs {floor.label} [95% CI] | " if floor else "") + "health |",
             "|---|---|---|---|---|---|---|---|" + ("---|" if floor else "") + "---|"]
    for row in trained:
        c = outcomes.get(row.label)
        words = flags_words(flags.get(row.label, [])) or "ok"
        if not isinstance(c, stats.Comparison):
            lines.append(f"| `{row.label}` | - | {len(row.docs)} | - | {strict_text(row)} | not paired: "
                         f"{c or 'no comparison'} | - | - | " + ("- | " if floor else "") + f"{words} |")
            continue
        beyond = ""
        if floor is not None:
            x = row.vs_floor
            beyond = ("-" if x is None else stats.interval_text(x) + (" above" if above(x) else "")) + " | "
        params = "-" if row.trainable_params is None else f"{row.trainable_params:,}"
        if c.p_holm is None:
            p = f"{stats.fmt_p(c.p_value)} (not in the family)"
            verdict = f"{NOT_TESTED}: {untested_reason(row, flags, control)}"
        else:
            p, verdict = f"{stats.fmt_p(c.p_value)} ({stats.fmt_p(c.p_holm)})", row_verdict(c, seeds.get(row.label, ()))
        lines.append(f"| `{row.label}` | {params} | {c.seeds_a} | {stats.fmt_pct(c.accuracy_a)}% | {strict_text(row)} | "
                     f"{stats.interval_text(c)} | {p} | {verdict} | {beyond}{words} |")
    lines.append("")
    return lines + health_lines({row.label: flags.get(row.label, []) for row in trained})


def strict_text(row: Row) -> str:
    """A row's mean strict-match test score over its seeds (``exact_match,strict-match``), or ``-``."""
    return "-" if row.strict_accuracy is None else f"{stats.fmt_pct(row.strict_accuracy)}%"


BUDGET_QUESTION = "How far the budget goes: validation at each checkpoint"


def budget_lines(rows: Sequence[Row]) -> list[str]:
    """Markdown: each trained row's validation accuracy at its checkpoints (:mod:`pefthub.report.curves`),
    whether it still improves at the last one and whether it is past its best; nothing without checkpoints."""
    found = curves.plateaus(rows)
    if not found:
        return []
    steps = sorted({p.step for f in found for p in f.curve.points})

    def segment(x: curves.Segment | None) -> str:
        return "-" if x is None else (f"{x.text()} (step {x.start} → {x.end}, {x.seeds} seed"
                                      f"{'s' if x.seeds != 1 else ''})")

    lines = [f"## {BUDGET_QUESTION}", "",
             "Validation accuracy at each checkpoint step scored inside the runs (`eval.checkpoints`), mean over "
             "seeds. Each change has a 95% interval (Newcombe's interval on the counts pooled over seeds; "
             "checkpoints keep no item vectors, so it is unpaired and conservative; widened to the t interval "
             "over the seeds' own differences). A row has *stopped* improving when its last change does not "
             "detectably rise and it is not at its best at the last checkpoint after a detectable rise over the "
             "run; *past its peak* when the last checkpoint is detectably below the best one (the budget "
             "overshoots it). A last change with no detectable rise is a null, not a plateau: its interval says "
             "how large a gain it leaves open.", "",
             "| row | " + " | ".join(f"step {s}" for s in steps) + " | last change [95% CI] | first to last | verdict |",
             "|---|" + "---|" * len(steps) + "---|---|---|"]
    for f in found:
        at = {p.step: p for p in f.curve.points}
        verdict = f.verdict() + (f" ({f.from_peak.text()} since step {f.peak.step})" if f.past_peak else "")
        lines.append("| " + " | ".join(
            [f"`{f.label}`"] + [f"{stats.fmt_pct(at[s].accuracy)}%" if s in at else "-" for s in steps]
            + [segment(f.recent), segment(f.overall), verdict]) + " |")
    stopped = [f"`{f.label}` ({f.verdict()})" for f in found if f.stopped]
    going = [f"`{f.label}` ({f.verdict()})" for f in found if not f.stopped]
    lines += ["", f"- Not improving at the last checkpoint (stopped, or never detectably improved): {len(stopped)} "
              f"of {len(found)} rows" + (f": {'; '.join(stopped)}" if stopped else "") + ". "
              + (f"Not shown to have stopped, so the budget may be short for them: {'; '.join(going)}."
                 if going else "The budget is at or past where validation stops improving for every row with "
                 "checkpoints."), ""]
    return lines


def strata_lines(rows: Sequence[Row], strata_of=None) -> list[str]:
    """Markdown: each row against the base model on the items of each of the task's strata
    (:func:`pefthub.report.strata.by_stratum` with ``strata_of``, :func:`pefthub.tasks.strata_of`), with
    strict-match beside flexible-extract; nothing without ``strata_of`` or when the task has no strata."""
    if strata_of is None:
        return []
    base = row_rules.base_row(rows)
    names, found = strata.by_stratum(rows, base, strata_of)
    if not found:
        return []
    sizes = {s.name: s.n_items for results in found.values() for s in results}
    order = sorted((r for r in rows if r.label in found), key=lambda r: (r.trainer, r.trainable_params or 0, r.label))
    first = next(iter(found.values()))
    base_cells = {s.name: f"{stats.fmt_pct(s.comparison.accuracy_b)}%" for s in first}
    lines = ["## Accuracy by stratum", "",
             "Each row against the base model on the test items of each stratum of the task (the task's own "
             "`stratum`, e.g. the number of terms): accuracy (seeds averaged per item) and Δ = row − base with its "
             "95% interval on those items, not corrected for the several strata (descriptive). *accuracy* is the "
             "task's scored metric (flexible-extract); *strict-match* counts only answers in the format the prompt "
             "asks for (whole test set, mean over seeds; the samples do not record it per item). A gain confined "
             "to one stratum while strict-match falls is a change of answer format, not of skill.", "",
             "| row | seeds | accuracy | strict-match | " + " | ".join(
                 f"{name} ({sizes[name]} items; base {base_cells.get(name, '-')})" for name in names) + " |",
             "|---|---|---|---|" + "---|" * len(names),
             f"| `{base.label}` | {base.seeds} | {stats.fmt_pct(base.accuracy)}% | {strict_text(base)} | "
             + " | ".join(base_cells.get(name, "-") for name in names) + " |"]
    for row in order:
        cells = {s.name: f"{stats.fmt_pct(s.comparison.accuracy_a)}%: {stats.interval_text(s.comparison)}"
                 for s in found[row.label]}
        lines.append(f"| `{row.label}` | {row.seeds} | {stats.fmt_pct(row.accuracy)}% | {strict_text(row)} | "
                     + " | ".join(cells.get(name, "-") for name in names) + " |")
    return lines + [""]


def per_seed_lines(rows: Sequence[Row], seeds: dict[str, list[SeedResult]]) -> list[str]:
    """Markdown: each row's seeds one by one against base (accuracy and exact McNemar p on the same
    items), then the seeds significantly worse than base and the rows significant on every seed."""
    if not seeds:
        return []
    n = sum(len(found) for found in seeds.values())
    lines = ["## Every seed against the base model", "",
             "Each seed of each row (at the row's chosen rate) against the base model's run on the same test items: "
             "accuracy, and McNemar's exact p for the paired difference (▲ significantly above base, ▼ below, "
             f"p < 0.05 before correction; Holm over all {n} per-seed tests in the list below).", "",
             "| row | seed: accuracy (p vs base) |", "|---|---|"]
    order = sorted((r for r in rows if r.label in seeds), key=lambda r: (r.trainer, r.trainable_params or 0, r.label))
    for row in order:
        cells = [f"{r.seed}: {stats.fmt_pct(r.comparison.accuracy_a)}% (p {stats.fmt_p(r.comparison.p_value)}"
                 + ((" ▲" if r.comparison.delta > 0 else " ▼") if r.significant else "") + ")"
                 for r in seeds[row.label]]
        lines.append(f"| `{row.label}` | {'; '.join(cells)} |")
    lines.append("")
    worse = worse_seeds(seeds)
    base_pct = stats.fmt_pct(next(iter(seeds.values()))[0].comparison.accuracy_b)
    lines.append(f"Seeds significantly worse than base ({base_pct}%): " + (
        "; ".join(f"`{label}` seed {r.seed} {stats.fmt_pct(r.comparison.accuracy_a)}% "
                  f"(Δ {stats.fmt_pct(r.comparison.delta, sign=True)}, p {stats.fmt_p(r.comparison.p_value)}, "
                  f"Holm {stats.fmt_p(r.comparison.p_holm)})" for label, r in worse) if worse else "none") + ".")
    steady = [(label, every_seed_significant(found)) for label, found in seeds.items() if every_seed_significant(found)]
    if steady:
        lines.append("")
        lines.append("Significant on every seed: " + "; ".join(
            f"`{label}` ({'above' if d > 0 else 'below'} base on all {len(seeds[label])}, p ≤ "
            f"{stats.fmt_p(max(r.comparison.p_value for r in seeds[label]))})" for label, d in steady)
            + ". Where the row is not significant after Holm, the seed-to-seed spread, not the items, is what the "
              "row's interval cannot exclude.")
    return lines + [""]


def comparison_health(f: Finding, flags: dict[str, list[health.RowFlag]]) -> str:
    """A comparison's health cell: each flagged arm's flags (``"A: no-op on 1 of 3 seeds"``), else ``"ok"``."""
    return "; ".join(f"{arm}: {flags_words(flags.get(label, []))}" for arm, label in (("A", f.a), ("B", f.b))
                     if flags.get(label)) or "ok"


def health_lines(flags: dict[str, list[health.RowFlag]]) -> list[str]:
    """Markdown under a table: each flagged row's flags with the measured detail, then what the flags
    mean (as ``pefthub compare`` prints them); nothing when no row is flagged."""
    flagged = [f.sentence(f"`{label}`") for label, found in flags.items() for f in found]
    if not flagged:
        return []
    names = {f.name for found in flags.values() for f in found}
    return [f"Run health ([how flags are set](../benchmarks.md#run-health)): {'. '.join(flagged)}. "
            f"What the flags mean: {health.legend(names)}.", ""]


# ---- how the suite was run: learning-rate choices, pilots, cost -------------------------------------
def tuning_lines(records: Sequence[RunRecord]) -> list[str]:
    """Markdown: for each trained row, every rate's validation accuracy at the first seed, the rate
    :func:`pefthub.report.stats.select_learning_rate` chose (and whether it sits at an edge of the rates
    tried, with its paired Δ on validation against the nearest rate inside), and how many seeds ran at
    it; a rate passed over because a run gave one answer to its validation items is marked."""
    docs = [r.doc for r in records]
    by_id = {r.doc.get("run_id"): r for r in records}
    one_answer = one_answer_runs(records)
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        if doc["config"].get("method") != stats.BASE_METHOD:
            groups.setdefault(stats.point_key(doc["config"]), []).append(doc)
    if not any(stats.accuracy(d, "validation") is not None for d in docs):
        return []  # nothing was scored on validation: there was no choice to show
    lines = ["## How each row's learning rate was chosen", "",
             "Validation accuracy (the validation split, never test) of every rate at the row's first seed; "
             "the chosen rate in bold. *edge*: the chosen rate is the smallest or largest tried, so a better "
             "one may lie outside; beside it, its Δ against the nearest rate inside on the same validation items "
             "(95% interval): an interval that contains 0 means the edge was not detectably better. "
             + ("*one answer*: the run gave one answer to at least "
                f"{ONE_ANSWER_SHARE:.0%} of the validation items, so its rate is passed over unless every rate did. "
                if any(d.get("run_id") in one_answer for d in docs) else "") + "A failed run shows its status.", "",
             "| row | rates at the first seed: validation accuracy | chosen | edge | seeds at the chosen rate |",
             "|---|---|---|---|---|"]
    for members in sorted(groups.values(), key=lambda m: stats.row_label(m[0]["config"])):
        first = min(d["config"].get("seed") for d in members)
        selection = stats.select_learning_rate((d for d in members if d["status"] == "success"), members, one_answer)
        chosen = next(iter(selection.chosen)) if selection and selection.rule != stats.LR_UNSELECTED else None
        at_first = {d["config"].get("learning_rate"): d for d in members
                    if d["config"].get("seed") == first and d["status"] == "success"}
        cells = []
        for doc in sorted((d for d in members if d["config"].get("seed") == first),
                          key=lambda d: d["config"].get("learning_rate") or 0.0):
            lr = doc["config"].get("learning_rate")
            val = stats.accuracy(doc, "validation") if doc["status"] == "success" else None
            text = f"{lr:g}: " + (f"{stats.fmt_pct(val)}%" if val is not None
                                  else "not scored" if doc["status"] == "success" else doc["status"])
            text += " (one answer)" if doc.get("run_id") in one_answer else ""
            cells.append(f"**{text}**" if lr == chosen and selection.rule == stats.LR_SELECTED else text)
        edge = (selection.at_edge or "") if selection else ""
        if edge and chosen in at_first:
            inside = [lr for lr in selection.candidates if stats.is_number(lr) and lr != chosen
                      and lr in at_first and at_first[lr].get("run_id") not in one_answer]
            if inside:
                near = inside[0] if edge == stats.LR_EDGE_LOW else inside[-1]
                edge += f" ({_versus_on_validation(by_id, at_first[chosen], at_first[near], near)})"
        seeds = sum(d["config"].get("learning_rate") == chosen and d["status"] == "success" for d in members)
        lines.append(f"| `{stats.row_label(members[0]['config'])}` | {'; '.join(cells)} | "
                     f"{'-' if chosen is None else f'{chosen:g}'} | {edge} "
                     f"| {seeds if chosen is not None else '-'} |")
    return lines + [""]


def _versus_on_validation(by_id: dict[str, RunRecord], a: dict, b: dict, rate_b: float) -> str:
    """``vs 0.0009: +2.0 [-4.9, +9.0]``: run ``a`` against run ``b`` paired on their validation items."""
    try:
        c = stats.compare(stats.item_scores(one_run_row(by_id[a["run_id"]]), "validation"),
                          stats.item_scores(one_run_row(by_id[b["run_id"]]), "validation"))
    except (stats.PairingError, KeyError):
        return f"vs {rate_b:g}: not paired"
    return f"vs {rate_b:g}: {stats.interval_text(c)}"


def pilot_lines(records: Sequence[RunRecord], pilots: Sequence[RunRecord], source: str) -> list[str]:
    """Markdown: each pilot run against the suite's run whose config differs only in the budget (same
    method, trainer, rate and seed; the validation checkpoints, which follow the budget, may differ too),
    paired on the validation items."""
    def key(config: dict) -> str:
        kept = {k: v for k, v in config.items() if k != "budget"}
        if isinstance(kept.get("eval"), dict):
            kept["eval"] = {k: v for k, v in kept["eval"].items() if k != "checkpoints"}
        return stats.canonical_json(kept)

    ours = {key(r.config): r for r in records if r.status == "success"}
    lines = ["## Budget pilots", "",
             f"Pilot runs from `{source}` against this suite's run with the same config except the budget, "
             "paired on the validation items (Δ = pilot − suite).", "",
             "| run | pilot budget | suite budget | pilot | suite | Δ [95% CI] | p |", "|---|---|---|---|---|---|---|"]
    for pilot in pilots:
        doc = pilot.doc
        if doc["status"] != "success":
            continue
        mine = ours.get(key(doc["config"]))
        label = f"`{stats.row_label(doc['config'])}` lr {doc['config'].get('learning_rate'):g} seed {doc['config'].get('seed')}"
        if mine is None:
            lines.append(f"| {label} | {_budget_text(doc)} | not run yet | - | - | - | - |")
            continue
        try:
            c = stats.compare(stats.item_scores(one_run_row(pilot, label), "validation"),
                              stats.item_scores(one_run_row(mine, label), "validation"))
        except stats.PairingError as exc:
            lines.append(f"| {label} | {_budget_text(doc)} | {_budget_text(mine.doc)} | - | - | not comparable: {exc} | - |")
            continue
        lines.append(f"| {label} | {_budget_text(doc)} | {_budget_text(mine.doc)} | {stats.fmt_pct(c.accuracy_a)}% | "
                     f"{stats.fmt_pct(c.accuracy_b)}% | {stats.interval_text(c)} | {stats.fmt_p(c.p_value)} |")
    return lines + [""]


def _budget_text(doc: dict) -> str:
    budget = doc["config"].get("budget") or {}
    return f"{budget.get('steps')} steps × {budget.get('batch_size')}"


def cost_lines(docs: Sequence[dict]) -> list[str]:
    """Markdown: what the suite's runs cost in wall time, and whether the machine was otherwise idle."""
    from datetime import datetime

    def seconds(doc: dict, what: str) -> float:
        value = ((doc.get("budget") or {}).get("spent") or {}).get(what)
        return float(value) if stats.is_number(value) else 0.0

    def when(text: str | None):
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None

    if not docs:
        return []
    total = sum(seconds(d, "seconds_total") for d in docs)
    starts = [t for t in (when(d.get("started_at")) for d in docs) if t]
    ends = [t for t in (when(d.get("finished_at")) for d in docs) if t]
    with_load = [d for d in docs if isinstance((d.get("environment") or {}).get("load_average"), dict)]
    shared = [d for d in with_load if _shared(d)]
    by_kind: dict[str, list[float]] = {}
    for d in docs:
        by_kind.setdefault(d["config"].get("trainer") or "none", []).append(seconds(d, "seconds_total"))
    lines = ["## Cost", "",
             f"{counted(len(docs), 'run')} ({sum(d['status'] == 'success' for d in docs)} successful) took "
             f"{total / 3600:.2f} h of run time (the sum of their own durations, one run at a time), "
             + (f"from {min(starts):%Y-%m-%d %H:%M} to {max(ends):%Y-%m-%d %H:%M} UTC. " if starts and ends else "")
             + "; ".join(f"{kind}: {counted(len(v), 'run')}, {sum(v) / 60:.0f} min, {sum(v) / len(v):.0f} s each"
                         for kind, v in sorted(by_kind.items())) + ".", ""]
    train, rollouts = sum(seconds(d, "seconds_train") for d in docs), sum(seconds(d, "seconds_generation") for d in docs)
    evaluation = sum(seconds(d, "seconds_eval") for d in docs)
    lines += [f"Of that, GRPO rollouts took {rollouts / 3600:.2f} h, the rest of training {train / 3600:.2f} h and "
              f"evaluation {evaluation / 3600:.2f} h; loading models and the rest, the remainder.", ""]
    if with_load:
        lines += [f"Machine load: {counted(len(with_load), 'run')} recorded the load average at their start and end; "
                  f"{len(shared)} of them ran beside other work (a 1-minute load above the run's own threads + 1), "
                  f"{sum(seconds(d, 'seconds_total') for d in shared) / 3600:.2f} h of run time, so those seconds "
                  "are an upper bound for an idle machine.", ""]
    return lines


def counted(n: int, noun: str) -> str:
    """``"1 run"``, ``"2 runs"``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _shared(doc: dict) -> bool:
    env = doc.get("environment") or {}
    load, threads = env.get("load_average") or {}, env.get("torch_threads") or 1
    return max((load.get("start") or [0])[0], (load.get("end") or [0])[0]) > threads + 1

"""The paper's questions answered from a suite's results: for each, the paired Δ with its interval, a
verdict and the paper's own figure beside it. `pefthub findings <suite>` writes the Markdown; the
site shows the same report. The only typed numbers are the published figures in :data:`PAPER`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pefthub import stats

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
NULL, NOT_MEASURED, NOT_COMPARABLE = "not distinguishable at this size", "not measured in this suite", "not comparable"
NEAR_120 = (100, 200)   # params targets that stand for the paper's "~120"


@dataclass
class Finding:
    """One claim checked against the suite."""

    claim: Claim
    a: str
    b: str
    comparison: stats.Comparison | None
    verdict: str
    note: str = ""

    @property
    def figure(self) -> Figure | None:
        return PAPER.get(self.claim.paper) if self.claim.paper else None


def _find(rows: Sequence[stats.StatRow], method: str, params, trainer: str) -> stats.StatRow | None:
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


def check(rows: Sequence[stats.StatRow], alpha: float = stats.ALPHA) -> list[tuple[str, list[Finding]]]:
    """Every question's findings; p-values Holm-corrected over all comparisons made."""
    out, made = [], []
    for question, claims in QUESTIONS:
        findings = []
        for claim in claims:
            a, b = _find(rows, *claim.a), _find(rows, *claim.b)
            if a is None or b is None:
                missing = [_name(*x) for x, r in ((claim.a, a), (claim.b, b)) if r is None]
                findings.append(Finding(claim, a.label if a else _name(*claim.a), b.label if b else _name(*claim.b),
                                        None, NOT_MEASURED, f"no {' and no '.join(missing)} row"))
                continue
            try:
                comparison = stats.compare_rows(a, b)
            except stats.PairingError as exc:
                findings.append(Finding(claim, a.label, b.label, None, NOT_COMPARABLE, str(exc)))
                continue
            findings.append(Finding(claim, a.label, b.label, comparison, NULL))
            made.append(findings[-1])
        out.append((question, findings))
    for finding, adjusted in zip(made, stats.holm([f.comparison.p_value for f in made])):
        c = finding.comparison
        c.p_holm = adjusted
        if adjusted < alpha:
            finding.verdict = SUPPORTED if (c.delta > 0) == (finding.claim.sign > 0) else CONTRADICTED
    return out


def statement(f: Finding) -> str:
    """One sentence per finding; a null is stated as a null."""
    if f.comparison is None:
        return f"{f.a} vs {f.b}: {f.verdict} ({f.note})."
    c = f.comparison
    ci = f"{stats.fmt_pct(c.low, sign=True)} to {stats.fmt_pct(c.high, sign=True)}"
    paper = (f"the published {f.figure.delta:+.1f}" if f.figure else
             f"the paper's direction ({'higher' if f.claim.sign > 0 else 'lower'})")
    head = (f"{f.a} scores {stats.fmt_pct(c.accuracy_a)}% and {f.b} {stats.fmt_pct(c.accuracy_b)}% on the same "
            f"{c.n_items} items: Δ {stats.fmt_pct(c.delta, sign=True)} points (95% CI {ci}, Holm p {stats.fmt_p(c.p_holm)})")
    if f.verdict == NULL:
        return f"{head}. No difference is detectable at this size; this neither confirms nor rules out {paper}."
    if f.verdict == SUPPORTED:
        return f"{head}. The difference has the sign of {paper}."
    return f"{head}. The difference has the opposite sign to {paper}."


def render_markdown(suite: str, rows: Sequence[stats.StatRow], source: str) -> str:
    """The findings page for ``suite`` (deterministic: no dates, so regenerating unchanged results is a no-op)."""
    results = check(rows)
    power = stats.suite_power(rows)
    docs = [d for r in rows for d in r.docs]
    models = sorted({d["config"].get("model") for d in docs})
    tasks = sorted({stats.canonical_json(d["config"].get("task")) for d in docs})
    lines = [f"# Findings: suite `{suite}`", "",
             f"Generated by `pefthub findings {suite}` from the {len(docs)} selected runs in `{source}`. "
             "Do not edit by hand: rerun the command. How to read Δ, the interval, p and Holm: "
             "[docs/benchmarks.md](../benchmarks.md#reading-the-numbers).", "",
             f"Model {', '.join(f'`{m}`' for m in models)}; task {', '.join(f'`{t}`' for t in tasks)}.", ""]
    if power is not None:
        lines += [f"**{'Smoke run' if power.smoke else 'Power'}.** {power.sentence()}", ""]
    lines += ["Each comparison is paired on the same test items (Δ = A − B in accuracy points, 95% interval over items "
              "and seeds); p-values are Holm-corrected over the comparisons on this page. A claim is *supported* when "
              "the difference is significant with the paper's sign, *contradicted* when significant with the opposite "
              "sign. The published figures come from larger models, other tasks and full budgets: they give the "
              "direction to test, not a number to reproduce.", ""]
    for question, findings in results:
        lines += [f"## {question}", "", "| A − B | A | B | Δ [95% CI] | p (Holm) | verdict | published |",
                  "|---|---|---|---|---|---|---|"]
        for f in findings:
            c = f.comparison
            lines.append("| " + " | ".join([
                f"`{f.a}` − `{f.b}`",
                f"{stats.fmt_pct(c.accuracy_a)}%" if c else "-", f"{stats.fmt_pct(c.accuracy_b)}%" if c else "-",
                stats.interval_text(c) if c else "-",
                f"{stats.fmt_p(c.p_value)} ({stats.fmt_p(c.p_holm)})" if c else "-",
                f"**{f.verdict}**",
                f.figure.text() if f.figure else "not reported in our notes"]) + " |")
        lines.append("")
        lines += [f"- {statement(f)}" for f in findings]
        lines.append("")
    return "\n".join(lines)


EXAMPLE_START = "<!-- worked example: generated by `pefthub findings quick --worked-example docs/benchmarks.md` -->"
EXAMPLE_END = "<!-- end of worked example -->"


def worked_example(suite: str, rows: Sequence[stats.StatRow]) -> str:
    """Markdown that walks through one row's comparison with base step by step (the row with the smallest p)."""
    import math

    base = next((r for r in rows if r.is_base), None)
    family = {label: c for label, c in stats.versus_base(rows, base).items() if isinstance(c, stats.Comparison)}
    if not family:
        return "(no row of this suite can be paired with a base row)"
    label, c = min(family.items(), key=lambda kv: (kv[1].p_value, kv[0]))
    n, m = c.n_items, c.a_only + c.b_only
    sd = c.se * math.sqrt(n)
    t = stats.t_quantile(c.df)
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
        f"2. **Standard error**: the per-item differences dᵢ ∈ {{+1, 0, −1}} have standard deviation "
        f"{sd:.3f}, so SE = {sd:.3f} / √{n} = {100 * c.se:.2f} points.",
        f"3. **95% interval**: Δ ± t₀.₉₇₅ with {c.df:.0f} df × SE = {stats.fmt_pct(c.delta, sign=True)} ± "
        f"{t:.2f} × {100 * c.se:.2f} = [{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}].",
        f"4. **McNemar**: of the {m} discordant items A wins {c.a_only}; if neither row were better each would "
        f"be a fair coin, and a split at least as lopsided as {c.a_only}–{c.b_only} (either way) has probability "
        f"p = {stats.fmt_p(c.p_value)}.",
        f"5. **Holm**: {len(family)} rows were compared with base. Sorted by p this one is number {rank + 1}, "
        f"so its p is multiplied by {len(family) - rank} (and never below an earlier adjusted p): "
        f"{stats.fmt_p(c.p_holm)}. {'Below' if c.p_holm < stats.ALPHA else 'Not below'} 0.05, so the row is "
        f"marked **{c.verdict}**.",
    ]
    power = stats.suite_power(rows)
    if power is not None:
        lines.append(f"6. **Power**: {power.sentence()}")
    return "\n".join(lines)


def replace_worked_example(text: str, example: str) -> str:
    """``text`` with the block between :data:`EXAMPLE_START` and :data:`EXAMPLE_END` replaced."""
    from pefthub.errors import ConfigError

    if EXAMPLE_START not in text or EXAMPLE_END not in text:
        raise ConfigError("the file has no worked-example markers (see pefthub/findings.py EXAMPLE_START)")
    head, rest = text.split(EXAMPLE_START, 1)
    _, tail = rest.split(EXAMPLE_END, 1)
    return f"{head}{EXAMPLE_START}\n{example}\n{EXAMPLE_END}{tail}"

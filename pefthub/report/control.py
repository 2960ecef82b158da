"""A suite's declared positive control: the row that must beat the base model, and the constant-answer floor
(:mod:`pefthub.report.floor`), before any comparison with an arm of its trainer is tested. The table (:func:`pefthub.report.table.suite_table`), the findings and
the site all gate through :func:`positive_control`, so they cannot disagree on what is tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pefthub.report import health, stats
from pefthub.report import rows as row_rules
from pefthub.report.floor import Floor, above, constant_answer
from pefthub.report.rows import Row

CONTROL_QUESTION = "Positive control, declared in the suite (tested on its own; it gates every comparison of its trainer)"
CONTROL_NOT_MEASURED = "positive control not measured yet"


@dataclass(frozen=True)
class Control:
    """A suite's declared positive control (``positive_control`` in suite.toml) against the base model on
    the same test items; ``comparison`` is ``None`` (with ``why``) while it is not measured."""

    label: str
    comparison: stats.Comparison | None
    untrained: str = ""          # the did-not-train flags in words, empty when the row trained
    why: str = ""
    floor: Floor | None = None   # the constant-answer floor (:mod:`pefthub.report.floor`), None without gold
    versus_floor: stats.Comparison | None = None

    @property
    def above_floor(self) -> bool:
        """The 95% interval of Δ against the constant-answer floor wholly above 0 (true when there is none)."""
        return self.floor is None or above(self.versus_floor)

    @property
    def trainer(self) -> str:
        return self.label.rsplit("/", 1)[-1]

    @property
    def passed(self) -> bool:
        """Measured, trained, and the 95% intervals of Δ vs base and vs the constant-answer floor wholly above 0."""
        return self.comparison is not None and not self.untrained and self.comparison.low > 0 and self.above_floor

    def gates(self, row: Row | None) -> bool:
        """Whether ``row`` is an arm of the control's trainer while the control has not passed."""
        return row is not None and not self.passed and not row.is_base and row.trainer == self.trainer

    def note(self) -> str:
        """Why a gated comparison is not tested: ``"the positive control lora/grpo did not beat base (Δ +1.0,
        95% CI [-2.0, +4.0]); GRPO is not shown to learn on this model"``."""
        learns = f"{self.trainer.upper()} is not shown to learn on this model"
        c = self.comparison
        if c is None:
            return f"{CONTROL_NOT_MEASURED} ({self.why}); {learns}"
        if not self.untrained and c.low > 0 and not self.above_floor:
            return (f"the positive control {self.label} did not beat the constant answer {self.floor_text()}; "
                    f"{self.trainer.upper()} is not shown to learn this task beyond its answers' distribution")
        return (f"the positive control {self.label} {self._did()} (Δ {stats.fmt_pct(c.delta, sign=True)}, 95% CI "
                f"[{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}]); {learns}")

    def _did(self) -> str:
        return f"did not train ({self.untrained})" if self.untrained else "did not beat base"

    def floor_text(self) -> str:
        """``always "2" (36.0%): Δ +0.0, 95% CI [-6.1, +6.1]`` (``""`` without a floor)."""
        if self.floor is None:
            return ""
        f, c = self.floor, self.versus_floor
        head = f"{f.label} ({stats.fmt_pct(f.accuracy)}%)"
        return head if c is None else (f"{head}: Δ {stats.fmt_pct(c.delta, sign=True)}, 95% CI "
                                       f"[{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}]")

    def sentence(self) -> str:
        """The control in one sentence, as the findings page and the headline state it after the primary comparison."""
        c = self.comparison
        if c is None:
            return (f"Positive control `{self.label}`: {CONTROL_NOT_MEASURED} ({self.why}), so no comparison with a "
                    f"{self.trainer.upper()} arm is tested")
        head = (f"Positive control `{self.label}` − `{c.b}`: {stats.interval_text(c)} points "
                f"(p {stats.fmt_p(c.p_value)}, its own test; {stats.seeds_words(c)})")
        beyond = f" and {self.floor_text()}" if self.floor is not None else ""
        if self.passed:
            return f"{head}: it beat base{beyond}, so {self.trainer.upper()} comparisons are tested"
        if not self.untrained and c.low > 0:
            return (f"{head}: it beat base but not the constant answer, {self.floor_text()}, so "
                    f"{self.trainer.upper()} is not shown to learn this task beyond its answers' distribution and no "
                    f"comparison with a {self.trainer.upper()} arm is tested (each is left out of its Holm family)")
        return (f"{head}: it {self._did()}, so {self.trainer.upper()} is not shown to learn on this model and no "
                f"comparison with a {self.trainer.upper()} arm is tested (each is left out of its Holm family)")


def positive_control(rows: Sequence[Row], label: str | None,
                     flags: dict[str, list[health.RowFlag]] | None = None) -> Control | None:
    """THE positive-control rule: row ``label`` paired with the base row (:func:`stats.compare_rows`) passes
    only if it trained (no :func:`health.did_not_train` flag) and its 95% intervals of Δ against base and
    against the constant-answer floor (:func:`pefthub.report.floor.constant_answer`, where the items have
    gold answers) lie above 0; ``None`` when the suite declares no control."""
    if label is None:
        return None
    flags = {r.label: list(r.flags) for r in rows} if flags is None else flags
    row, base = next((r for r in rows if r.label == label), None), row_rules.base_row(rows)
    if row is None or row.accuracy is None or base is None:
        return Control(label, None, why=f"no {label if row is None or row.accuracy is None else 'base'} row")
    try:
        comparison = stats.compare_rows(row, base)
    except stats.PairingError as exc:
        return Control(label, None, why=str(exc))
    floor = constant_answer(base)
    return Control(label, comparison, health.flags_words(health.did_not_train(flags.get(label, []))),
                   floor=floor, versus_floor=floor.versus(row) if floor is not None else None)


def declared_control(suite: str) -> str | None:
    """The ``positive_control`` row label of ``benchmarks/<suite>/suite.toml`` (``None`` when unset or
    there is no such file)."""
    declared = declared_suite(suite)
    return declared.positive_control if declared is not None else None


def declared_suite(suite: str):
    """The parsed ``benchmarks/<suite>/suite.toml`` (:class:`pefthub.suites.Suite`), ``None`` without one."""
    from pefthub import suites
    from pefthub.errors import ConfigError

    try:
        path = suites.locate(suite)
    except ConfigError:
        return None
    return suites.load(path)

"""A suite's table: its rows (:func:`pefthub.report.rows.build_rows`), the reference row, each run's
health and each row's flags, and every row against the base model, from one read of its records.

`pefthub bench` prints it, `pefthub findings` and `pefthub compare` reason over it, and the site shows
it (:func:`pefthub.site.aggregate.view_suite`): they cannot disagree on a row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Sequence

from pefthub.report import health, stats
from pefthub.report.control import Control, positive_control
from pefthub.report.floor import Floor, constant_answer
from pefthub.report.records import RunRecord, read_records
from pefthub.report import rows as row_rules
from pefthub.report.rows import Row, build_rows


@dataclass
class SuiteTable:
    """Everything the reports say about one results directory."""

    records: list[RunRecord]
    rows: list[Row]                                    # order of each point's first run
    base: Row | None                                   # the reference row (:func:`base_row`)
    health: dict[str, health.Health] = field(default_factory=dict)   # run id -> flags and measures
    control: Control | None = None                     # the declared positive control, gated on (None: none)
    floor: Floor | None = None                         # the constant-answer floor (None without gold answers)

    @property
    def successes(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "success"]

    @property
    def failures(self) -> list[RunRecord]:
        """Failed and cancelled runs, oldest first."""
        return sorted((r for r in self.records if r.status != "success"),
                      key=lambda r: (r.doc.get("finished_at") or r.doc.get("started_at") or "", r.run_id))

    @property
    def flags(self) -> dict[str, list[health.RowFlag]]:
        """Each row's flags by label."""
        return {r.label: r.flags for r in self.rows}

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.label == label), None)


def versus_base(rows: Sequence[Row], base: Row | None, alpha: float = stats.ALPHA,
                untested: Collection[str] = ()) -> dict[str, stats.Comparison | str]:
    """Every scored non-base row against ``base``: a comparison, or why it could not be paired. The Holm
    family is the rows that trained; a row that did not train (its flags, :func:`health.did_not_train`),
    or whose label is in ``untested`` (a failed positive control, :func:`pefthub.report.control.positive_control`),
    is compared for the record only: no Holm p, no verdict."""
    scored = [r for r in rows if not r.is_base and r.accuracy is not None]
    if base is None:
        return {r.label: "no base-model row in this suite" for r in scored}
    try:
        reference = stats.item_scores(base)
    except stats.PairingError as exc:
        return {r.label: str(exc) for r in scored}
    out: dict[str, stats.Comparison | str] = {}
    for row in scored:
        try:
            out[row.label] = stats.compare(stats.item_scores(row), reference)
        except stats.PairingError as exc:
            out[row.label] = str(exc)
    family = [c for r in scored if isinstance(c := out[r.label], stats.Comparison) and not health.did_not_train(r.flags)
              and r.label not in untested]
    for c, adjusted in zip(family, stats.holm([c.p_value for c in family])):
        c.p_holm = adjusted
        c.verdict = stats.SAME if adjusted >= alpha else (stats.BETTER if c.delta > 0 else stats.WORSE)
    return out


def suite_table(records: Sequence[RunRecord], control: str | None = None) -> SuiteTable:
    """The table of a suite's records: rows, reference row, health, flags and comparisons with base.
    ``control`` is the suite's declared positive-control row label: while it has not passed, every arm of
    its trainer is compared with base for the record only (no Holm p, no verdict), as the findings say.
    Every scored row is also compared with the constant-answer floor (descriptive, no correction)."""
    records = list(records)
    rows = build_rows(records)
    base = row_rules.base_row(rows)
    healths = health.suite_health(records, rows)
    for row in rows:
        row.flags = health.row_health(row, healths)
        if base is not None and row.accuracy is not None:
            row.delta_vs_base = row.accuracy - base.accuracy
    gate = positive_control(rows, control)
    untested = [r.label for r in rows if gate is not None and gate.gates(r)]
    for label, outcome in versus_base(rows, base, untested=untested).items():
        row = next(r for r in rows if r.label == label)
        if isinstance(outcome, stats.Comparison):
            row.vs_base = outcome
            row.untested = gate.note() if label in untested else ""
        else:
            row.vs_base_note = outcome
    floor = gate.floor if gate is not None else constant_answer(base)   # the control has read it already
    if floor is not None:
        for row in rows:
            if not row.is_base and row.accuracy is not None:
                row.vs_floor = floor.versus(row)
    return SuiteTable(records, rows, base, healths, gate, floor)


def read_table(results_dir: str | os.PathLike, skipped: list[tuple[Path, str]] | None = None,
               control: str | None = None) -> SuiteTable:
    """:func:`suite_table` of a results directory, read once (:func:`pefthub.report.records.read_records`)."""
    return suite_table(read_records(results_dir, skipped), control)


def trainer_pairs(rows: Sequence[Row]) -> list[stats.Comparison | tuple[str, str, str]]:
    """Rows that differ only in trainer, compared (GRPO first), or (A, B, why they could not be paired)."""
    out: list[stats.Comparison | tuple[str, str, str]] = []
    for a, b in stats.trainer_pairs([r for r in rows if r.accuracy is not None]):
        try:
            out.append(stats.compare_rows(a, b))
        except stats.PairingError as exc:
            out.append((a.label, b.label, str(exc)))
    return out

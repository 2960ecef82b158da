"""Pages from data: the Jinja2 environment and the view models the templates read.

Jinja2 with ``autoescape=True`` escapes every value a template prints, so untrusted strings
(completions, config values, plugin-provided method names) cannot become markup; the only
values marked safe are the SVG charts, which :mod:`pefthub.site.svg` builds with escaping.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pefthub import __version__
from pefthub.report import findings, stats
from pefthub.report.floor import ONE_ANSWER_SHARE, above
from pefthub.report import health as run_health
from pefthub.report.curves import budget_curves, plateaus
from pefthub.report.power import suite_power
from pefthub.site import items, plots
from pefthub.site.aggregate import LR_SELECTED, LR_UNSELECTED, Row, SuiteView, pareto_front
from pefthub.site.load import Problem, Run
from pefthub.site.metrics import MISSING, format_value, is_number, load_metrics, metric, sci

TEMPLATES = Path(__file__).with_name("templates")
#: Leaderboard columns after method and trainer, in order (keys of metrics.toml).
COLUMNS = ["trainable_params", "adapter_bytes", "accuracy", "delta_vs_base", "train_seconds", "peak_memory_bytes"]
#: Curves drawn first, in this order; any other numeric curve key follows.
CURVE_ORDER = ["reward", "loss", "lr", "kl", "logprob_gap", "entropy", "grad_norm", "seconds"]
CURVE_SKIP = {"step", "reward_std"}
SPLIT_ORDER = ["test", "validation"]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(trainer_label=plots.trainer_label, version=__version__)
    return env


# ---- small text helpers ----------------------------------------------------------------------
def scalar_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)
    return str(value)


def kv_text(value: Any, *, skip: tuple[str, ...] = (), limit: int = 12) -> str:
    """``{"steps": 20, "batch_size": 8}`` → ``steps 20 · batch_size 8`` (other types as JSON)."""
    if not isinstance(value, dict):
        return MISSING if value is None else scalar_text(value)
    items = [(k, v) for k, v in value.items() if k not in skip and v is not None]
    text = " · ".join(f"{k} {scalar_text(v)}" for k, v in items[:limit])
    return text + (" · …" if len(items) > limit else "")


def task_text(task: Any) -> str:
    if isinstance(task, dict) and isinstance(task.get("name"), str):
        rest = kv_text(task, skip=("name",))
        return task["name"] + (f" ({rest})" if rest and rest != MISSING else "")
    return kv_text(task)


def timestamp(value: Any) -> str:
    """ISO-8601 UTC → ``2026-11-22 21:40 UTC``; anything unparsable is shown as written."""
    if not isinstance(value, str):
        return MISSING
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M UTC")


def sort_value(value: Any) -> str:
    return repr(float(value)) if is_number(value) else ""


def date_range(first: str | None, last: str | None) -> str:
    a, b = timestamp(first), timestamp(last)
    if first is None and last is None:
        return MISSING
    if last is None or a == b:
        return a
    if a[:10] == b[:10]:
        return f"{a[:16]} – {b[11:]}"
    return f"{a} – {b}"


# ---- index -----------------------------------------------------------------------------------
@dataclass
class Cell:
    text: str
    sort: str
    title: str = ""
    sub: str = ""


def _cells(row: Row) -> dict[str, Cell]:
    m = load_metrics()
    cells = {}
    for key in COLUMNS:
        value = getattr(row, key)
        cells[key] = Cell(text=m[key].fmt(value), sort=sort_value(value))
    if row.trainable_params is not None:
        cells["trainable_params"].title = f"{row.trainable_params:,} trainable parameters"
    if row.adapter_bytes is not None:
        saved = f"; saved adapter file {format_value('bytes', row.saved_adapter_bytes)}" if row.saved_adapter_bytes else ""
        cells["adapter_bytes"].title = f"{row.adapter_bytes:,.0f} bytes of trained values (fp32){saved}"
    acc = cells["accuracy"]
    if row.ci_low is not None and row.ci_high is not None:
        acc.sub = f"[{100 * row.ci_low:.1f}, {100 * row.ci_high:.1f}]"
        acc.title = f"95% CI ({row.ci_method or 'as recorded'})"
    delta = cells["delta_vs_base"]
    if row.vs_base is not None:
        c = row.vs_base
        delta.sub = f"[{stats.fmt_pct(c.low, sign=True)}, {stats.fmt_pct(c.high, sign=True)}]"
        delta.title = (f"paired on {c.n_items} test items; 95% CI {c.interval}; p {stats.fmt_p(c.p_value)} "
                       f"({c.test}), Holm {stats.fmt_p(c.p_holm)}")
    elif row.vs_base_note and not row.is_base:
        delta.title = f"no paired interval: {row.vs_base_note}"
    return cells


VERDICT_CLASS = {stats.BETTER: "better", stats.WORSE: "worse", stats.SAME: "same"}


def _verdict(row: Row) -> dict:
    """The row's verdict against base (Holm-corrected), for the "vs base" column."""
    if row.is_base:
        return {"text": "reference", "cls": "ref", "sort": "", "title": "the untrained base model"}
    c = row.vs_base
    if c is None:
        return {"text": MISSING, "cls": "", "sort": "", "title": row.vs_base_note or ""}
    if c.verdict is None:
        why = f"not tested: {row.untested}" if row.untested else "the row did not train (see its flags)"
        return {"text": "not tested", "cls": "untested", "sort": "", "title": f"{why}: "
                f"compared for the record only (p {stats.fmt_p(c.p_value)}), outside the Holm family"}
    out = {"text": stats.null_words(c) if c.verdict == stats.SAME else c.verdict,
           "cls": VERDICT_CLASS.get(c.verdict, ""), "sort": sort_value(c.p_holm),
           "title": f"p {stats.fmt_p(c.p_value)} ({c.test}); Holm-adjusted over the suite's rows: {stats.fmt_p(c.p_holm)}"}
    floor = row.vs_floor
    if floor is not None:
        out["title"] += f"; against {floor.b}, the constant-answer floor: Δ {stats.interval_text(floor)}"
        if c.verdict == stats.BETTER and not above(floor):
            out["text"] += f", not above {floor.b}"
    return out


def _pair(item) -> dict:
    """One row of the compare view: a Comparison, or (A, B, why it could not be paired)."""
    if isinstance(item, tuple):
        a, b, why = item
        return {"a": a, "b": b, "error": why}
    return {"a": item.a, "b": item.b, "error": "", "acc_a": stats.fmt_pct(item.accuracy_a),
            "acc_b": stats.fmt_pct(item.accuracy_b), "delta": stats.fmt_pct(item.delta, sign=True),
            "ci": f"[{stats.fmt_pct(item.low, sign=True)}, {stats.fmt_pct(item.high, sign=True)}]",
            "p": stats.fmt_p(item.p_value), "test": item.test, "n": item.n_items,
            "table": f"{item.a_only} A only, {item.b_only} B only, {item.both_right} both right, "
                     f"{item.both_wrong} both wrong",
            "significant": item.p_value < stats.ALPHA}


def findings_context(view: SuiteView) -> list[dict]:
    """The paper's questions for the suite (:mod:`pefthub.report.findings`), ready for the template."""
    out = []
    rows = view_stat_rows(view)
    flags = findings.flags_of(rows)
    gate = view.control
    for question, found in findings.check(rows, primary=findings.declared_primary(view.suite.name), flags=flags,
                                          control=gate):
        out.append({"question": question, "items": [{
            "a": f.a, "b": f.b, "verdict": f.verdict, "statement": findings.statement(f),
            "health": findings.comparison_health(f, flags),
            "delta": stats.interval_text(f.comparison) if f.comparison else MISSING,
            "p": f"{stats.fmt_p(f.comparison.p_value)} ({findings.p_words(f)})" if f.comparison else MISSING,
            "published": f.figure.text() if f.figure else "not reported in our notes"} for f in found]})
    if gate is not None:    # right after the primary comparison, as on the findings page
        c = gate.comparison
        at = 1 if out and out[0]["question"] == findings.PRIMARY_QUESTION else 0
        out.insert(at, {"question": findings.CONTROL_QUESTION, "items": [{
            "a": gate.label, "b": c.b if c else "base", "verdict": "passed" if gate.passed else "not passed",
            "statement": f"{gate.sentence()}.", "health": findings.flags_words(flags.get(gate.label, [])) or "ok",
            "delta": stats.interval_text(c) if c else MISSING,
            "p": f"{stats.fmt_p(c.p_value)} (own test)" if c else MISSING, "published": "-"}]})
    return out


def view_stat_rows(view: SuiteView) -> list[Row]:
    """The suite's scored rows: the report's rows, which the findings reason over."""
    return [r for r in view.rows if r.accuracy is not None]


def _lr_cell(row: Row) -> tuple[str, str, str, str]:
    """(text, note under it, sort value, tooltip) for the LR column."""
    lr = sci(row.learning_rate) if row.learning_rate is not None else MISSING
    n = len(row.lr_candidates)
    if row.is_base:
        return MISSING, "", "", "the base model is not trained"
    if row.lr_selection == LR_SELECTED:
        passed = (f"; passed over {', '.join(sci(c) for c in row.lr_one_answer)}: one answer to at least "
                  f"{ONE_ANSWER_SHARE:.0%} of the validation items"
                  if row.lr_one_answer else "")
        return (lr, f"best of {n} on val.", sort_value(row.learning_rate),
                f"selected on validation accuracy among {', '.join(sci(c) for c in row.lr_candidates)}{passed}")
    if row.lr_selection == LR_UNSELECTED:
        return (lr, "unselected", sort_value(row.learning_rate),
                "several learning rates ran but not all have a validation score, so none is selected")
    return lr, "", sort_value(row.learning_rate), "the only learning rate run"


def lr_edge(row: Row) -> dict | None:
    """The badge beside a learning rate chosen at the smallest or largest rate of its grid, or ``None``."""
    if row.lr_at_edge is None:
        return None
    side = "smallest" if row.lr_at_edge == stats.LR_EDGE_LOW else "largest"
    return {"text": f"{row.lr_at_edge} edge", "title": f"the {side} of the {len(row.lr_candidates)} rates tried was "
            "best on validation: a better rate may lie outside the grid"}


def _variant(row: Row) -> str:
    """The small print under a row's name: its method (for a named variant) and method config."""
    if row.is_base:
        return ""
    config = kv_text(row.method_config, limit=4).replace(" · ", ", ")
    return f"{row.method}: {config}" if row.name != row.method else config


@dataclass
class Links:
    """Relative paths inside the built site."""

    slug: str

    def run(self, run_id: str, prefix: str = "") -> str:
        return f"{prefix}runs/{self.slug}/{run_id}.html"

    def items(self, prefix: str = "") -> str:
        """The suite's items file (:mod:`pefthub.site.items`): every run's document and samples."""
        return f"{prefix}data/{self.slug}/{items.FILE_NAME}"


def _run_brief(run: Run, links: Links) -> dict:
    acc_val, acc_test = run.accuracy("validation"), run.accuracy("test")
    return {
        "run_id": run.run_id, "link": links.run(run.run_id), "method": run.name, "trainer": run.trainer,
        "params": f"{run.trainable_params:,}" if run.trainable_params is not None else MISSING,
        "params_sort": sort_value(run.trainable_params),
        "lr": sci(run.learning_rate) if run.learning_rate is not None else MISSING,
        "lr_sort": sort_value(run.learning_rate), "seed": scalar_text(run.seed),
        "val": format_value("percent", acc_val), "val_sort": sort_value(acc_val),
        "test": format_value("percent", acc_test), "test_sort": sort_value(acc_test),
        "finished": timestamp(run.doc.get("finished_at") or run.doc.get("started_at")),
        "status": run.status, "error": run.doc.get("error") or MISSING,
    }


def suite_context(view: SuiteView, slug: str, styles: plots.Styles) -> dict:
    links = Links(slug)
    rows = []
    for row in view.rows:
        lr_text, lr_note, lr_sort, lr_title = _lr_cell(row)
        rows.append({"method": row.name, "trainer": row.trainer, "is_base": row.is_base,
                     "link": links.run(row.runs[0].run_id), "variant": _variant(row), "cells": _cells(row),
                     "lr_text": lr_text, "lr_note": lr_note, "lr_sort": lr_sort, "lr_title": lr_title,
                     "lr_edge": lr_edge(row),
                     "status": "success", "seeds": f"{row.seeds} seeds" if row.seeds > 1 else "",
                     "verdict": _verdict(row)})
        rows[-1]["health_flags"] = [f.as_record() for f in row.flags]
    power = suite_power(view.rows, view.base)
    params_plot, n_points, skipped = plots.params_accuracy_plot(view.rows, view.base, styles)
    memory = lambda r: r.peak_memory_bytes  # noqa: E731
    seconds = lambda r: r.train_seconds  # noqa: E731
    pareto_memory, _ = plots.pareto_plot(view.ranked, view.base, styles, cost=memory, kind="bytes",
                                         x_title="Peak memory", front=pareto_front(view.ranked, memory))
    pareto_time, _ = plots.pareto_plot(view.ranked, view.base, styles, cost=seconds, kind="duration",
                                       x_title="Training time", front=pareto_front(view.ranked, seconds))
    budget_plot, _ = plots.budget_curves_plot(budget_curves(view.rows, view.base), styles)
    budget_verdicts = [{"label": p.label, "verdict": p.verdict(), "stopped": p.stopped,
                        "recent": f"{p.recent.text()} from step {p.recent.start} to {p.recent.end}" if p.recent else MISSING,
                        "overall": f"{p.overall.text()} from step {p.overall.start}" if p.overall else MISSING}
                       for p in plateaus(view.rows)]
    return {
        "name": view.suite.name, "slug": slug, "anchor": f"suite-{slug}",
        "models": view.models, "tasks": [task_text(t) for t in view.tasks],
        "budgets": [(kv_text(b), n) for b, n in view.budgets], "evals": [(kv_text(e), n) for e, n in view.evals],
        "dates": date_range(view.first_started, view.last_finished),
        "n_success": len(view.successes), "n_failed": len(view.failures),
        "trainers": sorted({r.trainer for r in view.rows if not r.is_base}),
        "n_flagged": sum(1 for r in view.rows if r.flags), "flag_meaning": run_health.MEANING,
        "rows": rows, "base": view.base, "params_plot": params_plot, "n_points": n_points, "plot_skipped": skipped,
        "pareto_memory": pareto_memory, "pareto_time": pareto_time, "budget_plot": budget_plot,
        "budget_verdicts": budget_verdicts,
        "all_runs": [_run_brief(r, links) for r in sorted(view.successes, key=lambda r: (r.name, r.trainer, r.trainable_params or 0, r.learning_rate or 0, str(r.seed)))],
        "failures": [_run_brief(r, links) for r in view.failures],
        "pairs": [_pair(p) for p in view.trainer_pairs], "findings": findings_context(view),
        "power": power, "findings_link": f"downloads/{slug}-findings.md",
    }


def render_index(env: jinja2.Environment, suites: list[dict], problems: list[Problem], n_result_files: int) -> str:
    m = load_metrics()
    glossary = [m[k] for k in COLUMNS + ["validation_accuracy"]]
    return env.get_template("index.html").render(
        root="", views=suites, problems=problems, columns=COLUMNS, metrics=m, glossary=glossary,
        n_result_files=n_result_files)


# ---- run page --------------------------------------------------------------------------------
def _budget_items(block: Any) -> list[tuple[str, str, str]]:
    if not isinstance(block, dict):
        return []
    items = []
    for key, value in block.items():
        info = metric(key)
        text = info.fmt(value) if is_number(value) else scalar_text(value) if value is not None else MISSING
        items.append((info.name, text, key))  # words; the key is the row's tooltip
    return items


def _steps_check(run: Run, declared: Any) -> dict | None:
    want = declared.get("steps") if isinstance(declared, dict) else None
    got = run.spent("optimizer_steps")
    if not is_number(want) or got is None:
        return None
    if int(got) == int(want):
        return {"cls": "ok-note", "text": f"Spent exactly the declared {int(want):,} optimizer steps."}
    return {"cls": "warn", "text": f"Declared {int(want):,} optimizer steps, spent {int(got):,}."}


def _curves(run: Run) -> list[dict]:
    entries = [e for e in (run.doc.get("curves") or []) if isinstance(e, dict)]
    if not entries:
        return []
    steps = [e["step"] if is_number(e.get("step")) else i + 1 for i, e in enumerate(entries)]
    keys = [k for k in CURVE_ORDER if any(is_number(e.get(k)) for e in entries)]
    keys += sorted({k for e in entries for k, v in e.items() if is_number(v)} - set(keys) - CURVE_SKIP)
    out = []
    for key in keys:
        values = [float(e[key]) if is_number(e.get(key)) else None for e in entries]
        band = None
        if key == "reward" and any(is_number(e.get("reward_std")) for e in entries):
            band = [float(e["reward_std"]) if is_number(e.get("reward_std")) else None for e in entries]
        info = metric(key)
        spec = plots.curve_spec(steps, values, key, band=band)
        if spec:
            out.append({"title": info.name + (" (band: ± std)" if band else ""), "spec": spec})
    return out


def _evaluations(run: Run) -> list[dict]:
    evaluation = run.doc.get("evaluation") or {}
    splits = [s for s in SPLIT_ORDER if s in evaluation] + sorted(s for s in evaluation if s not in SPLIT_ORDER)
    out = []
    for split in splits:
        block = run.evaluation(split)
        if not block:
            continue
        low, high = block.get("ci_low"), block.get("ci_high")
        ci = f"[{100 * low:.1f}, {100 * high:.1f}]" if is_number(low) and is_number(high) else MISSING
        metrics = block.get("metrics") if isinstance(block.get("metrics"), dict) else {}
        protocol = block.get("protocol")
        out.append({
            "split": split, "accuracy": format_value("percent", block["accuracy"]), "ci": ci,
            "ci_method": scalar_text(block.get("ci_method") or MISSING),
            "n": scalar_text(block.get("n")), "correct": scalar_text(block.get("correct", MISSING)),
            "metric": metric_label(block.get("metric")) if block.get("metric") else MISSING,
            "metric_key": scalar_text(block.get("metric") or ""),
            "metrics": [(metric_label(k), format_value("float", v) if is_number(v) else scalar_text(v), k)
                        for k, v in metrics.items()],
            "protocol": json.dumps(protocol, indent=2, sort_keys=True, default=str) if protocol else "",
        })
    return out


def metric_label(key: Any) -> str:
    """An lm-eval metric key in words: ``exact_match,strict-match`` -> "Exact match (strict-match)",
    ``exact_match_stderr,none`` -> "Exact match, standard error"."""
    name, _, filter_name = str(key).partition(",")
    stderr = name.endswith("_stderr")
    words = name.removesuffix("_stderr").replace("_", " ").capitalize()
    return words + (", standard error" if stderr else "") + (f" ({filter_name})" if filter_name not in ("", "none") else "")


def samples_summary(records: list[dict]) -> dict:
    """What the run page states before its records are loaded: counts per split and correct."""
    try:
        counts = Counter(r.get("split", MISSING) for r in records)
    except TypeError:  # an unhashable split value
        counts = Counter(scalar_text(r.get("split", MISSING)) for r in records)
    splits: Counter = Counter()
    for value, n in counts.items():
        splits[scalar_text(value)] += n
    order = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
    return {"total": len(records), "correct": sum(1 for r in records if r.get("correct") is True),
            "splits": ", ".join(f"{splits[s]} {s}" for s in order)}


def _health(health: run_health.Health | None) -> dict | None:
    """The run page's health box: flags, and the measures behind them as short text."""
    if health is None:
        return None
    m = health.measures

    def frac(k, n):
        return f"{k}/{n}" if k is not None and n else MISSING

    def pair(key, n, base_key, base_n):
        return f"{frac(m[key], m[n])} ({frac(m[base_key], m[base_n])})"

    measures = [("Test completions byte-identical to base", frac(m["identical"], m["shared"])),
                ("Correct (base) on the same items", pair("correct", "shared", "base_correct", "shared")),
                ("No extractable answer (base)", pair("no_answer", "n", "base_no_answer", "base_n")),
                ("Cut off by the token cap (base)", pair("at_cap", "n", "base_at_cap", "base_n"))]
    if m["reward_mean"] is not None:
        measures.append(("Mean GRPO training reward", f"{m['reward_mean']:.3f}"))
    if m["zero_advantage_share"] is not None:
        measures.append(("GRPO groups at zero advantage", f"{100 * m['zero_advantage_share']:.0f}%"))
    return {"flags": [dict(f.as_record(), meaning=run_health.MEANING[f.name]) for f in health.flags],
            "measures": measures, "base_run_id": health.base_run_id}


def render_run(env: jinja2.Environment, run: Run, links: Links, *, doc: dict, samples: dict,
               samples_problem: Problem | None, where: items.Where, max_samples: int, n_result_files: int,
               health: run_health.Health | None = None) -> str:
    """A run's page; ``doc`` is its whole document and ``samples`` its :func:`samples_summary`: the page
    loads the records themselves on demand from the suite's items file at ``where``."""
    prefix = "../../"
    declared = run.config.get("budget")
    budget_block = run.doc.get("budget") if isinstance(run.doc.get("budget"), dict) else {}
    if isinstance(budget_block.get("declared"), dict):
        declared = budget_block["declared"]
    test = run.evaluation("test")
    headline = MISSING
    if test:
        ci = ""
        if is_number(test.get("ci_low")) and is_number(test.get("ci_high")):
            ci = f" [{100 * test['ci_low']:.1f}, {100 * test['ci_high']:.1f}]"
        headline = f"{100 * test['accuracy']:.1f}%{ci} on {scalar_text(test.get('n'))} problems"
    model = run.doc.get("model") if isinstance(run.doc.get("model"), dict) else {}
    adapter = run.adapter_bytes
    env_block = doc.get("environment")
    return env.get_template("run.html").render(
        root=prefix, run=run, suite_anchor=f"suite-{links.slug}",
        started=timestamp(run.doc.get("started_at")),
        finished=timestamp(run.doc.get("finished_at")) if run.doc.get("finished_at") else "",
        items_link=links.items(prefix), items_run=" ".join(map(str, where.run)),
        items_table=" ".join(map(str, where.table)) if where.table else "",
        total_params=format_value("count", model.get("total_params")) if is_number(model.get("total_params")) else "",
        trainable=f"{run.trainable_params:,}" if run.trainable_params is not None else MISSING,
        adapter_bytes=(f"{format_value('bytes', adapter)} of trained values (fp32)" if adapter is not None else MISSING)
        + (f"; adapter file {format_value('bytes', run.saved_adapter_bytes)}" if run.saved_adapter_bytes else ""),
        lr=sci(run.learning_rate) if run.learning_rate is not None else MISSING,
        headline=headline, evaluations=_evaluations(run),
        declared=_budget_items(declared), spent=_budget_items(budget_block.get("spent")),
        steps_check=_steps_check(run, declared), curves=_curves(run),
        curve_frame=" ".join(map(str, plots.CURVE_FRAME)), curve_colour=plots.CURVE_COLOUR,
        samples=samples, max_samples=max_samples,
        samples_problem=str(samples_problem.reason) if samples_problem else "",
        config_json=json.dumps(run.config, indent=2, sort_keys=True, ensure_ascii=False, default=str),
        environment=json.dumps(env_block, indent=2, sort_keys=True, ensure_ascii=False, default=str) if env_block else "",
        n_result_files=n_result_files, health=_health(health),
        base_link=links.run(health.base_run_id, prefix) if health and health.base_run_id else "",
    )

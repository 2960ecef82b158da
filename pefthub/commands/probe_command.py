"""Measure a task's difficulty for GRPO before a sweep: the untrained model's pass rate when sampled
at the rollout temperature, and the share of groups whose samples disagree (the only ones that teach).

  pefthub probe --task chain_sum --task-param max_terms=2 --temperature 1.0 --prompts 128
  pefthub probe --from benchmarks/cpu-pilots/probes.toml --out leaderboards/cpu-pilots/probes

Each probe is written as ``<out>/<id>.json`` (the id is the hash of its settings), so a rerun skips
probes already measured. ``--from`` runs every ``[[probe]]`` table of a TOML file (keys as the
flags, ``task`` a table with ``name`` and parameters) and prints one line per probe.
"""

from __future__ import annotations

from pathlib import Path

NAME = "probe"
HELP = "measure a task's pass rate and informative GRPO groups at the rollout temperature (untrained model)"
DEFAULT_OUT = Path("leaderboards") / "probes"
_KEYS = ("model", "task", "temperature", "generations", "prompts", "max_new_tokens", "seed", "rollout_backend")


def add_arguments(parser) -> None:
    from pefthub.models import EMBEDDED_MODEL
    from pefthub.difficulty import ProbeSettings

    d = ProbeSettings(model=EMBEDDED_MODEL)
    parser.add_argument("--from", dest="source", type=Path, metavar="TOML",
                        help="run every [[probe]] table of this file (flags below are its defaults)")
    parser.add_argument("--model", default=d.model, help="model name or path (default: %(default)s)")
    parser.add_argument("--task", help="task name (default: the embedded default task)")
    parser.add_argument("--task-param", dest="task_params", action="append", metavar="KEY=VALUE",
                        help="task parameter, e.g. --task-param max_terms=2 (repeatable; with --task)")
    parser.add_argument("--temperature", type=float, default=d.temperature, help="sampling temperature (default: %(default)s)")
    parser.add_argument("--generations", type=int, default=d.generations, help="samples per prompt, as GRPO's group (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=d.prompts, help="train prompts sampled (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens, help="longest sample (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=d.seed, help="sampling seed (default: %(default)s)")
    parser.add_argument("--rollout-backend", default=d.rollout_backend, help="rollout engine (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory for probe files (default: %(default)s)")
    parser.add_argument("--report", type=Path, metavar="MD",
                        help="also write a Markdown table of these probes to this file (generated, do not edit)")
    parser.add_argument("--stored-only", action="store_true",
                        help="run no probe: report only those already stored in --out (the rest are listed as not run)")


def _settings_list(args) -> list:
    import tomllib

    from pefthub.errors import ConfigError
    from pefthub.planning import parse_overrides
    from pefthub.difficulty import ProbeSettings
    from pefthub.runner import default_task

    if args.task_params and not args.task:
        raise ConfigError("--task-param needs --task (parameters differ between tasks)")
    flags = {"model": args.model,
             "task": {"name": args.task, **parse_overrides(args.task_params)} if args.task else default_task(),
             "temperature": args.temperature, "generations": args.generations, "prompts": args.prompts,
             "max_new_tokens": args.max_new_tokens, "seed": args.seed, "rollout_backend": args.rollout_backend}
    if args.source is None:
        tables = [{}]
    else:
        try:
            data = tomllib.loads(args.source.read_text())
        except OSError as exc:
            raise ConfigError(f"{args.source}: cannot read ({exc.strerror or exc})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{args.source}: invalid TOML ({exc})") from None
        tables = data.get("probe")
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise ConfigError(f"{args.source}: needs one or more [[probe]] tables")
    out = []
    for i, table in enumerate(tables):
        where = f"{args.source}: probe {i + 1}: " if args.source else ""
        unknown = sorted(set(table) - set(_KEYS))
        if unknown:
            raise ConfigError(f"{where}unknown key(s) {', '.join(unknown)} (allowed: {', '.join(_KEYS)})")
        try:
            settings = ProbeSettings(**{**flags, **table})
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
        out.append(settings)
    return out


def probe_id(settings) -> str:
    from dataclasses import asdict

    from pefthub.results import run_id

    return run_id({k: v for k, v in asdict(settings).items() if k != "chunk"})


def run(args) -> int:
    import json

    from pefthub.console import console
    from pefthub.difficulty import probe
    from pefthub.results import atomic_write_text
    from pefthub.runner import make_task

    from pefthub.models import check_loadable

    todo = _settings_list(args)
    for settings in todo:  # every model name and task checked before anything is loaded
        check_loadable(settings.model)
        make_task(settings.task)
    out = console()
    args.out.mkdir(parents=True, exist_ok=True)
    docs, missing = [], []
    for settings in todo:
        path = args.out / f"{probe_id(settings)}.json"
        if path.exists():
            doc = json.loads(path.read_text())
            state = "stored"
        elif getattr(args, "stored_only", False):
            missing.append(settings)
            continue
        else:
            doc = probe(settings)
            atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
            state = f"{doc['seconds']:.0f} s"
        docs.append((path, doc))
        s = doc["summary"]
        out.print(f"{path.name}  {json.dumps(_task_text(doc))}  T={doc['settings']['temperature']:g}  "
                  f"pass {s['pass_rate']:.1%} [{s['pass_rate_ci'][0]:.1%}, {s['pass_rate_ci'][1]:.1%}]  "
                  f"informative {s['informative_groups']}/{s['prompts']} = {s['informative_share']:.0%} "
                  f"[{s['informative_share_ci'][0]:.0%}, {s['informative_share_ci'][1]:.0%}]  "
                  f"capped {s['capped_share']:.0%}  ({state})", highlight=False, soft_wrap=True)
    if args.report is not None:
        atomic_write_text(args.report, report(docs, args, not_run=len(missing), floors=floors_of(docs)))
        out.print(f"wrote {args.report}")
    return 0


def _task_text(doc: dict) -> dict:
    return {k: v for k, v in doc["settings"]["task"].items()
            if k not in ("seed", "test_size", "validation_size", "train_size")}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


#: The informative-group share a task needs for GRPO to learn from most of its groups (issue #24).
TARGET_INFORMATIVE_SHARE = 0.5


def floors_of(docs: list) -> dict:
    """Each probe's constant-answer floor (:func:`pefthub.difficulty.answer_floor`) by file name, from its
    task regenerated (no model); a probe whose prompts the task no longer holds has none."""
    from pefthub.difficulty import answer_floor
    from pefthub.errors import ConfigError

    out = {}
    for path, doc in docs:
        try:
            out[path.name] = answer_floor(doc["settings"]["task"], [p["id"] for p in doc["per_prompt"]])
        except (ConfigError, KeyError):
            continue
    return out


def _floor_text(floor: dict | None) -> str:
    if floor is None:
        return "-"
    return f"\"{floor['answer']}\" {_pct(floor['share'])} ({floor['distinct']} answers)"


def floor_verdict(docs: list, floors: dict) -> list[str]:
    """How many probes pass above their constant-answer floor, and the highest informative share among them."""
    docs = [d for d in docs if d[0].name in floors and not _superseded(d[1], docs)]
    if not docs:
        return []
    above = [d for d in docs if d[1]["summary"]["pass_rate"] > floors[d[0].name]["share"]]
    line = (f"Pass rate above the constant-answer floor (the untrained model beats always giving the most common "
            f"answer, so a rising reward can mean skill, not a learned guess): {len(above)} of {len(docs)} probes")
    if above:
        path, best = max(above, key=lambda d: (d[1]["summary"]["informative_share"], d[1]["summary"]["pass_rate"]))
        s, st, floor = best["summary"], best["settings"], floors[path.name]
        task = ", ".join(f"{k}={v}" for k, v in _task_text(best).items())
        line += (f"; among them the highest informative-group share: {task} ({s['prompts']} × {st['generations']}, "
                 f"{st['max_new_tokens']} new tokens): {s['informative_groups']}/{s['prompts']} = "
                 f"{_pct(s['informative_share'])} [{_pct(s['informative_share_ci'][0])}, "
                 f"{_pct(s['informative_share_ci'][1])}], pass rate {_pct(s['pass_rate'])} against a floor of "
                 f"{_pct(floor['share'])} (`{path.name}`)")
    return [line + ".", ""]


def verdict(docs: list) -> list[str]:
    """Which probe has the highest informative-group share, and how many reach the target share
    (by point estimate, and by the lower end of the Wilson interval)."""
    if not docs:
        return []
    whole = len(docs)
    docs = [d for d in docs if not _superseded(d[1], docs)]
    summaries = [doc["summary"] for _, doc in docs]
    path, best = max(docs, key=lambda d: (d[1]["summary"]["informative_share"], d[1]["summary"]["informative_share_ci"][0]))
    s, st = best["summary"], best["settings"]
    task = ", ".join(f"{k}={v}" for k, v in _task_text(best).items())
    point = sum(x["informative_share"] >= TARGET_INFORMATIVE_SHARE for x in summaries)
    sure = sum(x["informative_share_ci"][0] >= TARGET_INFORMATIVE_SHARE for x in summaries)
    target = _pct(TARGET_INFORMATIVE_SHARE)
    return [f"Highest informative-group share: {task} (T={st['temperature']:g}, {s['prompts']} × {st['generations']}, "
            f"{st['max_new_tokens']} new tokens): "
            f"{s['informative_groups']}/{s['prompts']} = {_pct(s['informative_share'])} "
            f"[{_pct(s['informative_share_ci'][0])}, {_pct(s['informative_share_ci'][1])}], pass rate "
            f"{_pct(s['pass_rate'])} (`{path.name}`).", "",
            f"Reaching {target} informative groups: {point} of {len(docs)} probes by point estimate, "
            f"{sure} with the whole 95% interval at or above {target}"
            + (f" ({whole - len(docs)} probe(s) not counted here: the same settings were probed on more prompts, "
               f"which include theirs)" if whole > len(docs) else "")
            + ". Rows are sorted by informative share.", ""]


def _superseded(doc: dict, docs: list) -> bool:
    """Whether another probe has the same settings on more prompts (its first prompts are this one's)."""
    def key(d: dict) -> str:
        import json

        return json.dumps({k: v for k, v in d["settings"].items() if k not in ("prompts", "chunk")}, sort_keys=True)

    return any(key(other) == key(doc) and other["summary"]["prompts"] > doc["summary"]["prompts"] for _, other in docs)


def report(docs: list, args, not_run: int = 0, floors: dict | None = None) -> str:
    """A Markdown table of probe documents (every figure read from them), highest informative share
    first, under a verdict line naming the best probe (and how many listed probes were not run);
    ``floors`` (:func:`floors_of`, by file name) adds each probe's constant-answer floor."""
    floors = floors or {}
    command = "pefthub probe" + (f" --from {args.source}" if args.source else "") + f" --out {args.out}"
    if getattr(args, "stored_only", False):
        command += " --stored-only"
    docs = sorted(docs, key=lambda d: -d[1]["summary"]["informative_share"])
    unmeasured = [f"{not_run} probe(s) of the file were not run and are not in this table.", ""] if not_run else []
    lines = [f"<!-- generated by `{command} --report ...`; do not edit -->", "", *verdict(docs),
             *floor_verdict(docs, floors), *unmeasured,
             "| task | T | prompts × samples | new tokens | pass rate [95% CI] | informative groups [95% CI] | all wrong | "
             "all right | capped | no answer | constant-answer floor | engine | seconds (load avg) | file |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path, doc in docs:
        s, st = doc["summary"], doc["settings"]
        task = ", ".join(f"{k}={v}" for k, v in _task_text(doc).items())
        lines.append(
            f"| {task} | {st['temperature']:g} | {s['prompts']} × {st['generations']} | {st['max_new_tokens']} | {_pct(s['pass_rate'])} "
            f"[{_pct(s['pass_rate_ci'][0])}, {_pct(s['pass_rate_ci'][1])}] | {s['informative_groups']}/{s['prompts']} = "
            f"{_pct(s['informative_share'])} [{_pct(s['informative_share_ci'][0])}, {_pct(s['informative_share_ci'][1])}] | "
            f"{s['all_wrong_groups']} | {s['all_right_groups']} | {_pct(s['capped_share'])} | {_pct(s['no_answer_share'])} | "
            f"{_floor_text(floors.get(path.name))} | "
            f"{doc['rollout_backend']} | {doc['seconds']:.0f} ({max(doc['load_average']):.1f}) | `{path.name}` |")
    return "\n".join(lines) + "\n"

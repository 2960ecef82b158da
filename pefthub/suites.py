"""Benchmark suites: ``benchmarks/<suite>/suite.toml`` parsed, validated and expanded into runs.

A suite fixes what every run shares (model, task, budget, trainer options, evaluation) and an
experiment grid: methods × parameter budgets × learning rates × seeds × trainers, with
per-method overrides. :func:`expand` turns it into :class:`Experiment` objects whose ``config`` is
the fully resolved experiment config of ``docs/results-schema.md`` (its hash is the run's identity).

The file format is documented in ``docs/benchmarks.md``. Every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pefthub.devices import AUTO, placement_keys
from pefthub import settings
from pefthub.errors import ConfigError
from pefthub.results import run_id as compute_run_id
from pefthub.schema import Budget, Evaluation, check_checkpoints, learning_rate

SUITE_FILE = "suite.toml"
BASE_METHOD = "base"
BASE_TRAINER = "none"
#: Every run of a suite is scored on the test split; the validation split serves learning-rate selection.
SUITE_EVAL_KEYS = {f.name for f in dataclasses.fields(Evaluation)} - {"split"}
RESOURCE_DEFAULTS: dict[str, Any] = {"num_cpus": 1, "num_gpus": 0, "memory_gb": None}
TOP_LEVEL_KEYS = {"name", "description", "model", "base", "task", "budget", "trainer_options", "eval",
                  "resources", "grid", "methods", "device", "dtype", "vllm", "primary", "positive_control"}
GRID_KEYS = {"methods", "trainers", "learning_rates", "params", "seeds", "tune_on_first_seed", "extend_edges",
             "primary_seeds", "exclude"}
METHOD_KEYS = {"method", "params", "learning_rates", "config", "trainers", "resources", "trainer_options"}
#: The grid's trainers when a suite names none: the built-in engine of each algorithm. Any
#: registered trainer (``pefthub trainers``) may be named instead.
DEFAULT_TRAINERS = ("sft", "grpo")


@dataclass
class MethodSpec:
    """One entry of the grid's method axis (``[methods.<name>]`` overrides applied)."""

    name: str                      # the row name (a registered method, or a variant of one)
    method: str                    # the registered method
    params: list[int | None]
    learning_rates: list[float]
    config: dict[str, Any]
    trainers: list[str]
    resources: dict[str, Any]
    trainer_learning_rates: dict[str, list[float]] = field(default_factory=dict)  # per-trainer grids
    #: ``[methods.<name>.trainer_options.<trainer>]``: options this row sets over the suite's own.
    trainer_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def rates(self, trainer: str) -> list[float]:
        """The learning-rate grid of this method under ``trainer``."""
        return self.trainer_learning_rates.get(trainer, self.learning_rates)


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    model: str
    task: dict[str, Any]
    budget: dict[str, Any]
    trainer_options: dict[str, dict[str, Any]]
    eval: dict[str, Any]
    resources: dict[str, Any]
    methods: list[MethodSpec]
    seeds: list[int]
    include_base: bool
    trainers: list[str] = field(default_factory=lambda: list(DEFAULT_TRAINERS))  # the grid's trainer axis
    #: Learning rates are compared at the first seed only; the other seeds run at the rate it selects.
    tune_on_first_seed: bool = False
    #: With tune_on_first_seed: how many rates may be added beyond a grid edge the selection lands on.
    extend_edges: int = 0
    #: ``device``/``dtype`` keys every run's config carries (only values other than "auto").
    placement: dict[str, str] = field(default_factory=dict)
    #: The ``vllm`` settings every run's config carries (``gpu_memory_utilization``, ``max_model_len``;
    #: empty, and absent from the configs, unless the suite sets them).
    vllm: dict[str, Any] = field(default_factory=dict)
    #: ``primary = ["A - B", ...]``: the comparisons (row labels) the suite was built to test; findings test
    #: them on their own, first. Not part of any run's config, so it changes no run id.
    primary: list[tuple[str, str]] = field(default_factory=list)
    #: ``grid.primary_seeds``: the seeds of the rows in ``primary`` (the grid's seeds first, then more), so the
    #: comparison the suite was built for gets more seeds than the rest; empty: every row runs ``seeds``.
    primary_seeds: list[int] = field(default_factory=list)
    #: ``positive_control = "lora/grpo"``: a row that must beat base (interval above 0) for any comparison of
    #: an arm trained by its trainer to be read. Not part of any run's config, so it changes no run id.
    positive_control: str | None = None
    #: ``grid.exclude = ["full/grpo", ...]``: rows of the grid that are not run (a decision the suite records,
    #: e.g. rows whose every comparison a failed positive control leaves untested). Changes no run id.
    exclude: list[str] = field(default_factory=list)

    @property
    def file(self) -> Path:
        return self.path / SUITE_FILE

    def seeds_for(self, row: str | None) -> list[int]:
        """The seeds row ``row`` (e.g. ``tinylora@13/grpo``) runs: ``primary_seeds`` for a row of a primary
        comparison when set, else the grid's ``seeds``."""
        if self.primary_seeds and row is not None and any(row in pair for pair in self.primary):
            return self.primary_seeds
        return self.seeds


@dataclass
class Experiment:
    """One run of the grid: its resolved config, identity, label and resource request."""

    config: dict[str, Any]
    label: str
    resources: dict[str, Any]
    trainable_params: int | None = None
    adapter_bytes: dict[str, int] | None = None
    run_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.run_id = compute_run_id(self.config)

    @property
    def group_label(self) -> str:
        """The row this run belongs to: everything but learning rate and seed."""
        return self.label.rsplit("/lr=", 1)[0]


# ---- locating and reading ----------------------------------------------------------------
def locate(suite: str | Path, benchmarks_dir: str | Path | None = None) -> Path:
    """The directory of a suite given as a path (dir or suite.toml) or a name under benchmarks/."""
    candidates = [Path(suite)]
    if benchmarks_dir is not None:
        candidates.append(Path(benchmarks_dir) / str(suite))
    candidates.append(Path("benchmarks") / str(suite))
    for cand in candidates:
        if cand.is_file() and cand.name == SUITE_FILE:
            return cand.parent
        if cand.is_dir() and (cand / SUITE_FILE).is_file():
            return cand
    if Path(suite).is_dir():
        raise ConfigError(f"{suite}: no {SUITE_FILE} in this directory")
    named = _named(str(suite), Path(benchmarks_dir) if benchmarks_dir is not None else Path("benchmarks"))
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise ConfigError(f"suite '{suite}' is the name of several suites: {', '.join(str(p) for p in named)}")
    raise ConfigError(f"suite '{suite}' not found (looked for {' and '.join(str(c) for c in candidates)}, "
                      f"and for a {SUITE_FILE} below benchmarks/ with name = \"{suite}\")")


def _named(suite: str, root: Path) -> list[Path]:
    """The directories below ``root`` whose suite file sets ``name = suite`` (e.g. the pilots under
    benchmarks/cpu-pilots/); unreadable files are left to :func:`load` to report."""
    found = []
    for file in sorted(root.glob(f"**/{SUITE_FILE}")):
        try:
            if tomllib.loads(file.read_text(encoding="utf-8")).get("name") == suite:
                found.append(file.parent)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            continue
    return found


def load(suite: str | Path) -> Suite:
    """Read and validate a suite (without resolving method configs; see :func:`expand`)."""
    path = locate(suite)
    file = path / SUITE_FILE
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: malformed TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    return parse(data, file)


class _Checker:
    """A suite file's checks: :mod:`pefthub.settings` rules whose errors name the file and the dotted key."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.file}: {key}: {message}")

    def check(self, value: Any, key: str, annotation: Any, **rule: Any) -> Any:
        """``value`` checked by :func:`pefthub.settings.check`, the error prefixed with the file."""
        try:
            return settings.check(value, key, annotation, **rule)
        except ConfigError as exc:
            raise ConfigError(f"{self.file}: {exc}") from None

    def keys(self, table: Any, allowed: set[str], where: str) -> dict:
        if not isinstance(table, dict):
            self.fail(where, "must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            prefix = f"{where}." if where else ""
            self.fail(f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return table

    def string(self, value: Any, key: str) -> str:
        return self.check(value, key, str, nonempty=True)

    def integer(self, value: Any, key: str, minimum: int | None = None) -> int:
        return self.check(value, key, int, min=minimum)

    def boolean(self, value: Any, key: str) -> bool:
        return self.check(value, key, bool)

    def nonempty_list(self, value: Any, key: str) -> list:
        self.check(value, key, list, nonempty=True)
        if len(set(map(repr, value))) != len(value):
            self.fail(key, f"has duplicates ({value})")
        return value


def parse(data: dict[str, Any], file: Path) -> Suite:
    """Validate the TOML document of ``file`` into a :class:`Suite`."""
    c = _Checker(file)
    c.keys(data, TOP_LEVEL_KEYS, "")
    for key in ("model", "task", "budget", "grid"):
        if key not in data:
            c.fail(key, "missing (required)")
    suite_name = c.string(data.get("name", file.parent.name), "name")
    description = c.check(data.get("description", ""), "description", str)
    model = c.string(data["model"], "model")
    include_base = c.boolean(data.get("base", True), "base")
    try:  # checked here, resolved on the machine that runs (a GPU suite plans on a laptop)
        placement = placement_keys(data.get("device", AUTO), data.get("dtype", AUTO))
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}") from None

    task = data["task"]
    if not isinstance(task, dict):
        c.fail("task", "must be a table with a name and the task's parameters")
    c.string(task.get("name"), "task.name")
    task = dict(task)

    budget = _budget(c, data["budget"])
    trainer_options = data.get("trainer_options", {})
    if not isinstance(trainer_options, dict):
        c.fail("trainer_options", "must be a table of tables, one per trainer")
    for trainer, options in trainer_options.items():
        if not isinstance(options, dict):
            c.fail(f"trainer_options.{trainer}", "must be a table")
    evaluation = _eval(c, data.get("eval", {}), budget)
    vllm = _vllm(c, data["vllm"], budget, trainer_options, evaluation) if "vllm" in data else {}
    resources = _resources(c, data.get("resources", {}), "resources", RESOURCE_DEFAULTS)

    grid = c.keys(data["grid"], GRID_KEYS, "grid")
    for key in ("methods", "learning_rates"):
        if key not in grid:
            c.fail(f"grid.{key}", "missing (required)")
    method_names = [c.string(m, "grid.methods") for m in c.nonempty_list(grid["methods"], "grid.methods")]
    trainers = _trainers(c, grid.get("trainers", list(DEFAULT_TRAINERS)), "grid.trainers")
    learning_rates, trainer_rates = _rate_grid(c, grid["learning_rates"], "grid.learning_rates", trainers)
    params = _params(c, grid.get("params", []), "grid.params")
    seeds = [c.integer(s, "grid.seeds", 0) for s in c.nonempty_list(grid.get("seeds", [0]), "grid.seeds")]
    tune_on_first_seed = c.boolean(grid.get("tune_on_first_seed", False), "grid.tune_on_first_seed")
    extend_edges = c.integer(grid.get("extend_edges", 0), "grid.extend_edges", 0)
    if extend_edges and not tune_on_first_seed:
        c.fail("grid.extend_edges", "needs tune_on_first_seed = true (rates are added after the first seed's selection)")

    overrides = data.get("methods", {})
    if isinstance(overrides, dict) and set(overrides) - set(method_names):
        _orphan_overrides(c, method_names, overrides)
    c.keys(overrides, set(method_names), "methods")
    specs = []
    for name in method_names:
        table = c.keys(overrides.get(name, {}), METHOD_KEYS, f"methods.{name}")
        where = f"methods.{name}"
        method = c.string(table.get("method", name), f"{where}.method")
        if method == BASE_METHOD:
            c.fail(f"{where}.method", "'base' is the untrained reference row; control it with base = true/false")
        config = table.get("config", {})
        if not isinstance(config, dict):
            c.fail(f"{where}.config", "must be a table of method config fields")
        spec_trainers = _trainers(c, table["trainers"], f"{where}.trainers") if "trainers" in table else trainers
        rates, by_trainer = learning_rates, dict(trainer_rates or {})
        if "learning_rates" in table:
            own, own_by_trainer = _rate_grid(c, table["learning_rates"], f"{where}.learning_rates", None)
            rates, by_trainer = (own, {}) if own_by_trainer is None else (rates, {**by_trainer, **own_by_trainer})
        for trainer in spec_trainers:
            if rates is None and trainer not in by_trainer:
                c.fail(f"{where}.learning_rates", f"no learning rates for trainer '{trainer}'")
        own_options = table.get("trainer_options", {})
        if not isinstance(own_options, dict) or not all(isinstance(v, dict) for v in own_options.values()):
            c.fail(f"{where}.trainer_options", "must be a table of tables, one per trainer")
        for trainer in own_options:
            if trainer not in spec_trainers:
                c.fail(f"{where}.trainer_options.{trainer}", f"this row does not train with '{trainer}' "
                       f"(its trainers: {', '.join(spec_trainers)})")
        specs.append(MethodSpec(
            name=name, method=method,
            params=_params(c, table["params"], f"{where}.params") if "params" in table else params,
            learning_rates=rates if rates is not None else by_trainer[spec_trainers[0]],
            config=dict(config), trainers=spec_trainers,
            resources=_resources(c, table.get("resources", {}), f"{where}.resources", resources),
            trainer_learning_rates={t: r for t, r in (by_trainer or {}).items() if t in spec_trainers},
            trainer_options={t: dict(o) for t, o in own_options.items()},
        ))
    if evaluation["validation_limit"] == 0:
        for spec in specs:
            most = max(len(spec.rates(t)) for t in spec.trainers)
            if most > 1 or extend_edges:
                c.fail("eval.validation_limit", f"is 0 but method '{spec.name}' has {most} learning rates"
                       f"{' (and extend_edges)' if extend_edges else ''}; the best one is selected on the "
                       "validation split, so set it > 0")
    primary = _primary(c, data.get("primary", []))
    primary_seeds = _primary_seeds(c, grid.get("primary_seeds", []), seeds, primary)
    positive_control = _positive_control(c, data.get("positive_control"), specs)
    exclude = _exclude(c, grid.get("exclude", []), specs, primary, positive_control)
    return Suite(name=suite_name, path=file.parent, description=description, model=model, task=task, budget=budget,
                 trainer_options={k: dict(v) for k, v in trainer_options.items()}, eval=evaluation,
                 resources=resources, methods=specs, seeds=seeds, include_base=include_base, trainers=trainers,
                 tune_on_first_seed=tune_on_first_seed, extend_edges=extend_edges, placement=placement, vllm=vllm,
                 primary=primary, primary_seeds=primary_seeds, positive_control=positive_control, exclude=exclude)


def _primary_seeds(c: _Checker, value: Any, seeds: list[int], primary: list[tuple[str, str]]) -> list[int]:
    """``grid.primary_seeds``: the grid's seeds in order, then more; only with ``primary`` comparisons."""
    if value == []:
        return []
    out = [c.integer(s, "grid.primary_seeds", 0) for s in c.nonempty_list(value, "grid.primary_seeds")]
    if not primary:
        c.fail("grid.primary_seeds", 'needs primary = ["A - B"] (the rows that run these seeds)')
    if out[:len(seeds)] != seeds or len(out) <= len(seeds) or len(set(out)) != len(out):
        c.fail("grid.primary_seeds", f"must be grid.seeds {seeds} followed by more distinct seeds (got {out})")
    return out


def _rows(specs: list[MethodSpec]) -> list[str]:
    """The grid's row labels (``method@params/trainer``), in the order :func:`expand` runs them."""
    return [f"{method_label(s.name, p)}/{t}" for s in specs for p in s.params for t in s.trainers]


def _positive_control(c: _Checker, value: Any, specs: list[MethodSpec]) -> str | None:
    """``positive_control = "lora/grpo"``: one of the grid's row labels (``method@params/trainer``), or unset."""
    if value is None:
        return None
    rows = _rows(specs)
    if not isinstance(value, str) or value not in rows:
        c.fail("positive_control", f"{value!r} is not a row of this suite (rows: {', '.join(rows)})")
    return value


def _exclude(c: _Checker, value: Any, specs: list[MethodSpec], primary: list[tuple[str, str]],
             positive_control: str | None) -> list[str]:
    """``grid.exclude``: distinct row labels of the grid, none of them a primary row or the positive control,
    and not every row (a suite runs something)."""
    if value == []:
        return []
    rows, entries = _rows(specs), c.nonempty_list(value, "grid.exclude")
    for entry in entries:
        if not isinstance(entry, str) or entry not in rows:
            c.fail("grid.exclude", f"{entry!r} is not a row of this suite (rows: {', '.join(rows)})")
        if any(entry in pair for pair in primary) or entry == positive_control:
            c.fail("grid.exclude", f"{entry!r} is declared in primary or positive_control, so it must run")
    if len(entries) == len(rows):
        c.fail("grid.exclude", "excludes every row of the grid")
    return entries


def _primary(c: _Checker, value: Any) -> list[tuple[str, str]]:
    """``primary = ["tinylora@13/grpo - tinylora@13/sft"]``: each entry two row labels joined by " - "."""
    if not isinstance(value, list):
        c.fail("primary", 'must be a list of "A - B" strings (row labels, e.g. "tinylora@13/grpo - tinylora@13/sft")')
    out = []
    for entry in value:
        parts = entry.replace(" − ", " - ").split(" - ") if isinstance(entry, str) else []
        if len(parts) != 2 or not all(p.strip() for p in parts) or parts[0].strip() == parts[1].strip():
            c.fail("primary", f'{entry!r} is not "A - B" with two different row labels')
        pair = (parts[0].strip(), parts[1].strip())
        if pair in out or pair[::-1] in out:
            c.fail("primary", f"{entry!r} is listed twice")
        out.append(pair)
    return out


def _orphan_overrides(c: _Checker, method_names: list[str], overrides: dict) -> None:
    """A ``[methods.<x>]`` table whose ``x`` is not in grid.methods: most often grid.methods names an
    unregistered method (a typo), so name that first, with the registered methods."""
    from pefthub import plugins

    registry = plugins.methods()
    for name in method_names:
        table = overrides.get(name)
        if name not in registry and not (isinstance(table, dict) and "method" in table):
            c.fail("grid.methods", f"unknown method '{name}' (registered: {', '.join(registry)})")
    orphan = sorted(set(overrides) - set(method_names))[0]
    c.fail(f"methods.{orphan}", f"configures a method that grid.methods does not list ({', '.join(method_names)})")


def _budget(c: _Checker, table: Any) -> dict[str, Any]:
    """The declared budget: the schema's defaults and checks, with ``steps`` required."""
    c.keys(table, {f.name for f in dataclasses.fields(Budget)}, "budget")
    if "steps" not in table:
        c.fail("budget.steps", "missing (required)")
    try:
        return Budget.from_dict(table).to_dict()
    except ConfigError as exc:
        raise ConfigError(f"{c.file}: {exc}") from None


def _eval(c: _Checker, table: Any, budget: dict[str, Any]) -> dict[str, Any]:
    """The evaluation settings: the schema's defaults and checks; the split is always ``test``;
    ``checkpoints`` (absent unless set) within the suite's ``budget.steps``."""
    c.keys(table, SUITE_EVAL_KEYS, "eval")
    try:
        evaluation = Evaluation.from_dict(table).to_dict()
        check_checkpoints(evaluation.get("checkpoints", []), budget["steps"], "eval.checkpoints")
        return evaluation
    except ConfigError as exc:
        raise ConfigError(f"{c.file}: {exc}") from None


def _vllm(c: _Checker, table: Any, budget: dict, trainer_options: dict, evaluation: dict) -> dict[str, Any]:
    """The suite's ``vllm`` settings, checked against the lengths its vLLM engines need."""
    from pefthub.generation.vllm_engine import check_run_settings

    rollouts = any(o.get("rollout_backend") == "vllm" for o in trainer_options.values())
    new_tokens = evaluation["max_new_tokens"]
    try:
        return check_run_settings(table, rollout_len=budget["max_seq_len"] if rollouts else None, where="vllm",
                                  eval_new_tokens=new_tokens if evaluation["backend"] == "vllm"
                                  and isinstance(new_tokens, int) else None)
    except ConfigError as exc:
        raise ConfigError(f"{c.file}: {exc}") from None


def _resources(c: _Checker, table: Any, where: str, defaults: dict[str, Any]) -> dict[str, Any]:
    c.keys(table, set(RESOURCE_DEFAULTS), where)
    out = {**defaults, **table}
    c.check(out["num_cpus"], f"{where}.num_cpus", float, min=0)
    c.check(out["num_gpus"], f"{where}.num_gpus", float, min=0)
    c.check(out["memory_gb"], f"{where}.memory_gb", float | None, above=0)
    return out


def _trainers(c: _Checker, value: Any, key: str) -> list[str]:
    """Trainer names; :func:`resolve` checks them against the plugin registry."""
    return [c.string(t, key) for t in c.nonempty_list(value, key)]


def _rate_grid(c: _Checker, value: Any, key: str,
               trainers: list[str] | None) -> tuple[list[float] | None, dict[str, list[float]] | None]:
    """A learning-rate grid: a list (every trainer), or a table of lists keyed by trainer name. With
    ``trainers`` (the grid's own axis) a table must cover each of them."""
    if not isinstance(value, dict):
        return _learning_rates(c, value, key), None
    by_trainer = {c.string(t, key): _learning_rates(c, rates, f"{key}.{t}") for t, rates in value.items()}
    for trainer in trainers or []:
        if trainer not in by_trainer:
            c.fail(key, f"no learning rates for trainer '{trainer}' (the table names {', '.join(by_trainer) or 'none'})")
    return None, by_trainer


def _learning_rates(c: _Checker, value: Any, key: str) -> list[float]:
    try:
        return [learning_rate(lr, key) for lr in c.nonempty_list(value, key)]
    except ConfigError as exc:
        raise ConfigError(f"{c.file}: {exc}") from None


def _params(c: _Checker, value: Any, key: str) -> list[int | None]:
    if not isinstance(value, list):
        c.fail(key, "must be a list of parameter budgets (empty: the method's configured size)")
    if not value:
        return [None]
    return [c.integer(n, key, 1) for n in c.nonempty_list(value, key)]


# ---- expansion -----------------------------------------------------------------------------
@dataclass
class ResolvedMethod:
    """A (method spec, params budget) pair resolved on the model's architecture."""

    spec: MethodSpec
    params_target: int | None
    config: dict[str, Any]
    trainable_params: int
    adapter_bytes: dict[str, int]
    total_params: int


@dataclass
class Resolution:
    """What :func:`resolve` learns from the plugins: exact method configs and full trainer options."""

    methods: list[ResolvedMethod]
    trainer_options: dict[str, dict[str, Any]]
    task: dict[str, Any]
    #: (row name, trainer) -> full options, for rows that set their own (``[methods.<name>.trainer_options]``).
    row_trainer_options: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def options_for(self, spec: MethodSpec, trainer: str) -> dict[str, Any]:
        """The full trainer options of ``spec``'s runs under ``trainer``."""
        return self.row_trainer_options.get((spec.name, trainer), self.trainer_options[trainer])


def resolve(suite: Suite) -> Resolution:
    """Check names against the plugin registries and resolve every method spec × params budget to
    its exact config, trainable count and bytes (on the meta device), and the task's parameters and
    every trainer's options to their full form (defaults filled in, so a changed default changes
    the run's identity, and `pefthub train` with the same settings gets the same run id)."""
    from pefthub import plugins
    from pefthub.methods.base import trainer_refusal
    from pefthub.planning import plan_method
    from pefthub.tasks import task_from_config

    try:
        task_config = task_from_config(suite.task).config()
    except ConfigError as exc:
        raise ConfigError(f"{suite.file}: task: {exc}") from None
    budget = Budget.from_dict(suite.budget)
    registered = plugins.trainers()
    for where, names in [("trainer_options", list(suite.trainer_options)), ("grid.trainers", suite.trainers),
                         *[(f"methods.{s.name}.trainers", s.trainers) for s in suite.methods]]:
        for name in names:
            if name not in registered:
                key = f"{where}.{name}" if where == "trainer_options" else where
                known = ", ".join(registered)
                raise ConfigError(f"{suite.file}: {key}: unknown trainer '{name}' (registered: {known})")
    def full_options(trainer: str, given: dict[str, Any], where: str) -> dict[str, Any]:
        try:
            trainer_cls = registered.get(trainer)
            options = trainer_cls.options_class.from_dict(given)
            trainer_cls(options).check_budget(budget)
        except ConfigError as exc:
            message = str(exc)  # "trainer_options.<field>: ..." -> "<where>.<trainer>.<field>: ..."
            if message.startswith("trainer_options."):
                message = message.replace("trainer_options.", f"{where}.{trainer}.", 1)
            elif message.startswith("trainer_options:"):
                message = message.replace("trainer_options:", f"{where}.{trainer}:", 1)
            else:
                message = f"{where}.{trainer}: {message}"
            raise ConfigError(f"{suite.file}: {message}") from None
        return options.to_dict()

    trainer_options = {trainer: full_options(trainer, suite.trainer_options.get(trainer, {}), "trainer_options")
                       for trainer in sorted({t for spec in suite.methods for t in spec.trainers})}
    row_trainer_options = {
        (spec.name, trainer): full_options(trainer, {**suite.trainer_options.get(trainer, {}), **own},
                                           f"methods.{spec.name}.trainer_options")
        for spec in suite.methods for trainer, own in spec.trainer_options.items()}
    for spec in suite.methods:
        try:
            method_cls = plugins.methods().get(spec.method)
        except ConfigError as exc:
            raise ConfigError(f"{suite.file}: grid.methods: {exc}") from None
        for trainer in spec.trainers:
            refusal = trainer_refusal(method_cls, trainer, registered.get(trainer).algorithm())
            if refusal:
                raise ConfigError(f"{suite.file}: methods.{spec.name}.trainers: {refusal}")
    methods = []
    for spec in suite.methods:
        for params in spec.params:
            try:
                plan = plan_method(suite.model, spec.method, params, spec.config)
            except ConfigError as exc:
                where = f"methods.{spec.name}" + (f" (params {params})" if params is not None else "")
                raise ConfigError(f"{suite.file}: {where}: {exc}") from None
            methods.append(ResolvedMethod(spec, params, plan.config, plan.trainable_params, plan.adapter_bytes,
                                          plan.total_params))
    return Resolution(methods, trainer_options, task_config, row_trainer_options)


def method_label(spec_name: str, params_target: int | None) -> str:
    return spec_name if params_target is None else f"{spec_name}@{params_target}"


@dataclass
class RowTuning:
    """What the first seed's results decided for one row (``tune_on_first_seed``): rates added beyond
    a grid edge, and the rate the remaining seeds run at (``None`` while undecided)."""

    extra_rates: list[float] = field(default_factory=list)
    chosen: float | None = None


def expand(suite: Suite, resolution: Resolution | None = None,
           tuning: dict[str, RowTuning] | None = None) -> list[Experiment]:
    """Every run of the suite, base-model row first, in a stable order (method, params, trainer,
    learning rate, seed) so progress and resumption read naturally.

    With ``tune_on_first_seed`` the grid's rates run at the first seed only; ``tuning`` (keyed by row,
    e.g. ``lora/sft``; see :func:`pefthub.grid.tuned_grid`) adds the rates and the seeds decided by it.
    """
    if resolution is None:
        resolution = resolve(suite)
    evaluation = dict(suite.eval)
    runs: list[Experiment] = []
    if suite.include_base:
        # The untrained row has no steps to score after: its config (and id) is the one without checkpoints.
        base_eval = {k: v for k, v in evaluation.items() if k != "checkpoints"}
        config = {
            "model": suite.model, "task": resolution.task, "trainer": BASE_TRAINER, "trainer_options": {},
            "method": BASE_METHOD, "method_config": {}, "params_target": None, "learning_rate": None,
            "seed": 0, "budget": {"steps": 0}, "eval": base_eval, **suite.placement,
        }
        if suite.vllm:
            config["vllm"] = dict(suite.vllm)
        runs.append(Experiment(config, f"{BASE_METHOD}/{BASE_TRAINER}", dict(suite.resources), 0, None))
    for item in resolution.methods:
        spec = item.spec
        for trainer in spec.trainers:
            row = f"{method_label(spec.name, item.params_target)}/{trainer}"
            if row in suite.exclude:
                continue
            tune = (tuning or {}).get(row) or RowTuning()
            for lr in [*spec.rates(trainer), *tune.extra_rates]:
                seeds = suite.seeds_for(row)
                if suite.tune_on_first_seed and lr != tune.chosen:
                    seeds = seeds[:1]
                for seed in seeds:
                    config = {
                        "model": suite.model, "task": resolution.task, "trainer": trainer,
                        "trainer_options": resolution.options_for(spec, trainer),
                        "method": spec.method, "method_config": item.config,
                        "params_target": item.params_target, "learning_rate": lr, "seed": seed,
                        "budget": suite.budget, "eval": evaluation,
                    }
                    if spec.name != spec.method:
                        config["variant"] = spec.name
                    config.update(suite.placement)
                    if suite.vllm:
                        config["vllm"] = dict(suite.vllm)
                    label = f"{row}/lr={lr:g}/seed={seed}"
                    runs.append(Experiment(_deep_copy(config), label, dict(spec.resources),
                                           item.trainable_params, item.adapter_bytes))
    seen: dict[str, str] = {}
    for run in runs:
        if run.run_id in seen:
            raise ConfigError(f"{suite.file}: runs '{seen[run.run_id]}' and '{run.label}' have the same config")
        seen[run.run_id] = run.label
    return runs


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def label_of(config: dict[str, Any]) -> str:
    """The label :func:`expand` gives a config (for result files read back from disk)."""
    if config.get("method") == BASE_METHOD:
        return f"{BASE_METHOD}/{BASE_TRAINER}"
    name = config.get("variant") or config.get("method")
    lr = config.get("learning_rate")
    lr_text = f"{lr:g}" if isinstance(lr, (int, float)) else str(lr)
    return f"{method_label(name, config.get('params_target'))}/{config.get('trainer')}/lr={lr_text}/seed={config.get('seed')}"


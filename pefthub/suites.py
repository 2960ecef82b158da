"""Benchmark suites: ``benchmarks/<suite>/suite.toml`` parsed, validated and expanded into runs.

A suite fixes what every run shares (model, task, budget, trainer options, evaluation) and an
experiment grid: methods × parameter budgets × learning rates × seeds × trainers, with
per-method overrides. :func:`expand` turns it into :class:`Experiment` objects whose ``config`` is
the fully resolved experiment config of ``docs/results-schema.md`` (its hash is the run's identity).

The file format is documented in ``docs/benchmarks.md``. Every error names the file and the key.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pefthub.errors import ConfigError
from pefthub.results import run_id as compute_run_id

SUITE_FILE = "suite.toml"
BASE_METHOD = "base"
BASE_TRAINER = "none"
EVAL_BACKENDS = ("hf", "vllm")

# Budget keys and their defaults; every run of a suite gets the same declared budget.
BUDGET_DEFAULTS: dict[str, Any] = {
    "steps": None, "batch_size": 8, "generations": 4, "max_new_tokens": 64, "max_seq_len": 384,
    "schedule": "constant", "warmup_ratio": 0.0,
}
EVAL_DEFAULTS: dict[str, Any] = {"limit": 100, "validation_limit": 0, "max_new_tokens": 256, "backend": "hf"}
RESOURCE_DEFAULTS: dict[str, Any] = {"num_cpus": 1, "num_gpus": 0, "memory_gb": None}
TOP_LEVEL_KEYS = {"name", "description", "model", "base", "task", "budget", "trainer_options", "eval",
                  "resources", "grid", "methods"}
GRID_KEYS = {"methods", "trainers", "learning_rates", "params", "seeds"}
METHOD_KEYS = {"method", "params", "learning_rates", "config", "trainers", "resources"}
TRAINERS = ("sft", "grpo")


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

    @property
    def file(self) -> Path:
        return self.path / SUITE_FILE


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
    raise ConfigError(f"suite '{suite}' not found (looked for {' and '.join(str(c) for c in candidates)})")


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
    """Type and range checks whose errors name the file and the dotted key."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, key: str, message: str) -> None:
        raise ConfigError(f"{self.file}: {key}: {message}")

    def keys(self, table: Any, allowed: set[str], where: str) -> dict:
        if not isinstance(table, dict):
            self.fail(where, "must be a table")
        unknown = sorted(set(table) - allowed)
        if unknown:
            prefix = f"{where}." if where else ""
            self.fail(f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return table

    def string(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            self.fail(key, f"must be a non-empty string (got {value!r})")
        if choices and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    def integer(self, value: Any, key: str, minimum: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an integer (got {value!r})")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {minimum} (got {value})")
        return value

    def number(self, value: Any, key: str, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            self.fail(key, f"must be a finite number (got {value!r})")
        if low is not None and (value <= low if low_open else value < low):
            self.fail(key, f"must be {'>' if low_open else '>='} {low} (got {value})")
        if high is not None and (value >= high if high_open else value > high):
            self.fail(key, f"must be {'<' if high_open else '<='} {high} (got {value})")
        return float(value)

    def nonempty_list(self, value: Any, key: str) -> list:
        if not isinstance(value, list) or not value:
            self.fail(key, "must be a non-empty list")
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
    description = data.get("description", "")
    if not isinstance(description, str):
        c.fail("description", "must be a string")
    model = c.string(data["model"], "model")
    include_base = data.get("base", True)
    if not isinstance(include_base, bool):
        c.fail("base", f"must be true or false (got {include_base!r})")

    task = data["task"]
    if not isinstance(task, dict):
        c.fail("task", "must be a table with a name and the task's parameters")
    c.string(task.get("name"), "task.name")
    task = dict(task)

    budget = _budget(c, data["budget"])
    trainer_options = data.get("trainer_options", {})
    c.keys(trainer_options, set(TRAINERS), "trainer_options")
    for trainer, options in trainer_options.items():
        if not isinstance(options, dict):
            c.fail(f"trainer_options.{trainer}", "must be a table")
    evaluation = _eval(c, data.get("eval", {}))
    resources = _resources(c, data.get("resources", {}), "resources", RESOURCE_DEFAULTS)

    grid = c.keys(data["grid"], GRID_KEYS, "grid")
    for key in ("methods", "learning_rates"):
        if key not in grid:
            c.fail(f"grid.{key}", "missing (required)")
    method_names = [c.string(m, "grid.methods") for m in c.nonempty_list(grid["methods"], "grid.methods")]
    trainers = _trainers(c, grid.get("trainers", list(TRAINERS)), "grid.trainers")
    learning_rates = _learning_rates(c, grid["learning_rates"], "grid.learning_rates")
    params = _params(c, grid.get("params", []), "grid.params")
    seeds = [c.integer(s, "grid.seeds", 0) for s in c.nonempty_list(grid.get("seeds", [0]), "grid.seeds")]

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
        specs.append(MethodSpec(
            name=name, method=method,
            params=_params(c, table["params"], f"{where}.params") if "params" in table else params,
            learning_rates=(_learning_rates(c, table["learning_rates"], f"{where}.learning_rates")
                            if "learning_rates" in table else learning_rates),
            config=dict(config),
            trainers=_trainers(c, table["trainers"], f"{where}.trainers") if "trainers" in table else trainers,
            resources=_resources(c, table.get("resources", {}), f"{where}.resources", resources),
        ))
    if evaluation["validation_limit"] == 0:
        for spec in specs:
            if len(spec.learning_rates) > 1:
                c.fail("eval.validation_limit", f"is 0 but method '{spec.name}' has {len(spec.learning_rates)} "
                       "learning rates; the best one is selected on the validation split, so set it > 0")
    return Suite(name=suite_name, path=file.parent, description=description, model=model, task=task, budget=budget,
                 trainer_options={k: dict(v) for k, v in trainer_options.items()}, eval=evaluation,
                 resources=resources, methods=specs, seeds=seeds, include_base=include_base)


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
    from pefthub.trainers.budget import Budget  # the trainers' own validation, so both agree

    c.keys(table, set(BUDGET_DEFAULTS), "budget")
    if "steps" not in table:
        c.fail("budget.steps", "missing (required)")
    try:
        return Budget.from_dict({**BUDGET_DEFAULTS, **table}).to_dict()
    except ConfigError as exc:
        raise ConfigError(f"{c.file}: {exc}") from None


def _eval(c: _Checker, table: Any) -> dict[str, Any]:
    c.keys(table, set(EVAL_DEFAULTS), "eval")
    evaluation = {**EVAL_DEFAULTS, **table}
    c.integer(evaluation["limit"], "eval.limit", 1)
    c.integer(evaluation["validation_limit"], "eval.validation_limit", 0)
    c.integer(evaluation["max_new_tokens"], "eval.max_new_tokens", 1)
    c.string(evaluation["backend"], "eval.backend", EVAL_BACKENDS)
    return evaluation


def _resources(c: _Checker, table: Any, where: str, defaults: dict[str, Any]) -> dict[str, Any]:
    c.keys(table, set(RESOURCE_DEFAULTS), where)
    out = {**defaults, **table}
    c.number(out["num_cpus"], f"{where}.num_cpus", 0.0)
    c.number(out["num_gpus"], f"{where}.num_gpus", 0.0)
    if out["memory_gb"] is not None:
        c.number(out["memory_gb"], f"{where}.memory_gb", 0.0, low_open=True)
    return out


def _trainers(c: _Checker, value: Any, key: str) -> list[str]:
    return [c.string(t, key, TRAINERS) for t in c.nonempty_list(value, key)]


def _learning_rates(c: _Checker, value: Any, key: str) -> list[float]:
    return [c.number(lr, key, 0.0, low_open=True) for lr in c.nonempty_list(value, key)]


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


def resolve(suite: Suite) -> Resolution:
    """Check names against the plugin registries and resolve every method spec × params budget to
    its exact config, trainable count and bytes (on the meta device), and the task's parameters and
    every trainer's options to their full form (defaults filled in, so a changed default changes
    the run's identity, and `pefthub train` with the same settings gets the same run id)."""
    from pefthub import plugins
    from pefthub.methods.base import trainer_refusal
    from pefthub.planning import plan_method
    from pefthub.trainers.budget import Budget

    from pefthub.tasks import task_from_config

    try:
        task_config = task_from_config(suite.task).config()
    except ConfigError as exc:
        raise ConfigError(f"{suite.file}: task: {exc}") from None
    budget = Budget.from_dict(suite.budget)
    trainer_options: dict[str, dict[str, Any]] = {}
    for trainer in sorted({t for spec in suite.methods for t in spec.trainers}):
        try:
            trainer_cls = plugins.trainers().get(trainer)
            options = trainer_cls.options_class.from_dict(suite.trainer_options.get(trainer, {}))
            trainer_cls(options).check_budget(budget)
        except ConfigError as exc:
            message = str(exc)  # "trainer_options.<field>: ..." -> "trainer_options.<trainer>.<field>: ..."
            if message.startswith("trainer_options."):
                message = message.replace("trainer_options.", f"trainer_options.{trainer}.", 1)
            elif message.startswith("trainer_options:"):
                message = message.replace("trainer_options:", f"trainer_options.{trainer}:", 1)
            else:
                message = f"trainer_options.{trainer}: {message}"
            raise ConfigError(f"{suite.file}: {message}") from None
        trainer_options[trainer] = options.to_dict()
    for spec in suite.methods:
        try:
            method_cls = plugins.methods().get(spec.method)
        except ConfigError as exc:
            raise ConfigError(f"{suite.file}: grid.methods: {exc}") from None
        for trainer in spec.trainers:
            refusal = trainer_refusal(method_cls, trainer, plugins.trainers().get(trainer).algorithm())
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
    return Resolution(methods, trainer_options, task_config)


def method_label(spec_name: str, params_target: int | None) -> str:
    return spec_name if params_target is None else f"{spec_name}@{params_target}"


def expand(suite: Suite, resolution: Resolution | None = None) -> list[Experiment]:
    """Every run of the suite, base-model row first, in a stable order (method, params, trainer,
    learning rate, seed) so progress and resumption read naturally."""
    if resolution is None:
        resolution = resolve(suite)
    evaluation = {"split": "test", **suite.eval}
    runs: list[Experiment] = []
    if suite.include_base:
        config = {
            "model": suite.model, "task": resolution.task, "trainer": BASE_TRAINER, "trainer_options": {},
            "method": BASE_METHOD, "method_config": {}, "params_target": None, "learning_rate": None,
            "seed": 0, "budget": {"steps": 0}, "eval": evaluation,
        }
        runs.append(Experiment(config, f"{BASE_METHOD}/{BASE_TRAINER}", dict(suite.resources), 0, None))
    for item in resolution.methods:
        spec = item.spec
        for trainer in spec.trainers:
            for lr in spec.learning_rates:
                for seed in suite.seeds:
                    config = {
                        "model": suite.model, "task": resolution.task, "trainer": trainer,
                        "trainer_options": resolution.trainer_options[trainer],
                        "method": spec.method, "method_config": item.config,
                        "params_target": item.params_target, "learning_rate": lr, "seed": seed,
                        "budget": suite.budget, "eval": evaluation,
                    }
                    if spec.name != spec.method:
                        config["variant"] = spec.name
                    label = f"{method_label(spec.name, item.params_target)}/{trainer}/lr={lr:g}/seed={seed}"
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


def print_plan(suite: str | Path, *, as_json: bool = False) -> int:
    """`pefthub plan <suite>`: validate the suite offline and print its grid with exact counts/bytes."""
    from pefthub.commands.bench import print_suite_plan

    return print_suite_plan(suite, as_json=as_json)

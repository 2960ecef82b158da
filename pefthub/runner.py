"""One experiment, start to finish: load, adapt, train, evaluate, write the result file.

:func:`run_experiment` takes the ``config`` object of ``docs/results-schema.md``. Everything that
can be checked without weights is checked first (names, method config or parameter budget,
trainer options, budget, evaluation settings): a bad config raises :class:`ConfigError` before any
work and writes nothing. From then on every outcome is recorded: a run that fails (NaN loss, out
of memory, an exception anywhere) still writes its result file with ``status: "failed"``, a
one-line error and whatever was measured; Ctrl-C writes ``status: "cancelled"`` and re-raises.

The result's ``config`` is the config exactly as given (its hash is the run's identity, which
suites compute before running); :func:`resolve_config` fills defaults for callers that build a
config by hand (``pefthub train``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pefthub import settings
from pefthub.errors import ConfigError, PefthubError
from pefthub.schema import Budget, Evaluation, check_checkpoints, learning_rate

BASE_METHOD = "base"
NO_TRAINER = "none"
CONFIG_KEYS = {"model", "task", "trainer", "trainer_options", "method", "method_config", "params_target",
               "learning_rate", "seed", "budget", "eval", "variant", "device", "dtype", "vllm"}
EVAL_BATCH_SIZE = 32

Progress = Callable[[dict], None]


def default_task() -> dict:
    """The embedded default task config (name and parameters)."""
    from pefthub.tasks import DEFAULT_TASK

    return dict(DEFAULT_TASK)


def default_learning_rate(method: str, trainer: str | None = None) -> float:
    """The learning rate a run of ``method`` under the trainer algorithm ``trainer`` takes when its
    config gives none: the one the method declares (:attr:`pefthub.methods.Method.default_learning_rate`)."""
    from pefthub import plugins

    return plugins.methods().get(method).learning_rate_for(trainer)


# ---- validation ------------------------------------------------------------------------------
@dataclass
class Prepared:
    """What a validated config stands for (built without loading weights)."""

    config: dict
    task: Any
    method_cls: Any  # None for the base-model row
    method_config: Any
    trainer: Any  # None when trainer == "none"
    budget: Any  # None when trainer == "none"
    evaluation: dict
    learning_rate: float | None
    seed: int
    placement: Any = None  # the device and dtype the run computes with (pefthub.devices.Placement)


def make_task(task_config: Any):
    """The task a config's ``task`` object (``{"name": ..., **params}``) names."""
    from pefthub.tasks import task_from_config

    if not isinstance(task_config, (dict, str)):
        raise ConfigError(f"config.task: must be an object with a 'name' (got {task_config!r})")
    try:
        return task_from_config(task_config)
    except ConfigError as exc:
        raise ConfigError(f"config.task: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"config.task: {exc}") from None


def _settings(cls: type, value: Any, key: str) -> Any:
    """``config.<key>`` as its schema class (budget, evaluation), errors prefixed with ``config.``."""
    value = settings.check({} if value is None and key == "eval" else value, f"config.{key}", dict)
    try:
        return cls.from_dict(value)
    except ConfigError as exc:
        raise ConfigError(f"config.{exc}") from None


def prepare(config: dict, *, resolved: bool = False) -> Prepared:
    """Validate ``config`` without loading weights; raise :class:`ConfigError` naming the field.

    ``resolved=True``: ``config`` is a resolved config that the driver already validated and sized
    (a suite's run, handed to an executor's child, see :func:`run_resolved`); it is turned into its
    objects as it is, without repeating the checks and the method sizing (no weightless model is
    built, no parameter budget searched). Only the device is resolved here, on the machine that runs."""
    if resolved:
        return _prepare_resolved(config)
    from pefthub import plugins
    from pefthub.devices import config_placement
    from pefthub.models import meta_model
    from pefthub.planning import resolve_method

    if not isinstance(config, dict):
        raise ConfigError(f"config must be an object (got {type(config).__name__})")
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"config: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(CONFIG_KEYS))})")
    for key in ("model", "method", "trainer"):
        settings.check(config.get(key), f"config.{key}", str, nonempty=True)
    method_name, trainer_name = config["method"], config["trainer"]
    if (method_name == BASE_METHOD) != (trainer_name == NO_TRAINER):
        raise ConfigError(f"config: method '{BASE_METHOD}' goes with trainer '{NO_TRAINER}' and only with it "
                          f"(got method '{method_name}', trainer '{trainer_name}')")
    seed = settings.check(config.get("seed", 0), "config.seed", int, min=0)
    placement = config_placement(config)  # a GPU asked for where there is none: one line, before loading
    task = make_task(config.get("task"))
    evaluation = _settings(Evaluation, config.get("eval"), "eval").to_dict()
    meta = meta_model(config["model"])  # also: unknown model names fail here, before any download or load

    if method_name == BASE_METHOD:
        if evaluation.get("checkpoints"):
            raise ConfigError("config.eval.checkpoints: the base-model row trains no steps to score after")
        _check_vllm(config, None, evaluation)
        return Prepared(config, task, None, None, None, None, evaluation, None, seed, placement)

    trainer_cls = plugins.trainers().get(trainer_name)
    params_target = config.get("params_target")
    overrides = settings.check(config.get("method_config") or {}, "config.method_config", dict)
    method, _ = resolve_method(method_name, meta, params=params_target, overrides=overrides)
    method.check_trainer(trainer_name, trainer_cls.algorithm())
    method.apply(meta_model(config["model"]))  # UnsupportedError now, not after loading weights

    trainer = trainer_cls(trainer_cls.options_class.from_dict(config.get("trainer_options") or {}))
    budget = _settings(Budget, config.get("budget"), "budget")
    trainer.check_budget(budget)
    if evaluation.get("checkpoints"):
        check_checkpoints(evaluation["checkpoints"], budget.steps, "config.eval.checkpoints")
        if not trainer.reports_steps:
            raise ConfigError(f"config.eval.checkpoints: trainer '{trainer.name}' cannot score between its "
                              "optimizer steps (the built-in sft and grpo trainers can)")
    _check_vllm(config, budget, evaluation)
    lr = config.get("learning_rate")
    lr = type(method).learning_rate_for(trainer_cls.algorithm()) if lr is None else \
        learning_rate(lr, "config.learning_rate")
    return Prepared(config, task, type(method), method.config, trainer, budget, evaluation, lr, seed, placement)


def _prepare_resolved(config: dict) -> Prepared:
    """:func:`prepare` of a config the driver resolved and checked: objects built from it as it is."""
    from pefthub import plugins
    from pefthub.devices import config_placement

    placement = config_placement(config)
    task = make_task(config["task"])
    evaluation = Evaluation.from_dict(config.get("eval") or {}).to_dict()
    seed = config.get("seed", 0)
    if config["method"] == BASE_METHOD:
        return Prepared(config, task, None, None, None, None, evaluation, None, seed, placement)
    method_cls = plugins.methods().get(config["method"])
    trainer_cls = plugins.trainers().get(config["trainer"])
    trainer = trainer_cls(trainer_cls.options_class.from_dict(config["trainer_options"]))
    return Prepared(config, task, method_cls, method_cls.config_class.from_dict(config["method_config"]), trainer,
                    Budget.from_dict(config["budget"]), evaluation, float(config["learning_rate"]), seed, placement)


def _check_vllm(config: dict, budget: Any, evaluation: dict) -> None:
    """A config's ``vllm`` settings (present only when set) against the lengths its vLLM engines need."""
    if "vllm" not in config:
        return
    from pefthub.generation.vllm_engine import check_run_settings
    from pefthub.memory_plan import uses_vllm

    rollouts, on_vllm = uses_vllm(config)
    new_tokens = evaluation["max_new_tokens"]
    check_run_settings(config["vllm"], rollout_len=budget.max_seq_len if rollouts and budget is not None else None,
                       eval_new_tokens=new_tokens if on_vllm and isinstance(new_tokens, int) else None)


def resolve_config(config: dict) -> dict:
    """``config`` with every default filled in (method config resolved from ``params_target``,
    trainer options, budget, evaluation, learning rate), validated: the form whose hash is a
    run's identity."""
    p = prepare(config)
    out = dict(config)
    for key in ("device", "dtype"):  # "auto" is the default: it stays out of the config (run ids unchanged)
        if out.get(key) == "auto":
            del out[key]
    out["task"] = p.task.config() if hasattr(p.task, "config") else config["task"]
    out["eval"] = p.evaluation
    out["seed"] = p.seed
    if p.method_cls is None:
        out.update(trainer_options={}, method_config={}, params_target=None, learning_rate=None,
                   budget={"steps": 0})
        return out
    out["method_config"] = p.method_config.to_dict()
    out["params_target"] = config.get("params_target")
    out["trainer_options"] = p.trainer.options.to_dict()
    out["budget"] = p.budget.to_dict()
    out["learning_rate"] = p.learning_rate
    return out


# ---- running ---------------------------------------------------------------------------------
def _emit(progress: Progress | None, event: dict) -> None:
    if progress is not None:
        progress(event)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    message = text[-1].strip() if text else ""
    if isinstance(exc, PefthubError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def run_resolved(config: dict, **kwargs: Any) -> dict:
    """:func:`run_experiment` of a config the driver already validated and sized (a suite's run): what
    an executor's child runs, so the child does not repeat the driver's checks and method sizing."""
    return run_experiment(config, resolved=True, **kwargs)


def run_experiment(config: dict, *, suite: str = "adhoc", results_dir: Path | str,
                   progress: Progress | None = None, num_gpus: float = 0, resolved: bool = False) -> dict:
    """Run one experiment and write its result file; return the result document. ``num_gpus`` is the
    run's ``resources.num_gpus``: a ``full`` SFT or GRPO run with more than one trains sharded across them
    (:mod:`pefthub.trainers.sharded`); every other run computes on one device. ``resolved``: see
    :func:`prepare`."""
    import torch

    from pefthub import results
    from pefthub.devices import Precision, keep_trainable_fp32
    from pefthub.generation import vllm_engine
    from pefthub.models import load_model
    from pefthub.trainers import sharded
    from pefthub.trainers.budget import MemoryMeter, Spent

    prepared = prepare(config, resolved=resolved)  # ConfigError here: nothing written, nothing loaded
    ranks = 1 if prepared.trainer is None else sharded.ranks(
        config["method"], prepared.trainer.name, prepared.budget.batch_size, prepared.placement, num_gpus,
        config.get("device", "auto"), options=prepared.trainer.options)
    if ranks > 1 and prepared.evaluation.get("checkpoints"):
        raise ConfigError("config.eval.checkpoints: not with sharded training (the ranks would have to stop for "
                          "one process to score); run it on one GPU or drop the checkpoints")
    doc = results.new_result(config, suite=suite, status="failed", started_at=results.utc_now())
    spent = Spent()
    meter = MemoryMeter()
    meter.start()
    started, load_at_start = time.perf_counter(), os.getloadavg()
    samples: list[dict] | None = None
    checkpoints: _Checkpoints | None = None
    placement = prepared.placement
    precision = Precision(placement.torch_dtype)
    vllm_run = _enter_vllm(config, prepared)
    try:
        _emit(progress, {"phase": "load", "model": config["model"]})
        torch.manual_seed(prepared.seed)
        # A sharded run loads on the CPU in fp32: its ranks take their shards from there.
        lm = load_model(config["model"], seed=prepared.seed, dtype="float32" if ranks > 1 else placement.dtype,
                        device="cpu" if ranks > 1 else placement.device)
        model, method = lm.model, None
        doc["model"] = {"name": lm.name, "total_params": sum(p.numel() for p in model.parameters())}
        if prepared.method_cls is None:
            for p in model.parameters():
                p.requires_grad_(False)
            doc["method"] = {"name": BASE_METHOD, "trainable_params": 0,
                             "adapter_bytes": {"trainable_fp32": 0, "trainable_bf16": 0, "saved_fp32": 0,
                                               "saved_bf16": 0},
                             "mergeable": True}
        else:
            method = prepared.method_cls(prepared.method_config)
            model = keep_trainable_fp32(method.apply(model))
            doc["method"] = {"name": method.name, "trainable_params": method.trainable_parameters(model),
                             "adapter_bytes": method.adapter_bytes(model).to_dict(), "mergeable": method.mergeable,
                             "config": method.config.to_dict()}
            if ranks > 1:
                outcome, record = sharded.train(
                    prepared.trainer, model=model, tokenizer=lm.tokenizer, method=method, task=prepared.task,
                    budget=prepared.budget, learning_rate=prepared.learning_rate, seed=prepared.seed, spent=spent,
                    progress=progress, world=ranks, placement=placement)
                doc["training"] = {"sharded": record}
                model.to(placement.torch_device)  # evaluated on one device, as every run is
            else:
                if prepared.evaluation.get("checkpoints"):
                    def score(limit: int | None) -> dict:  # the final evaluation's function and settings
                        return _evaluate(model, lm.tokenizer, method, prepared.task, "validation", limit,
                                         _eval_settings(prepared, lm.tokenizer), spent, phase="checkpoint_eval")[0]

                    checkpoints = _Checkpoints(prepared, spent, progress, score)
                    doc["checkpoints"] = checkpoints.points
                with precision.autocast(placement.torch_device):
                    if checkpoints is not None:
                        checkpoints.start()
                    outcome = prepared.trainer.train(model=model, tokenizer=lm.tokenizer, method=method,
                                                     task=prepared.task, budget=prepared.budget,
                                                     learning_rate=prepared.learning_rate, seed=prepared.seed,
                                                     spent=spent, progress=progress, after_step=checkpoints)
            doc["curves"] = outcome.curves
            if outcome.stopped_early is not None:  # still a success: the model is evaluated
                doc.setdefault("training", {})["stopped_early"] = outcome.stopped_early
            if outcome.status != "success":
                doc["status"], doc["error"] = outcome.status, outcome.error
                return doc
        samples = []
        doc["evaluation"] = {}
        splits = [(prepared.evaluation["split"], prepared.evaluation["limit"])]
        if prepared.evaluation["validation_limit"] > 0 and prepared.evaluation["split"] != "validation":
            splits.append(("validation", prepared.evaluation["validation_limit"]))
        for split, limit in splits:
            _emit(progress, {"phase": "eval", "split": split, "limit": limit})
            evaluation = _eval_settings(prepared, lm.tokenizer)
            scored_at = time.perf_counter()
            with precision.autocast(placement.torch_device):
                summary, split_samples = _evaluate(model, lm.tokenizer, method, prepared.task, split, limit,
                                                   evaluation, spent)
            doc["evaluation"][split] = summary
            samples.extend(split_samples)
            if split == "validation" and checkpoints is not None:  # the last checkpoint is the final model
                checkpoints.finish(summary, time.perf_counter() - scored_at)
        doc["status"], doc["error"] = "success", None
        return doc
    except KeyboardInterrupt:
        doc["status"], doc["error"] = "cancelled", "interrupted"
        raise
    except Exception as exc:
        doc["status"], doc["error"] = "failed", _one_line(exc)
        return doc
    finally:
        vllm_engine.leave_run(vllm_run)
        spent.seconds_total = time.perf_counter() - started
        meter.record(spent)
        budget = prepared.budget.to_dict() if prepared.budget is not None else dict(config.get("budget") or {})
        doc["budget"] = {"declared": budget, "spent": spent.to_dict()}
        # The run's own threads add about torch_threads to these; beyond that, the machine was shared.
        doc["environment"] = {**results.environment(), "compute": placement.record(),
                              "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())}}
        doc["finished_at"] = results.utc_now()
        if not doc.get("evaluation"):
            doc.pop("evaluation", None)
        path = results.write_result(results_dir, doc, samples or None)
        _emit(progress, {"phase": "done", "status": doc["status"], "error": doc["error"], "path": str(path)})


def _enter_vllm(config: dict, prepared: Prepared):
    """Hand the run's ``vllm`` settings, and its rollouts' longest sequence where they run on vLLM, to
    the vLLM engines it starts; returns the token :func:`~pefthub.generation.vllm_engine.leave_run` takes."""
    from pefthub.generation import vllm_engine
    from pefthub.memory_plan import uses_vllm

    rollouts, _ = uses_vllm(config)
    rollout_len = prepared.budget.max_seq_len if rollouts and prepared.budget is not None else None
    return vllm_engine.enter_run(config.get("vllm"), rollout_len=rollout_len)


def _eval_settings(prepared: Prepared, tokenizer) -> dict:
    """The run's evaluation settings with ``max_new_tokens = "task"`` sized from the task (never below
    the rollout cap): what every evaluation of the run, final or at a checkpoint, generates with."""
    evaluation = dict(prepared.evaluation)
    if evaluation["max_new_tokens"] == "task":
        from pefthub.evaluation import task_max_new_tokens

        rollout_cap = prepared.budget.max_new_tokens if prepared.budget is not None else 0
        evaluation["max_new_tokens"] = task_max_new_tokens(prepared.task, tokenizer, rollout_cap)
    return evaluation


class _Checkpoints:
    """The ``after_step`` hook that scores the validation split after each optimizer step named in
    ``eval.checkpoints`` (the run's own validation evaluation: same limit, cap, greedy decoding and
    backend), and the result's ``checkpoints`` list it fills.

    Every global random state is put back after scoring, and the adapter is folded in the way the final
    evaluation folds it (restored bit-for-bit), so training goes on exactly as without checkpoints. The
    scoring's seconds go to ``budget.spent.seconds_checkpoint_eval``, not to training's; a checkpoint
    at ``budget.steps`` is not scored twice: the final validation evaluation fills it (:meth:`finish`).
    """

    def __init__(self, prepared: Prepared, spent, progress: Progress | None, score: Callable[[int | None], dict]):
        self.steps = set(prepared.evaluation["checkpoints"])
        self.last = prepared.budget.steps
        self.limit = Evaluation.from_dict(prepared.evaluation).checkpoint_limit
        self.spent, self.progress, self.score = spent, progress, score
        self.points: list[dict] = []
        self.pending: dict | None = None
        self.started = time.perf_counter()

    def start(self) -> None:
        """Training starts now: ``seconds_train_so_far`` counts from here."""
        self.started = time.perf_counter()

    def __call__(self, step: int) -> None:
        if step not in self.steps:
            return
        from pefthub.trainers.common import rng_preserved

        s = self.spent
        point = {"step": step, "split": "validation",
                 "seconds_train_so_far": time.perf_counter() - self.started - s.seconds_checkpoint_eval,
                 "examples": s.examples, "prompts": s.prompts, "prompts_trained": s.prompts_trained,
                 "completions": s.completions, "tokens_trained": s.tokens_trained,
                 "tokens_generated": s.tokens_generated, "train_flops": s.train_flops}
        if step == self.last:
            self.pending = point
            return
        _emit(self.progress, {"phase": "eval", "split": "validation", "limit": self.limit, "step": step})
        scored_at = time.perf_counter()
        with rng_preserved():
            summary = self.score(self.limit)
        self.points.append(_checkpoint_point(point, summary, time.perf_counter() - scored_at))

    def finish(self, summary: dict, seconds: float) -> None:
        """Fill the checkpoint at ``budget.steps`` (if it was reached) from the final validation evaluation."""
        if self.pending is not None:
            self.points.append(_checkpoint_point(self.pending, summary, seconds))
            self.pending = None


def _checkpoint_point(point: dict, summary: dict, seconds: float) -> dict:
    from pefthub.evaluation.core import STRICT

    metrics = summary.get("metrics") or {}
    return {**point, "accuracy": summary["accuracy"], "ci_low": summary["ci_low"], "ci_high": summary["ci_high"],
            "n": summary["n"], "correct": summary["correct"], "strict_accuracy": metrics.get(STRICT),
            "backend": (summary.get("protocol") or {}).get("backend"), "seconds_eval": seconds}


def _evaluate(model, tokenizer, method, task, split: str, limit: int | None, evaluation: dict, spent,
              phase: str = "eval") -> tuple[dict, list]:
    """Score the (merged) model on ``split``; the adapter is folded in for generation speed (and the
    model's own weights restored bit-for-bit after). Its seconds go to ``spent.seconds_<phase>``."""
    import contextlib

    from pefthub.evaluation import evaluate

    merged = method.merged(model) if method is not None else contextlib.nullcontext(model)
    with spent.timing(phase), merged as m:
        result = evaluate(m, tokenizer, task, split=split, limit=limit, max_new_tokens=evaluation["max_new_tokens"],
                          batch_size=EVAL_BATCH_SIZE, backend=evaluation["backend"],
                          merged=method is None or method.mergeable)
    summary = dict(result.summary)
    samples = [dict(s, split=s.get("split", split)) for s in result.samples]
    return summary, samples

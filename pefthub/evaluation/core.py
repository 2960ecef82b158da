"""`evaluate`: one task split, one in-memory model, through lm-eval."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from pefthub.errors import ConfigError
from pefthub.evaluation import glue, sample_ids
from pefthub.evaluation.render import render
from pefthub.schema import EVAL_BACKENDS as BACKENDS  # noqa: F401  (re-exported; the config schema owns the list)
from pefthub.tasks.base import SPLITS, Task

#: ``auto`` takes ``fused`` (pefthub's decoder, :mod:`pefthub.evaluation.fused_backend`) where it serves
#: the model, else ``hf`` (lm-eval's HF model, transformers ``generate``); ``vllm`` is lm-eval's vLLM model.
DEFAULT_BACKEND = "auto"
#: ``max_new_tokens = "task"``: sized by :func:`task_max_new_tokens` from the task's worked solutions.
TASK_SIZED = "task"
DEFAULT_MAX_NEW_TOKENS = 256
#: Training examples whose worked solutions size a ``"task"`` token cap, and the slack over the longest.
TASK_SIZE_EXAMPLES, TASK_SIZE_FACTOR = 64, 1.5


def wilson_interval(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``correct`` of ``n`` (scipy's): it stays inside [0, 1] and behaves at 0%
    and 100%, which small evaluations hit often; evaluation records it for every split. n == 0 gives the
    uninformative (0, 1)."""
    if n < 0 or correct < 0 or correct > n:
        raise ValueError(f"wilson_interval: need 0 <= correct <= n (got {correct}/{n})")
    if n == 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def task_max_new_tokens(task: Task, tokenizer: Any, at_least: int = 0) -> int:
    """A token cap sized from ``task``: 1.5x its longest worked solution (the SFT target, answer line
    included) among the first 64 training examples, rounded up to a multiple of 8, so a model that
    never stops costs about what a healthy one does; 256 for a task without worked solutions; never
    below ``at_least`` (a trained model's rollout cap)."""
    try:
        examples = task.examples("train", TASK_SIZE_EXAMPLES)
        longest = max(len(tokenizer.encode(task.target(ex), add_special_tokens=False)) for ex in examples)
    except ConfigError:
        return max(DEFAULT_MAX_NEW_TOKENS, at_least)
    return max(-(-int(TASK_SIZE_FACTOR * longest) // 8) * 8, at_least)
STRICT = "exact_match,strict-match"
FLEXIBLE = "exact_match,flexible-extract"
#: The accuracy a result reports: exact match after the flexible extractor (as lm-eval's gsm8k).
HEADLINE_METRIC = FLEXIBLE


@dataclass
class EvalResult:
    #: The schema's ``evaluation.<split>`` object, minus ``samples_file``.
    summary: dict[str, Any]
    #: One dict per example: split, id, prompt, completion, extracted, gold, correct, and lm-eval's
    #: doc_id, doc_hash, prompt_hash, target_hash (:mod:`pefthub.evaluation.sample_ids`).
    samples: list[dict[str, Any]] = field(default_factory=list)


def is_merged(model: Any) -> bool:
    """False when ``model`` carries an adapter that runs beside the base weights (unmerged peft
    tuner layers, or prompt tuning, which cannot be merged); True otherwise."""
    try:
        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return True
    if isinstance(model, PeftModel):
        config = model.peft_config.get(model.active_adapter)
        if config is not None and getattr(config, "is_prompt_learning", False):
            return False
    return not any(isinstance(m, BaseTunerLayer) and not m.merged for m in model.modules())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval, transformers and datasets are chatty at INFO/WARNING; keep their errors only."""
    names = ("lm_eval", "transformers", "datasets", "accelerate")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        import datasets

        bars = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        datasets, bars = None, False
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if datasets is not None and bars:
            datasets.utils.logging.enable_progress_bar()


@contextlib.contextmanager
def _no_environment_probe() -> Iterator[None]:
    """lm-eval ends every run by probing the environment (torch's collect_env spawns pip, conda
    and nvidia-smi; ``git describe`` prints "fatal: not a git repository" outside a checkout).
    That costs seconds per evaluation and pefthub records its own environment in the result file,
    so the two probes are skipped while pefthub runs lm-eval."""
    import lm_eval.evaluator as evaluator

    saved = evaluator.get_git_commit_hash, evaluator.add_env_info
    evaluator.get_git_commit_hash = lambda: None
    evaluator.add_env_info = lambda storage: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash, evaluator.add_env_info = saved


def _check(task: Any, split: str, limit: Any, max_new_tokens: Any, batch_size: Any, backend: str) -> Task:
    if isinstance(task, (str, dict)):
        from pefthub.tasks import task_from_config

        task = task_from_config(task)
    if not isinstance(task, Task):
        raise ConfigError(f"evaluate needs a pefthub Task (got {type(task).__name__})")
    check_settings(split=split, limit=limit, max_new_tokens=max_new_tokens, batch_size=batch_size, backend=backend)
    return task


def check_settings(*, split: str, limit: Any, max_new_tokens: Any, batch_size: Any, backend: str) -> None:
    """Raise :class:`ConfigError` naming the first invalid evaluation setting (nothing is loaded): the
    evaluation schema's rules (:class:`pefthub.schema.Evaluation`), any split of a task, a batch size >= 1."""
    from pefthub.schema import Evaluation
    from pefthub.settings import check, check_field

    check(split, "eval.split", str, choices=SPLITS)
    for name, value in (("limit", limit), ("max_new_tokens", max_new_tokens), ("backend", backend)):
        check_field(Evaluation, name, value, f"eval.{name}")
    check(batch_size, "eval.batch_size", int, min=1)


def resolve_backend(model: Any, backend: str) -> tuple[str, str | None]:
    """(backend to run, note) for a requested ``backend``: ``auto`` becomes ``fused`` where the fused
    engine serves ``model`` and ``hf`` otherwise, with the reason as the note; ``fused`` on a model
    it cannot serve raises :class:`UnsupportedError` with that reason."""
    if backend not in ("auto", "fused"):
        return backend, None
    from pefthub.errors import UnsupportedError
    from pefthub.evaluation.fused_backend import unsupported_reason

    reason = unsupported_reason(model)
    if reason is None:
        return "fused", None
    if backend == "fused":
        raise UnsupportedError(f"evaluation backend 'fused': {reason}; use backend 'hf'")
    return "hf", f"evaluated with backend 'hf' ({reason})"


def evaluate(model: Any, tokenizer: Any, task: Any, *, split: str = "test", limit: int | None = None,
             max_new_tokens: int | str = DEFAULT_MAX_NEW_TOKENS, batch_size: int = 16, backend: str = DEFAULT_BACKEND,
             merged: bool | None = None) -> EvalResult:
    """Score ``model`` on the first ``limit`` examples of ``task``'s ``split`` with lm-eval.

    ``model`` is the module to generate with: a transformers causal LM or a peft ``PeftModel``.
    Fold mergeable adapters in before calling (``with method.merged(model) as m: evaluate(m, ...)``);
    prompt tuning cannot be merged and is evaluated as the ``PeftModel``. ``merged`` is recorded in
    the protocol; None detects it (:func:`is_merged`). ``backend="vllm"`` saves the (merged) model
    and evaluates it with lm-eval's vLLM model (:mod:`pefthub.evaluation.vllm_backend`);
    ``fused`` runs lm-eval's ``pefthub`` model (:mod:`pefthub.evaluation.fused_backend`), and ``auto``
    takes it where it serves the model, else ``hf`` (the protocol records the backend that ran and
    why it fell back). ``max_new_tokens="task"`` sizes the cap from the task
    (:func:`task_max_new_tokens`); the protocol records the number used.
    """
    task = _check(task, split, limit, max_new_tokens, batch_size, backend)
    if max_new_tokens == TASK_SIZED:
        max_new_tokens = task_max_new_tokens(task, tokenizer)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("the tokenizer has no chat template; pefthub evaluates chat (instruct) models")
    merged = is_merged(model) if merged is None else bool(merged)
    if backend == "vllm" and not merged:
        raise ConfigError("the vllm backend evaluates merged weights only; this model has an unmerged "
                          "adapter (prompt tuning cannot be merged): use backend 'hf'")
    backend, note = resolve_backend(model, backend)
    if note:
        logging.getLogger("pefthub").warning(note)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with _quiet():
            if backend == "hf":
                from pefthub.evaluation.hf_backend import make_hflm

                built = contextlib.nullcontext(make_hflm(model, tokenizer, batch_size, max_new_tokens))
            elif backend == "fused":
                from pefthub.evaluation.fused_backend import make_fused_lm

                built = contextlib.nullcontext(make_fused_lm(model, tokenizer, batch_size, max_new_tokens))
            else:  # a temporary merged checkpoint served by vLLM, removed with its engine afterwards
                from pefthub.evaluation.vllm_backend import lm_eval_vllm_for_model

                built = lm_eval_vllm_for_model(model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)
            with built as lm:
                result = evaluate_lm(lm, task, split=split, limit=limit, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size, backend=backend, merged=merged)
        if note:
            result.summary["protocol"]["backend_note"] = note
        return result
    finally:
        if was_training:
            model.train()


def evaluate_lm(lm: Any, task: Task, *, split: str = "test", limit: int | None = None, max_new_tokens: int = 256,
                batch_size: int = 16, backend: str = "hf", merged: bool = True) -> EvalResult:
    """Run lm-eval with an already-built lm-eval model object ``lm`` (any ``lm_eval.api.model.LM``);
    :func:`evaluate` builds it from an in-memory model. Tests pass a scripted LM here to check the
    filters and metric on known completions."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    rendered = render(task, split, limit, max_new_tokens)
    glue.register_live_task(task)
    started = time.perf_counter()
    with _quiet(), _no_environment_probe():
        manager = TaskManager(include_path=str(rendered.directory), include_defaults=False)
        out = lm_eval.simple_evaluate(model=lm, tasks=[rendered.name], task_manager=manager,
                                      apply_chat_template=True, fewshot_as_multiturn=True,
                                      log_samples=True, bootstrap_iters=0, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return _result(out, rendered, task, max_new_tokens=max_new_tokens, merged=merged, backend=backend,
                   lm_eval_version=lm_eval.__version__, seconds=seconds)


def _result(out: dict[str, Any], rendered, task: Task, *, max_new_tokens: int, merged: bool, backend: str,
            lm_eval_version: str, seconds: float) -> EvalResult:
    scores = out["results"][rendered.name]
    metrics = {k: float(scores[k]) for k in (STRICT, FLEXIBLE)}
    by_doc: dict[int, dict[str, Any]] = {}
    for record in out["samples"][rendered.name]:
        entry = by_doc.setdefault(record["doc_id"], {"record": record, "filtered": {}, "metrics": {}})
        entry["filtered"][record["filter"]] = record["filtered_resps"]
        entry["metrics"][record["filter"]] = float(record["exact_match"])
    samples = []
    for doc_id in sorted(by_doc):
        entry = by_doc[doc_id]
        record, doc = entry["record"], entry["record"]["doc"]
        flexible = entry["filtered"].get("flexible-extract")
        extracted = flexible[0] if isinstance(flexible, list) else flexible
        samples.append({
            "split": rendered.split,
            "id": doc["id"],
            "prompt": _prompt_of(record),
            "completion": _first(record["resps"]),
            "extracted": None if extracted in (None, glue.INVALID) else str(extracted),
            "gold": doc["answer"],
            "correct": entry["metrics"].get("flexible-extract") == 1.0,
            # lm-eval's own identifiers of the item, as its --log_samples writes them (sample_ids.py)
            **{key: record.get(key) for key in sample_ids.FIELDS},
        })
    n = len(samples)
    if n != rendered.n:
        raise RuntimeError(f"lm-eval returned {n} samples for {rendered.n} documents of {rendered.name}")
    correct = sum(s["correct"] for s in samples)
    if n and abs(correct / n - metrics[FLEXIBLE]) > 1e-9:
        raise RuntimeError(f"per-sample records ({correct}/{n}) disagree with lm-eval's {FLEXIBLE} "
                           f"({metrics[FLEXIBLE]}) for {rendered.name}")
    low, high = wilson_interval(correct, n)
    summary = {
        "accuracy": correct / n if n else 0.0, "ci_low": low, "ci_high": high, "ci_method": "wilson",
        "n": n, "correct": correct, "metric": HEADLINE_METRIC, "metrics": metrics,
        "protocol": {"harness": "lm-eval", "lm_eval_version": lm_eval_version,
                     "task_config_hash": rendered.config_hash, "lm_eval_task": rendered.name,
                     "task": task.config(), "split": rendered.split, "generation": "greedy",
                     "max_new_tokens": max_new_tokens, "chat_template": True, "system_prompt": True,
                     "merged": merged, "backend": backend},
        "seconds": seconds,
    }
    return EvalResult(summary=summary, samples=samples)


def _first(value: Any) -> str:
    while isinstance(value, (list, tuple)):
        if not value:
            return ""
        value = value[0]
    return "" if value is None else str(value)


def _prompt_of(record: dict[str, Any]) -> str:
    args = record.get("arguments")
    if isinstance(args, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": gen_kwargs}}
        first = next(iter(args.values()), {})
        return str(first.get("arg_0", "")) if isinstance(first, dict) else _first(first)
    return _first(args)

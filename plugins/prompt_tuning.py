"""Prompt tuning (Lester et al. 2021) through peft: trainable virtual-token embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from pefthub.hookspecs import hookimpl
from pefthub.methods import MethodConfig, setting
from pefthub.methods.peft_method import PeftMethod

INITS = ("sample_vocab", "random")


@dataclass
class PromptTuningMethodConfig(MethodConfig):
    num_virtual_tokens: int = setting(8, "virtual tokens prepended to every input (params = tokens × hidden)", min=1)
    init: str = setting("sample_vocab", "initialisation: 'sample_vocab' (embeddings of random vocabulary "
                        "tokens) or 'random'", choices=INITS)


class PromptTuning(PeftMethod):
    name = "prompt_tuning"
    config_class = PromptTuningMethodConfig
    default_learning_rate = 1e-3
    summary = "Prompt tuning: trainable embeddings of virtual tokens prepended to the input"
    notes = "not mergeable (virtual tokens lengthen every sequence); changes outputs at initialisation"
    identity_at_init = False
    mergeable = False
    exact_params = True

    def apply(self, model: nn.Module) -> nn.Module:
        # On the meta device (planning) there are no embeddings to sample from; shapes are the same.
        self._on_meta = model.get_input_embeddings().weight.is_meta
        return super().apply(model)

    def peft_config(self):
        from peft import PromptTuningConfig, PromptTuningInit

        c = self.config
        sample = c.init == "sample_vocab" and not getattr(self, "_on_meta", False)
        init = PromptTuningInit.SAMPLE_VOCAB if sample else PromptTuningInit.RANDOM
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=c.num_virtual_tokens,
                                  prompt_tuning_init=init)

    def frozen_adapter_elements(self, model: nn.Module) -> int:
        return 0  # peft saves only the prompt embeddings, which are exactly the trained tensor

    def forward_logits(self, model: nn.Module, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        # peft prepends the virtual tokens inside forward; drop their positions so logits line up
        # with input_ids exactly as for every other method.
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits[:, self.config.num_virtual_tokens:, :]

    @classmethod
    def count_params(cls, model: nn.Module, config: PromptTuningMethodConfig) -> int:
        # Closed form: one embedding row per virtual token.
        return config.num_virtual_tokens * model.get_input_embeddings().embedding_dim

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[PromptTuningMethodConfig]:
        hidden = model.get_input_embeddings().embedding_dim
        yield cls.config_class(num_virtual_tokens=max(1, round(params / hidden)))


@hookimpl
def register_methods(register):
    register(PromptTuning)

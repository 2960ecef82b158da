"""LoRA (Hu et al. 2021) through peft: W' = W + (α/r)·B·A with B zero-initialised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, MethodConfig, matching_linears, setting
from pefthub.methods.peft_method import PeftMethod


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = setting(8, "rank of the update B·A", min=1)
    alpha: float = setting(16.0, "scaling numerator: the update is multiplied by alpha / r", above=0)
    dropout: float = setting(0.0, "dropout on the adapter's input during training", min=0, below=1)
    target_modules: list[str] = setting(list(PAPER_TARGET_MODULES), "linear layers to adapt (last name part)",
                                        nonempty=True)


class Lora(PeftMethod):
    name = "lora"
    config_class = LoraMethodConfig
    default_learning_rate = 1e-4
    summary = "LoRA: trainable low-rank factors B·A added to each target weight"

    def peft_config(self):
        from peft import LoraConfig

        c = self.config
        return LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout,
                          target_modules=list(c.target_modules), task_type="CAUSAL_LM")

    @classmethod
    def count_params(cls, model: nn.Module, config: LoraMethodConfig) -> int:
        # Closed form r·Σ(in + out): one formula instead of wrapping every target on a meta copy.
        return config.r * sum(m.in_features + m.out_features for _, m in matching_linears(model, config.target_modules))

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[LoraMethodConfig]:
        # r·Σ(in + out) over the targets: the nearest rank is the only sensible candidate.
        base = cls.config_class()
        per_rank = sum(m.in_features + m.out_features for _, m in matching_linears(model, base.target_modules))
        r = max(1, round(params / per_rank))
        yield cls.config_class(r=r, alpha=2.0 * r)


@hookimpl
def register_methods(register):
    register(Lora)

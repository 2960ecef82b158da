"""LoRA (Hu et al. 2021) through peft: W' = W + (α/r)·B·A with B zero-initialised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, MethodConfig, config_field, matching_linears
from pefthub.methods.peft_method import PeftMethod


@dataclass
class LoraMethodConfig(MethodConfig):
    r: int = config_field(8, "rank of the update B·A")
    alpha: float = config_field(16.0, "scaling numerator: the update is multiplied by alpha / r")
    dropout: float = config_field(0.0, "dropout on the adapter's input during training")
    target_modules: list[str] = config_field(list(PAPER_TARGET_MODULES), "linear layers to adapt (last name part)")

    def validate(self) -> None:
        self._require(self.r >= 1, "r", "must be >= 1")
        self._require(self.alpha > 0, "alpha", "must be > 0")
        self._require(0.0 <= self.dropout < 1.0, "dropout", "must be within [0, 1)")
        self._require(len(self.target_modules) > 0, "target_modules", "must name at least one module")


class Lora(PeftMethod):
    name = "lora"
    config_class = LoraMethodConfig
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

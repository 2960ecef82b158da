"""VeRA (Kopiczko et al. 2024) through peft: shared frozen random A, B; trainable scaling vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, MethodConfig, config_field, matching_linears
from pefthub.methods.peft_method import PeftMethod


@dataclass
class VeraMethodConfig(MethodConfig):
    r: int = config_field(256, "rank of the shared frozen random matrices (length of each λ_d)")
    projection_prng_key: int = config_field(0, "seed of the shared random matrices")
    save_projection: bool = config_field(True, "store the shared random matrices in saved adapters")
    target_modules: list[str] = config_field(list(PAPER_TARGET_MODULES), "linear layers to adapt (last name part)")

    def validate(self) -> None:
        self._require(self.r >= 1, "r", "must be >= 1")
        self._require(len(self.target_modules) > 0, "target_modules", "must name at least one module")


class Vera(PeftMethod):
    name = "vera"
    config_class = VeraMethodConfig
    summary = "VeRA: per-module trainable scaling vectors λ_d (r) and λ_b (out) around shared random A, B"

    def peft_config(self):
        from peft import VeraConfig

        c = self.config
        return VeraConfig(r=c.r, projection_prng_key=c.projection_prng_key, save_projection=c.save_projection,
                          target_modules=list(c.target_modules), task_type="CAUSAL_LM")

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[VeraMethodConfig]:
        # Σ(r + out) over the targets: r = (params − Σout) / n_modules, at least 1.
        targets = matching_linears(model, cls.config_class().target_modules)
        outs = sum(m.out_features for _, m in targets)
        yield cls.config_class(r=max(1, round((params - outs) / len(targets))))


@hookimpl
def register_methods(register):
    register(Vera)

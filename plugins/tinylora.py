"""TinyLoRA (Morris et al. 2026, arXiv 2602.04118) through peft's ``TinyLoraConfig``.

W' = W + U Σ (Σ_i v_i P_i) Vᵀ with U, Σ, V the rank-r truncated SVD of the frozen W and P fixed
random; only v trains. Modules are grouped in module order ("tiled" tying, which the paper found
best); every module of a group shares one v, so the model trains groups × u parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import nn

from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, AdapterBytes, MethodConfig, matching_linears, setting
from pefthub.methods.peft_method import PeftMethod

#: Largest u a parameter budget is spread over before untying more modules: P is u×r×r per module,
#: so a huge u costs memory without the paper ever having used it.
MAX_U_FOR_BUDGET = 256


@dataclass
class TinyLoraMethodConfig(MethodConfig):
    r: int = setting(2, "rank of the frozen truncated SVD (the paper uses 2)", min=1)
    u: int = setting(13, "length of each trainable vector v (parameters per tying group)", min=1)
    weight_tying: float = setting(
        1.0, "share of modules tied together, 0..1: groups = max(1, round(N·(1−weight_tying))) over the N "
             "targeted modules in module order; 1.0 ties every module to one v", min=0, max=1)
    target_modules: list[str] = setting(list(PAPER_TARGET_MODULES), "linear layers to adapt (last name part)",
                                        nonempty=True)
    projection_seed: int = setting(42, "seed of the fixed random projections P (plus the layer index)")
    save_projection: bool = setting(True, "store the frozen SVD factors and P in saved adapters "
                                               "(False: rebuilt from the base weights and seed on load)")


class TinyLora(PeftMethod):
    name = "tinylora"
    config_class = TinyLoraMethodConfig
    default_learning_rate = 1e-3
    summary = "TinyLoRA: a tiny trainable vector v projected through fixed random tensors into each SVD core"
    exact_params = True

    def peft_config(self):
        from peft import TinyLoraConfig

        c = self.config
        return TinyLoraConfig(r=c.r, u=c.u, weight_tying=c.weight_tying, target_modules=list(c.target_modules),
                              projection_seed=c.projection_seed, save_projection=c.save_projection,
                              init_weights=True, task_type="CAUSAL_LM")

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[TinyLoraMethodConfig]:
        # Prefer one shared vector (the paper's headline 13-parameter configuration), untying
        # into more groups only when u would exceed MAX_U_FOR_BUDGET.
        base = cls.config_class()
        n_modules = len(matching_linears(model, base.target_modules))
        for groups in range(1, n_modules + 1):
            if params % groups == 0 and params // groups <= MAX_U_FOR_BUDGET:
                yield cls._config(groups, params // groups, n_modules)
        groups = min(n_modules, max(1, round(params / MAX_U_FOR_BUDGET)))
        yield cls._config(groups, max(1, round(params / groups)), n_modules)

    @classmethod
    def count_params(cls, model: nn.Module, config: TinyLoraMethodConfig) -> int:
        # Closed form, because peft draws every module's P (u×r×r) from a CPU generator even on the
        # meta device: groups × u, with peft's own group rule.
        return cls._groups(len(matching_linears(model, config.target_modules)), config.weight_tying) * config.u

    @classmethod
    def plan_adapter_bytes(cls, model: nn.Module, config: TinyLoraMethodConfig) -> AdapterBytes:
        # Frozen per module, as peft saves them: A (r×in) and B (out×r) always, P (u×r×r) with
        # save_projection; r cut to the weight's smaller side.
        frozen = 0
        for _, linear in matching_linears(model, config.target_modules):
            r = min(config.r, linear.in_features, linear.out_features)
            frozen += r * (linear.in_features + linear.out_features) + (config.u * r * r if config.save_projection else 0)
        return AdapterBytes.from_counts(cls.count_params(model, config), frozen)

    @staticmethod
    def _groups(n_modules: int, weight_tying: float) -> int:
        """Tying groups over ``n_modules`` targets, exactly as peft's TinyLoRA forms them."""
        return max(1, round(n_modules * (1.0 - weight_tying)))

    @classmethod
    def _config(cls, groups: int, u: int, n_modules: int) -> TinyLoraMethodConfig:
        # weight_tying = 1 − groups/N gives peft exactly `groups` groups; one group reads as full tying.
        tying = 1.0 if groups == 1 else (0.0 if groups == n_modules else 1.0 - groups / n_modules)
        return cls.config_class(u=u, weight_tying=tying)


@hookimpl
def register_methods(register):
    register(TinyLora)

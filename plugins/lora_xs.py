"""LoRA-XS (Bałazy et al. 2024): frozen truncated-SVD factors of each target weight around one
trainable r×r matrix R per module; trainable count = modules × r².

Hand-written because peft does not implement it. Parameterisation: ΔW = B·R·A with B = U_r·√Σ_r and
A = √Σ_r·V_rᵀ (the same split peft uses for TinyLoRA); the paper writes U_r·Σ_r·R·V_rᵀ, which is the
same family up to the fixed invertible rescaling R ↦ √Σ R √Σ. Departure: R starts at zero (the paper
draws it from a small Gaussian) so the adapted model is exactly the base model at initialisation;
the gradient with respect to R is still non-zero because A and B are.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pefthub.errors import ConfigError
from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, Method, MethodConfig, matching_linears, setting
from pefthub.methods import adapter_files


@dataclass
class LoraXSMethodConfig(MethodConfig):
    r: int = setting(4, "rank of the frozen truncated SVD; each module trains an r×r matrix", min=1)
    target_modules: list[str] = setting(list(PAPER_TARGET_MODULES), "linear layers to adapt (last name part)",
                                        nonempty=True)
    n_modules: int | None = setting(
        None, "adapt only this many of the targeted modules, evenly spaced in module order (for exact small "
              "budgets); None adapts all", min=1)
    save_frozen: bool = setting(True, "store the frozen SVD factors in saved adapters (False: recomputed "
                                           "from the base weights on load)")


class LoraXSLinear(nn.Module):
    """A frozen ``nn.Linear`` plus B·R·A; only R trains."""

    def __init__(self, base_layer: nn.Linear, r: int):
        super().__init__()
        self.base_layer = base_layer
        weight = base_layer.weight
        r = min(r, weight.shape[0], weight.shape[1])
        if weight.is_meta:  # counting on the meta device: shapes only
            a = torch.empty(r, weight.shape[1], device="meta", dtype=weight.dtype)
            b = torch.empty(weight.shape[0], r, device="meta", dtype=weight.dtype)
        else:
            u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
            root = s[:r].sqrt()
            a = (root[:, None] * vh[:r]).to(weight.dtype)
            b = (u[:, :r] * root[None, :]).to(weight.dtype)
        self.register_buffer("xs_A", a)
        self.register_buffer("xs_B", b)
        self.xs_R = nn.Parameter(torch.zeros(r, r, dtype=weight.dtype, device=weight.device))
        self.merged = False

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def delta_weight(self) -> torch.Tensor:
        return self.xs_B @ self.xs_R @ self.xs_A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        if self.merged:
            return out
        return out + F.linear(F.linear(F.linear(x, self.xs_A), self.xs_R), self.xs_B)


def _select(names: list, n_modules: int | None) -> list:
    if n_modules is None or n_modules >= len(names):
        return names
    step = len(names) / n_modules
    return [names[int(i * step)] for i in range(n_modules)]


class LoraXS(Method):
    name = "lora_xs"
    config_class = LoraXSMethodConfig
    default_learning_rate = 1e-3
    summary = "LoRA-XS: a trainable r×r matrix between each weight's frozen truncated-SVD factors"
    exact_params = True

    def apply(self, model: nn.Module) -> nn.Module:
        targets = _select(matching_linears(model, self.config.target_modules), self.config.n_modules)
        for p in model.parameters():
            p.requires_grad_(False)
        for qualified, linear in targets:
            parent_name, _, child = qualified.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoraXSLinear(linear, self.config.r))
        return model

    def _layers(self, model: nn.Module) -> list[tuple[str, LoraXSLinear]]:
        return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraXSLinear)]

    def frozen_adapter_elements(self, model: nn.Module) -> int:
        if not self.config.save_frozen:
            return 0
        return sum(m.xs_A.numel() + m.xs_B.numel() for _, m in self._layers(model))

    def save_adapter(self, model: nn.Module, path: str | Path) -> None:
        tensors = {}
        for name, layer in self._layers(model):
            tensors[f"{name}.xs_R"] = layer.xs_R
            if self.config.save_frozen:
                tensors[f"{name}.xs_A"] = layer.xs_A
                tensors[f"{name}.xs_B"] = layer.xs_B
        adapter_files.save(path, self.name, self.config.to_dict(), tensors)

    def load_adapter(self, base_model: nn.Module, path: str | Path) -> nn.Module:
        meta, tensors = adapter_files.load(path, self.name)
        model = type(self)(self.config_class.from_dict(meta["config"])).apply(base_model)
        layers = dict(self._layers(model))
        with torch.no_grad():
            for key, value in tensors.items():
                name, _, attr = key.rpartition(".")
                if name not in layers:
                    raise ConfigError(f"{path}: tensor {key} has no matching module in this model")
                getattr(layers[name], attr).copy_(value)
        return model

    @contextlib.contextmanager
    def merged(self, model: nn.Module) -> Iterator[nn.Module]:
        # Swap in W + ΔW and restore the original tensor afterwards (bit-identical; see PeftMethod.merged).
        layers = [m for _, m in self._layers(model)]
        originals = []
        try:
            with torch.no_grad():
                for layer in layers:
                    original = layer.base_layer.weight.data
                    originals.append((layer, original))
                    layer.base_layer.weight.data = original + layer.delta_weight()
                    layer.merged = True
            yield model
        finally:
            for layer, original in originals:
                layer.base_layer.weight.data = original
                layer.merged = False

    @classmethod
    def count_params(cls, model: nn.Module, config: LoraXSMethodConfig) -> int:
        # Closed form: one r×r matrix per adapted module, r cut to the weight's smaller side.
        targets = _select(matching_linears(model, config.target_modules), config.n_modules)
        return sum(min(config.r, m.in_features, m.out_features) ** 2 for _, m in targets)

    @classmethod
    def max_params(cls, model: nn.Module) -> int:
        # Every paper target at full rank: r is cut to min(in, out), so no config trains more.
        return sum(min(m.in_features, m.out_features) ** 2
                   for _, m in matching_linears(model, cls.config_class().target_modules))

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[LoraXSMethodConfig]:
        # Exact budgets: k modules × r² = params; prefer covering the most modules.
        n_all = len(matching_linears(model, cls.config_class().target_modules))
        exact = [(params // (r * r), r) for r in range(1, 65)
                 if params % (r * r) == 0 and params // (r * r) <= n_all]
        for k, r in sorted(exact, reverse=True):
            yield cls.config_class(r=r, n_modules=None if k == n_all else k)
        yield cls.config_class(r=max(1, round((params / n_all) ** 0.5)))


@hookimpl
def register_methods(register):
    register(LoraXS)

"""BitFit (Ben Zaken et al. 2022): only bias terms train.

Hand-written because peft does not implement it (peft's BEFT adds value biases only). Models
without biases (Llama, SmolLM2) get zero-initialised biases on the target linears, so the method
still has something to train and is the identity at initialisation; `pefthub methods` says so.
Training nothing is an error, never a silent no-op.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from pefthub.errors import ConfigError, UnsupportedError
from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, Method, MethodConfig, matching_linears, setting
from pefthub.methods import adapter_files

_ATTENTION = {"q_proj", "k_proj", "v_proj", "o_proj"}
_MLP = {"gate_proj", "up_proj", "down_proj"}


@dataclass
class BitFitMethodConfig(MethodConfig):
    target_modules: list[str] = setting(list(PAPER_TARGET_MODULES), "linear layers whose biases train",
                                        nonempty=True)
    add_missing_biases: bool = setting(True, "add zero-initialised biases to target linears that have "
                                                  "none (needed for Llama/SmolLM2, which have no biases)")


class BitFit(Method):
    name = "bitfit"
    config_class = BitFitMethodConfig
    default_learning_rate = 1e-3
    summary = "BitFit: train only the bias terms of the target linears"
    notes = "adds zero-initialised biases where a model has none (e.g. Llama, SmolLM2)"

    def apply(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(False)
        added = []
        for name, linear in matching_linears(model, self.config.target_modules):
            if linear.bias is None:
                if not self.config.add_missing_biases:
                    continue
                linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype,
                                                       device=linear.weight.device))
                added.append(name.rsplit(".", 1)[-1])
            linear.bias.requires_grad_(True)
        self._mark_config(model, set(added))
        if self.trainable_parameters(model) == 0:
            raise UnsupportedError(f"method 'bitfit' has nothing to train: {type(model).__name__} has no biases "
                                   f"on {list(self.config.target_modules)} and add_missing_biases is False")
        return model

    @staticmethod
    def _mark_config(model: nn.Module, added: set[str]) -> None:
        # Keep the config truthful so a saved full checkpoint reloads with its biases.
        config = getattr(model, "config", None)
        if config is None:
            return
        if added & _ATTENTION and hasattr(config, "attention_bias"):
            config.attention_bias = True
        if added & _MLP and hasattr(config, "mlp_bias"):
            config.mlp_bias = True

    def _biases(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {f"{name}.bias": linear.bias for name, linear in matching_linears(model, self.config.target_modules)
                if linear.bias is not None and linear.bias.requires_grad}

    def save_adapter(self, model: nn.Module, path: str | Path) -> None:
        adapter_files.save(path, self.name, self.config.to_dict(), self._biases(model))

    def load_adapter(self, base_model: nn.Module, path: str | Path) -> nn.Module:
        meta, tensors = adapter_files.load(path, self.name)
        model = type(self)(self.config_class.from_dict(meta["config"])).apply(base_model)
        biases = self._biases(model)
        with torch.no_grad():
            for key, value in tensors.items():
                if key not in biases:
                    raise ConfigError(f"{path}: bias {key} has no matching module in this model")
                biases[key].copy_(value)
        for p in model.parameters():
            p.requires_grad_(False)
        return model

    @contextlib.contextmanager
    def merged(self, model: nn.Module) -> Iterator[nn.Module]:
        # Biases are already part of the base layers: generation runs at base speed as is.
        yield model

    @classmethod
    def count_params(cls, model: nn.Module, config: BitFitMethodConfig) -> int:
        # Closed form: one bias element per output of each target that has, or gets, a bias.
        count = sum(m.out_features for _, m in matching_linears(model, config.target_modules)
                    if m.bias is not None or config.add_missing_biases)
        if count == 0:
            raise UnsupportedError(f"method 'bitfit' has nothing to train: {type(model).__name__} has no biases "
                                   f"on {list(config.target_modules)} and add_missing_biases is False")
        return count

    @classmethod
    def max_params(cls, model: nn.Module) -> int:
        # Every output of every paper target has (or gets) a bias: no config trains more.
        return cls.count_params(model, cls.config_class())

    @classmethod
    def config_for_params(cls, model: nn.Module, params: int):
        """Nearest count over subsets of the seven module types (Σ out_features per chosen type)."""
        if params <= 0:
            raise ConfigError(f"params budget must be positive (got {params})")
        per_type: dict[str, int] = {}
        for name, linear in matching_linears(model, PAPER_TARGET_MODULES):
            kind = name.rsplit(".", 1)[-1]
            per_type[kind] = per_type.get(kind, 0) + linear.out_features
        kinds = [k for k in PAPER_TARGET_MODULES if k in per_type]
        best = None
        for mask in range(1, 2 ** len(kinds)):
            chosen = [k for i, k in enumerate(kinds) if mask >> i & 1]
            gap = abs(sum(per_type[k] for k in chosen) - params)
            if best is None or gap < best[0]:
                best = (gap, chosen)
        return cls.config_class(target_modules=best[1])


@hookimpl
def register_methods(register):
    register(BitFit)

"""Full fine-tuning: every weight trains. The reference point at the right edge of every plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from torch import nn

from pefthub.errors import ConfigError
from pefthub.hookspecs import hookimpl
from pefthub.methods import Method, MethodConfig, setting

WEIGHTS = "model.safetensors"


@dataclass
class FullMethodConfig(MethodConfig):
    train_embeddings: bool = setting(True, "also train the (possibly tied) token embeddings")


class Full(Method):
    name = "full"
    config_class = FullMethodConfig
    default_learning_rate = 1e-5
    summary = "Full fine-tuning: every weight trains"
    notes = "the 'adapter' is the whole model"
    trains_base_weights = True

    def apply(self, model: nn.Module) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        if not self.config.train_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        return model

    def save_adapter(self, model: nn.Module, path: str | Path) -> None:
        from safetensors.torch import save_model

        Path(path).mkdir(parents=True, exist_ok=True)
        save_model(model, str(Path(path) / WEIGHTS))  # handles tied embeddings

    def load_adapter(self, base_model: nn.Module, path: str | Path) -> nn.Module:
        from safetensors.torch import load_model

        file = Path(path) / WEIGHTS
        if not file.exists():
            raise ConfigError(f"{path} is not a full fine-tuning checkpoint (no {WEIGHTS})")
        load_model(base_model, str(file))
        for p in base_model.parameters():
            p.requires_grad_(False)
        return base_model

    @classmethod
    def count_params(cls, model: nn.Module, config: FullMethodConfig) -> int:
        # Closed form: every weight, less the (possibly tied) input embeddings when they stay frozen.
        total = sum(p.numel() for p in model.parameters())
        return total if config.train_embeddings else total - model.get_input_embeddings().weight.numel()

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[FullMethodConfig]:
        yield cls.config_class(train_embeddings=True)
        yield cls.config_class(train_embeddings=False)


@hookimpl
def register_methods(register):
    register(Full)

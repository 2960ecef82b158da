"""The method contract every fine-tuning method (built-in or third-party) implements.

A method takes a loaded causal LM and its config and returns a model whose only trainable parameters
are the method's. Around that it reports exact trainable counts, saves and loads its adapter, folds
itself into the base weights for fast generation, and says how many bytes its adapter takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from torch import nn

from pefthub.settings import Settings, setting
from pefthub.errors import ConfigError, UnsupportedError

PAPER_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


#: Kept for plugins written against it: a method config's field is a :func:`pefthub.settings.setting`.
config_field = setting

#: The learning rate of a method that declares none (:attr:`Method.default_learning_rate`).
FALLBACK_LEARNING_RATE = 1e-4


@dataclass
class MethodConfig(Settings):
    """Base class for method configs: :func:`~pefthub.settings.setting` fields, validated in
    ``__post_init__``; errors name ``<ConfigClass>.<field>``."""


@dataclass(frozen=True)
class AdapterBytes:
    """Bytes of the adapter's tensors on disk.

    ``trainable_*`` counts only the trained tensors; ``saved_*`` adds the frozen buffers a checkpoint
    carries (TinyLoRA's SVD factors and projections, VeRA's shared random matrices, LoRA-XS's SVD
    factors). ``*_fp32``/``*_bf16`` are the sizes at 4 and 2 bytes per element.
    """

    trainable_fp32: int
    trainable_bf16: int
    saved_fp32: int
    saved_bf16: int

    @classmethod
    def from_counts(cls, trainable: int, frozen: int) -> "AdapterBytes":
        return cls(4 * trainable, 2 * trainable, 4 * (trainable + frozen), 2 * (trainable + frozen))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def trainer_refusal(method_cls: type["Method"], trainer: str, kind: str | None = None) -> str | None:
    """Why methods of ``method_cls`` cannot train with ``trainer`` (running algorithm ``kind``,
    default: the trainer's name), in one line; None when they can."""
    kind = kind or trainer
    if kind in method_cls.supported_trainers:
        return None
    runs = f" (a {kind} trainer)" if kind != trainer else ""
    return (f"method '{method_cls.name}' does not support trainer '{trainer}'{runs} "
            f"(supported: {', '.join(method_cls.supported_trainers)})")


class Method:
    """Base class of a fine-tuning method. Subclasses set the class attributes and implement
    :meth:`apply`, :meth:`save_adapter`, :meth:`load_adapter` and, when mergeable, :meth:`merged`.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    summary: ClassVar[str] = ""
    #: Shown by `pefthub methods`: anything the method does beyond its textbook definition.
    notes: ClassVar[str] = ""
    supported_trainers: ClassVar[tuple[str, ...]] = ("sft", "grpo")
    #: The adapted model computes exactly the base model's function before training.
    identity_at_init: ClassVar[bool] = True
    #: The adapter can be folded into the base weights (generation at base-model speed).
    mergeable: ClassVar[bool] = True
    #: `config_for_params` can hit any reachable count exactly (else: the nearest).
    exact_params: ClassVar[bool] = False
    #: The method trains the base model's own weights (full fine-tuning).
    trains_base_weights: ClassVar[bool] = False
    #: The learning rate a run takes when its config gives none (`pefthub train` without ``--lr``);
    #: adapters with very few parameters need much larger steps than full fine-tuning.
    default_learning_rate: ClassVar[float] = FALLBACK_LEARNING_RATE
    #: Trainer algorithm ("sft", "grpo") -> learning rate, where one differs from ``default_learning_rate``.
    trainer_learning_rates: ClassVar[dict[str, float]] = {}

    @classmethod
    def learning_rate_for(cls, trainer: str | None = None) -> float:
        """The default learning rate of this method under the trainer algorithm ``trainer``."""
        return cls.trainer_learning_rates.get(trainer, cls.default_learning_rate) if trainer else \
            cls.default_learning_rate

    def __init__(self, config: MethodConfig | None = None):
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(f"method '{self.name}' takes a {self.config_class.__name__}, got {type(self.config).__name__}")

    # ---- what every method implements -------------------------------------------------------
    def apply(self, model: nn.Module) -> nn.Module:
        """Adapt ``model`` (a transformers causal LM); return the model to train.

        Afterwards the only parameters with ``requires_grad`` are the method's. May modify ``model``
        in place. Raise :class:`UnsupportedError` if the model lacks what the method needs.
        """
        raise NotImplementedError

    def save_adapter(self, model: nn.Module, path: str | Path) -> None:
        """Write the adapter (not the base weights, unless the method is full fine-tuning)."""
        raise NotImplementedError

    def load_adapter(self, base_model: nn.Module, path: str | Path) -> nn.Module:
        """Return ``base_model`` with the adapter saved at ``path`` applied (frozen)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def merged(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block, the adapter is folded into the base weights; on exit the base weights
        are restored bit-for-bit. Yields the module to call ``generate``/``forward`` on."""
        yield model

    # ---- shared behaviour ------------------------------------------------------------------
    def forward_logits(self, model: nn.Module, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits aligned with ``input_ids`` (methods that prepend virtual tokens strip them)."""
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def trainable_parameters(self, model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    def frozen_adapter_elements(self, model: nn.Module) -> int:
        """Elements of frozen tensors the saved adapter carries (SVD factors, projections)."""
        return 0

    def adapter_bytes(self, model: nn.Module) -> AdapterBytes:
        return AdapterBytes.from_counts(self.trainable_parameters(model), self.frozen_adapter_elements(model))

    def check_trainer(self, trainer: str, kind: str | None = None) -> None:
        """Raise :class:`UnsupportedError` unless the method works with ``trainer``, whose algorithm
        is ``kind`` (default: the trainer's name; ``trl-grpo`` runs ``grpo``)."""
        refusal = trainer_refusal(type(self), trainer, kind)
        if refusal:
            raise UnsupportedError(refusal)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict()}

    # ---- parameter budgets -----------------------------------------------------------------
    @classmethod
    def config_for_params(cls, model: nn.Module, params: int) -> MethodConfig:
        """The config whose trainable count is ``params`` (exactly if the method can, else nearest).

        ``model`` may live on the meta device. The default searches :meth:`candidate_configs`.
        """
        if params <= 0:
            raise ConfigError(f"params budget must be positive (got {params})")
        best: tuple[int, int, MethodConfig] | None = None
        for config in cls.candidate_configs(model, params):
            count = cls.count_params(model, config)
            score = abs(count - params)
            if best is None or score < best[0]:
                best = (score, count, config)
            if score == 0:
                break
        if best is None:
            raise UnsupportedError(f"method '{cls.name}' cannot target a parameter budget")
        return best[2]

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[MethodConfig]:
        """Configs to try for a parameter budget, best guesses first."""
        return iter(())

    @classmethod
    def count_params(cls, model: nn.Module, config: MethodConfig) -> int:
        """Trainable parameters ``config`` gives on ``model``, without weights.

        The default applies the method to a meta copy with tensor factories on the meta device; a
        method whose :meth:`apply` would still allocate real tensors (random projections drawn from
        a CPU generator) overrides this with its closed form.
        """
        method = cls(config)
        with torch.device("meta"):
            return method.trainable_parameters(method.apply(meta_copy(model)))

    @classmethod
    def plan_adapter_bytes(cls, model: nn.Module, config: MethodConfig) -> AdapterBytes:
        """:meth:`adapter_bytes` of ``config`` on ``model``, without weights (same rule as :meth:`count_params`)."""
        method = cls(config)
        with torch.device("meta"):
            return method.adapter_bytes(method.apply(meta_copy(model)))

    @classmethod
    def max_params(cls, model: nn.Module) -> int:
        """The largest trainable count the method supports on ``model``; a budget above it is refused
        before any config is built. The default is the model's own parameter count: full
        fine-tuning is the right edge of every comparison, and no adapter is meant to pass it.
        """
        return model_size(model)


def model_size(model: nn.Module) -> int:
    """Parameters of ``model``, shared tensors once (works on the meta device)."""
    return sum(p.numel() for p in model.parameters())


def meta_copy(model: nn.Module) -> nn.Module:
    """A weightless copy of a transformers model on the meta device (cheap to adapt and count)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model.config)


def matching_linears(model: nn.Module, target_modules: tuple[str, ...] | list[str]) -> list[tuple[str, nn.Linear]]:
    """(qualified name, module) of every ``nn.Linear`` whose last name part is a target, in module order."""
    targets = set(target_modules)
    found = [(name, mod) for name, mod in model.named_modules()
             if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    if not found:
        raise UnsupportedError(f"no nn.Linear module named {sorted(targets)} in {type(model).__name__}")
    return found

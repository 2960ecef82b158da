"""A base for methods that peft implements (TinyLoRA, LoRA, VeRA, prompt tuning, DoRA, ...).

A subclass only says how its pefthub config maps to a peft config; applying, saving, loading,
merging and byte accounting are shared here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from pefthub.errors import UnsupportedError
from pefthub.methods.base import Method


class PeftMethod(Method):
    """Method backed by ``peft.get_peft_model``. Subclasses implement :meth:`peft_config`."""

    def peft_config(self):
        """The ``peft.PeftConfig`` this method's config stands for."""
        raise NotImplementedError

    def apply(self, model: nn.Module) -> nn.Module:
        from peft import get_peft_model

        try:
            adapted = get_peft_model(model, self.peft_config())
        except ValueError as exc:  # peft says why a model cannot take the adapter
            raise UnsupportedError(f"method '{self.name}' cannot adapt {type(model).__name__}: {exc}") from None
        if self.trainable_parameters(adapted) == 0:
            raise UnsupportedError(f"method '{self.name}' found nothing to train in {type(model).__name__}")
        return adapted

    def save_adapter(self, model: nn.Module, path: str | Path) -> None:
        model.save_pretrained(str(path))

    def load_adapter(self, base_model: nn.Module, path: str | Path) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(base_model, str(path), is_trainable=False)

    def frozen_adapter_elements(self, model: nn.Module) -> int:
        from peft import get_peft_model_state_dict

        # Map the saved keys back to the model's own tensor objects, so tensors shared between
        # modules (TinyLoRA's tied v, VeRA's shared projections) count once, also on the meta device.
        saved_keys = set(get_peft_model_state_dict(model))
        owned = {**dict(model.named_parameters(remove_duplicate=False)),
                 **dict(model.named_buffers(remove_duplicate=False))}
        seen: set[int] = set()
        frozen = 0
        for key, tensor in owned.items():
            if _adapter_key(key) in saved_keys and id(tensor) not in seen and not tensor.requires_grad:
                seen.add(id(tensor))
                frozen += tensor.numel()
        return frozen

    @contextlib.contextmanager
    def merged(self, model: nn.Module) -> Iterator[nn.Module]:
        """Fold every active adapter into its base weight for the block, then put the original
        weight tensors back.

        Why not peft's ``merge_adapter``/``unmerge_adapter``: unmerging subtracts the delta again,
        and in fp32 ``(W + Δ) - Δ != W``; over thousands of rollouts the frozen weights would drift.
        Swapping in a merged copy and restoring the original tensor object keeps them bit-identical,
        at the cost of one extra copy of the adapted weights while the block runs.
        """
        if not self.mergeable:
            yield model
            return
        from peft.tuners.tuners_utils import BaseTunerLayer

        swapped: list[tuple[BaseTunerLayer, nn.Module, torch.Tensor, list[str]]] = []
        try:
            with torch.no_grad():
                for layer in model.modules():
                    if not isinstance(layer, BaseTunerLayer) or layer.merged:
                        continue
                    base = layer.get_base_layer()
                    active = [a for a in layer.active_adapters if a in _adapter_names(layer)]
                    if not active:
                        continue
                    original = base.weight.data
                    swapped.append((layer, base, original, list(layer.merged_adapters)))
                    base.weight.data = self.merge_weight(layer, active, original)
                    layer.merged_adapters.extend(active)
            yield model
        finally:
            for layer, base, original, previous in swapped:
                base.weight.data = original
                layer.merged_adapters[:] = previous

    def merge_weight(self, layer: nn.Module, adapters: list[str], weight: torch.Tensor) -> torch.Tensor:
        """A new tensor ``weight + Σ Δ`` over ``adapters`` of peft ``layer`` (``weight`` is left as is).

        This runs before every GRPO rollout; a method whose delta has a faster exact form
        overrides it (VeRA does). The default is peft's ``get_delta_weight``, added in one pass.
        """
        merged = None
        for adapter in adapters:
            delta = layer.get_delta_weight(adapter).to(weight.dtype)
            merged = weight + delta if merged is None else merged.add_(delta)
        return weight.clone() if merged is None else merged


def _adapter_names(layer) -> set[str]:
    names: set[str] = set()
    for attr in getattr(layer, "adapter_layer_names", ()):
        container = getattr(layer, attr, None)
        if hasattr(container, "keys"):
            names.update(container.keys())
    return names


def _adapter_key(key: str) -> str:
    """A model state-dict key as peft names it in a saved adapter (adapter name dropped)."""
    return key.replace(".default.", ".").removesuffix(".default")

"""VeRA (Kopiczko et al. 2024) through peft: shared frozen random A, B; trainable scaling vectors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, MethodConfig, matching_linears, setting
from pefthub.methods.peft_method import PeftMethod


@dataclass
class VeraMethodConfig(MethodConfig):
    r: int = setting(256, "rank of the shared frozen random matrices (length of each λ_d)", min=1)
    projection_prng_key: int = setting(0, "seed of the shared random matrices")
    save_projection: bool = setting(True, "store the shared random matrices in saved adapters")
    target_modules: list[str] = setting(list(PAPER_TARGET_MODULES), "linear layers to adapt (last name part)",
                                        nonempty=True)


class Vera(PeftMethod):
    name = "vera"
    config_class = VeraMethodConfig
    default_learning_rate = 1e-3
    summary = "VeRA: per-module trainable scaling vectors λ_d (r) and λ_b (out) around shared random A, B"

    def peft_config(self):
        from peft import VeraConfig

        c = self.config
        return VeraConfig(r=c.r, projection_prng_key=c.projection_prng_key, save_projection=c.save_projection,
                          target_modules=list(c.target_modules), task_type="CAUSAL_LM")

    @torch.no_grad()
    def merge_weight(self, layer: nn.Module, adapters: list[str], weight: torch.Tensor) -> torch.Tensor:
        """``W + (λ_b ⊙ B)(λ_d ⊙ A)`` on CPU fp32 as ``B' A + W``: one oneDNN matrix multiply per
        adapter with ``B' = B ⊙ λ_b λ_dᵀ`` (out × r, small) and ``A``, shared by every module of the
        same input width, prepacked once per (A, width).

        Why: this large product runs before every rollout, and peft's ``get_delta_weight`` runs it
        through MKL and then adds ``W`` in a second pass (``test_vera_merge`` times both, in
        docs/performance.md). Same product, regrouped: equal to peft's up to float rounding. Anything
        else (other dtypes or devices, ``fan_in_fan_out``) takes peft's path.
        """
        from pefthub.generation.decoder import onednn_available

        if not (weight.device.type == "cpu" and weight.dtype == torch.float32 and weight.is_contiguous()
                and not getattr(layer, "fan_in_fan_out", False) and onednn_available()):
            return super().merge_weight(layer, adapters, weight)
        merged = weight
        for adapter in adapters:
            A, B = layer.vera_A[adapter], layer.vera_B[adapter]
            if not (A.dtype == B.dtype == torch.float32 and A.device == weight.device):
                return super().merge_weight(layer, adapters, weight)
            scaled_b = B[: layer.out_features] * (layer.vera_lambda_b[adapter][:, None]
                                                  * layer.vera_lambda_d[adapter][None, :])
            # B'A, then W added into it while it is still in cache (oneDNN's fused "add" post-op ran slower).
            delta = torch.ops.mkldnn._linear_pointwise(scaled_b, self._packed_a(A, layer.in_features), None, "none",
                                                       [], "")
            merged = delta.add_(merged)
        return merged if merged is not weight else weight.clone()

    def _packed_a(self, A: torch.Tensor, width: int) -> torch.Tensor:
        """``A[:, :width]ᵀ`` in oneDNN's weight layout, cached while ``A`` is unchanged (it is frozen)."""
        cache = self.__dict__.setdefault("_packed_a_cache", {})
        key = (id(A), A._version, width)
        entry = cache.get(key)
        if entry is None or entry[0] is not A:  # the entry holds A, so its id cannot be reused meanwhile
            if len(cache) >= 8:
                cache.clear()
            entry = cache[key] = (A, torch.ops.mkldnn._reorder_linear_weight(A[:, :width].t().contiguous(), None))
        return entry[1]

    @classmethod
    def count_params(cls, model: nn.Module, config: VeraMethodConfig) -> int:
        # Closed form Σ(r + out): λ_d (r) and λ_b (out) per module.
        return sum(config.r + m.out_features for _, m in matching_linears(model, config.target_modules))

    @classmethod
    def candidate_configs(cls, model: nn.Module, params: int) -> Iterator[VeraMethodConfig]:
        # Σ(r + out) over the targets: r = (params − Σout) / n_modules, at least 1.
        targets = matching_linears(model, cls.config_class().target_modules)
        outs = sum(m.out_features for _, m in targets)
        yield cls.config_class(r=max(1, round((params - outs) / len(targets))))


@hookimpl
def register_methods(register):
    register(Vera)

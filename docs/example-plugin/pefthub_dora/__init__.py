"""DoRA (Liu et al. 2024) as a pefthub method: an example third-party plugin.

peft implements DoRA as LoRA with ``use_dora=True``; this plugin only maps a pefthub config onto it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pefthub.hookspecs import hookimpl
from pefthub.methods import PAPER_TARGET_MODULES, MethodConfig, setting
from pefthub.methods.peft_method import PeftMethod


@dataclass
class DoraMethodConfig(MethodConfig):
    r: int = setting(8, "rank of the low-rank direction update", min=1)
    alpha: float = setting(16.0, "scaling numerator: the update is multiplied by alpha / r", above=0)
    target_modules: list[str] = setting(list(PAPER_TARGET_MODULES), "linear layers to adapt", nonempty=True)


class Dora(PeftMethod):
    name = "dora"
    config_class = DoraMethodConfig
    summary = "DoRA: LoRA on the direction of each weight plus a trainable magnitude vector"
    default_learning_rate = 1e-4  # a run without a learning rate takes this one (LoRA's scale)
    # DoRA renormalises W + ΔW by column norms, so folding it in is not W + ΔW; the base class's
    # merged() would be wrong, and peft's merge/unmerge drifts. Generation runs unmerged.
    mergeable = False
    notes = "not mergeable here (magnitude renormalisation); generation runs through the adapter"

    def peft_config(self):
        from peft import LoraConfig

        c = self.config
        return LoraConfig(r=c.r, lora_alpha=c.alpha, target_modules=list(c.target_modules), use_dora=True,
                          task_type="CAUSAL_LM")


@hookimpl
def register_methods(register):
    register(Dora)

"""GRPO with ``rollout_backend="vllm"`` on the real SmolLM2-135M-Instruct with LoRA: rollouts come from
the engine, weights are synced after each step, truncated importance sampling is on by default and
the train/rollout log-prob gap is logged. One engine (the trainer's) for the module.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

from pefthub import plugins  # noqa: E402
from pefthub.models import load_model  # noqa: E402
from pefthub.tasks.base import Example, Task  # noqa: E402
from pefthub.trainers.budget import Budget  # noqa: E402
from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer  # noqa: E402
from pefthub.generation import rollout_vllm  # noqa: E402,F401  (registers the "vllm" backend)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


class DigitsTask(Task):
    """Reward: the share of completion characters that are digits (continuous, so groups differ)."""

    name = "digits"
    reward = ""

    def examples(self, split, n=None):
        xs = [Example(id=f"{split}-{i}", question=f"Count from {i} to {i + 5}.", answer="0") for i in range(8)]
        return xs[:n] if n else xs

    def messages(self, example):
        return [{"role": "user", "content": example.question}]

    def target(self, example):
        return example.answer

    def extract(self, completion):
        return completion

    def score(self, completion, example):
        return sum(ch.isdigit() for ch in completion) / max(1, len(completion))


def test_grpo_trains_with_vllm_rollouts_and_synced_weights():
    lm = load_model("smollm2-135m-instruct")
    cls = plugins.methods().get("lora")
    method = cls(cls.config_class(r=4))
    model = method.apply(lm.model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    budget = Budget(steps=2, batch_size=2, generations=3, max_new_tokens=12, max_seq_len=128)
    outcome = GRPOTrainer(GRPOOptions(rollout_backend="vllm")).train(
        model=model, tokenizer=lm.tokenizer, method=method, task=DigitsTask(), budget=budget,
        learning_rate=5e-3, seed=0)
    assert outcome.status == "success", outcome.error
    assert outcome.spent.optimizer_steps == 2 and outcome.spent.completions == 12
    assert 0 < outcome.spent.tokens_generated <= 12 * 12
    moved = max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters() if p.requires_grad)
    assert moved > 1e-3  # the first step changed the adapter ...
    gaps = [c["logprob_gap"] for c in outcome.curves]
    print(f"train/rollout log-prob gap per step: {gaps}")
    # ... and the second step's rollouts still match the training forward: the engine got the update.
    assert all(g is not None and g < 1e-3 for g in gaps), gaps

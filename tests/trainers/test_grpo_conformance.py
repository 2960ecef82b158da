"""pefthub's hand-written GRPO loss against TRL 1.16's own loss code on fixed batches.

Same model, same prompts and completions, same advantages, old/reference log-probs and importance
weights: TRL's ``GRPOTrainer._compute_loss`` (called on a trainer built with a tiny model) and
pefthub's forward + :func:`grpo_loss` must agree on the loss and on every parameter's gradient
within 1e-5, for each loss type, with and without the KL term and truncated importance sampling.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from pefthub import plugins  # noqa: E402
from pefthub.models import load_model  # noqa: E402
from pefthub.trainers import common  # noqa: E402
from pefthub.trainers.grpo import grpo_loss, truncated_importance_weights  # noqa: E402

TEMPERATURE = 0.7
MAX_COMPLETION = 12
TOL = 1e-5


@pytest.fixture(scope="module")
def trl_trainer(tmp_path_factory):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    lm = load_model("tiny-random", seed=3)
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("trl")), per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=MAX_COMPLETION, temperature=TEMPERATURE,
                      loss_type="dapo", beta=0.0, report_to=[], use_cpu=True, save_strategy="no",
                      bf16=False)  # fp32 as pefthub (TRL defaults to bf16 autocast)
    trainer = GRPOTrainer(model=lm.model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                          args=args, train_dataset=Dataset.from_list([{"prompt": "hi"}] * 4),
                          processing_class=lm.tokenizer)
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    rows, prompt_width = 6, 7
    prompt_ids = torch.randint(3, 250, (rows, prompt_width), generator=g)
    prompt_mask = torch.ones_like(prompt_ids)
    for i, pad in enumerate([0, 2, 0, 3, 1, 0]):  # left padding
        prompt_ids[i, :pad] = 0
        prompt_mask[i, :pad] = 0
    completion_ids = torch.randint(3, 250, (rows, MAX_COMPLETION), generator=g)
    completion_mask = torch.ones_like(completion_ids)
    for i, length in enumerate([12, 5, 9, 1, 12, 7]):  # right padding after the end token
        completion_mask[i, length:] = 0
        completion_ids[i, length:] = 0
    advantages = torch.tensor([1.3, -0.7, 0.0, 0.4, -1.1, 0.9])
    return prompt_ids, prompt_mask, completion_ids, completion_mask, advantages, g


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("beta,kl_bias_correction", [(0.0, False), (0.04, False), (0.04, True)])
@pytest.mark.parametrize("tis", [False, True])
def test_loss_and_gradients_match_trl(trl_trainer, loss_type, beta, kl_bias_correction, tis):
    trainer = trl_trainer
    model = trainer.model
    trainer.loss_type, trainer.beta = loss_type, beta
    trainer.args.use_bias_correction_kl = kl_bias_correction
    trainer.epsilon_low, trainer.epsilon_high = 0.2, 0.28
    trainer.use_vllm = tis
    trainer.vllm_importance_sampling_correction = tis
    prompt_ids, prompt_mask, completion_ids, completion_mask, advantages, g = _batch(seed=11)
    method = plugins.methods().get("full")()
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, completion_mask], 1)

    with torch.no_grad():  # old log-probs off the current policy so the ratio clips on some tokens
        logits = common.tail_logits(method, model, input_ids, attention, MAX_COMPLETION + 1)[:, :-1]
        current = common.token_logprobs(logits, completion_ids, TEMPERATURE)
    old = current + 0.3 * torch.randn(current.shape, generator=g)
    ref = current + 0.2 * torch.randn(current.shape, generator=g)
    sampling = old + 0.4 * torch.randn(current.shape, generator=g)
    is_weights = truncated_importance_weights(old, sampling, cap=2.0) if tis else None

    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": advantages, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": completion_mask.sum()}
    if tis:  # what TRL computes in token_truncate mode: clamp(exp(old − sampling), max=C)
        inputs["importance_sampling_ratio"] = torch.clamp(torch.exp((old - sampling) * completion_mask), max=2.0)
    model.zero_grad(set_to_none=True)
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = _grads(model)

    model.zero_grad(set_to_none=True)
    logits = common.tail_logits(method, model, input_ids, attention, MAX_COMPLETION + 1)[:, :-1]
    logps = common.token_logprobs(logits, completion_ids, TEMPERATURE)
    ours, _ = grpo_loss(logps, old, advantages, completion_mask, loss_type=loss_type, epsilon_low=0.2,
                        epsilon_high=0.28, max_completion_length=MAX_COMPLETION, beta=beta,
                        ref_logps=ref if beta else None, is_weights=is_weights,
                        kl_bias_correction=kl_bias_correction)
    ours.backward()
    our_grads = _grads(model)
    model.zero_grad(set_to_none=True)

    assert abs(float(ours.detach()) - float(trl_loss.detach())) <= TOL, (float(ours.detach()), float(trl_loss.detach()))
    assert trl_grads.keys() == our_grads.keys()
    worst = max(float((trl_grads[n] - our_grads[n]).abs().max()) for n in trl_grads)
    assert worst <= TOL, worst
    assert max(float(g.abs().max()) for g in trl_grads.values()) > 1e-4  # the comparison is not of zeros


def test_micro_batches_sum_to_the_full_batch_loss(trl_trainer):
    """Splitting the rows into micro-batches (with global normalisers) changes nothing."""
    model = trl_trainer.model
    prompt_ids, prompt_mask, completion_ids, completion_mask, advantages, g = _batch(seed=5)
    method = plugins.methods().get("full")()
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    attention = torch.cat([prompt_mask, completion_mask], 1)
    with torch.no_grad():
        logits = common.tail_logits(method, model, input_ids, attention, MAX_COMPLETION + 1)[:, :-1]
        logps = common.token_logprobs(logits, completion_ids, TEMPERATURE)
    old = logps + 0.3 * torch.randn(logps.shape, generator=g)
    for loss_type in ("dapo", "grpo", "dr_grpo"):
        kwargs = dict(loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.2, max_completion_length=MAX_COMPLETION)
        full, _ = grpo_loss(logps, old, advantages, completion_mask, **kwargs)
        parts = sum(float(grpo_loss(logps[s], old[s], advantages[s], completion_mask[s], total_sequences=6,
                                    total_tokens=float(completion_mask.sum()), **kwargs)[0])
                    for s in (slice(0, 2), slice(2, 5), slice(5, 6)))
        assert abs(parts - float(full)) < 1e-6, loss_type

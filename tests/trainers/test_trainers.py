"""Trainers on the tiny random model: budgets, learning signal, frozen weights, determinism, failures.

The tiny model's final norm is scaled ×8 (``tiny_lm``): with the random init's near-zero logits a
low-rank update could barely move the output distribution, and no method could show a learning
signal in a few steps. The task is synthetic and trivially learnable: write lowercase letters.
"""

from __future__ import annotations

import math

import pytest
import torch

from pefthub import plugins
from pefthub.errors import ConfigError
from pefthub.models import load_model
from pefthub.tasks import Example, Task
from pefthub.trainers import Budget, Spent
from pefthub.trainers.base import TrainingFailure
from pefthub.trainers.common import BatchStream, tail_logits
from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer, group_advantages, resolve_reward
from pefthub.generation.rollout import FusedRolloutBackend, HFGenerateBackend, completion_mask
from pefthub.trainers.sft import SFTOptions, SFTTrainer, encode_example, pad_batch

LOWER = set("abcdefghijklmnopqrstuvwxyz")


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model's ops are too small to share between threads: with two threads on a busy
    machine, OpenMP's waiting made them ~40x slower. One thread is also the deterministic setting."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
METHODS = ("full", "lora", "tinylora", "vera", "lora_xs", "bitfit", "prompt_tuning")


class LettersTask(Task):
    """Reward: the share of completion characters that are lowercase letters."""

    name = "letters"
    reward = ""  # no registered reward: the trainer falls back to score()

    def examples(self, split, n=None):
        xs = [Example(id=f"{split}-{i}", question=f"Write some letters, please ({i}).", answer="abc",
                      solution="abcdefghij") for i in range(12)]
        return xs[:n] if n else xs

    def messages(self, example):
        return [{"role": "user", "content": example.question}]

    def target(self, example):
        return example.solution

    def extract(self, completion):
        return completion

    def score(self, completion, example):
        return sum(ch in LOWER for ch in completion) / max(1, len(completion))


def tiny_lm(name="tiny-random"):
    lm = load_model(name, seed=0)
    with torch.no_grad():
        lm.model.model.norm.weight.mul_(8.0)
    return lm


def adapt(lm, method_name, **config):
    cls = plugins.methods().get(method_name)
    method = cls(cls.config_class(**config))
    return method, method.apply(lm.model)


def grpo(**options):
    return GRPOTrainer(GRPOOptions(**options))


def budget(**kw):
    return Budget(**{"steps": 4, "batch_size": 4, "generations": 4, "max_new_tokens": 12, "max_seq_len": 96, **kw})


def frozen_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# ---- budget and options ----------------------------------------------------------------------
@pytest.mark.parametrize("field,value", [("steps", 0), ("steps", -3), ("batch_size", 0), ("generations", 0),
                                         ("max_new_tokens", 0), ("max_seq_len", -1), ("steps", 2.5),
                                         ("steps", True)])
def test_budget_rejects_non_positive_counts_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"budget.{field}"):
        Budget(**{field: value})


def test_budget_rejects_bad_schedule_warmup_and_unknown_fields():
    with pytest.raises(ConfigError, match="budget.schedule"):
        Budget(schedule="exponential")
    with pytest.raises(ConfigError, match="budget.warmup_ratio"):
        Budget(warmup_ratio=1.0)
    with pytest.raises(ConfigError, match="unknown field.*stepz"):
        Budget.from_dict({"stepz": 3})
    assert Budget.from_dict({"steps": 7}).to_dict()["steps"] == 7


def test_grpo_budget_needs_two_generations_and_room_for_the_prompt():
    with pytest.raises(ConfigError, match="budget.generations"):
        grpo().check_budget(Budget(generations=1))
    with pytest.raises(ConfigError, match="max_new_tokens"):
        grpo().check_budget(Budget(max_new_tokens=400, max_seq_len=384))


@pytest.mark.parametrize("field,value", [("loss_type", "ppo"), ("scale_rewards", "max"), ("beta", -0.1),
                                         ("epsilon_low", 1.5), ("temperature", 0.0), ("rollout_backend", "x"),
                                         ("rollout_correction", "maybe"), ("tis_cap", 0.5),
                                         ("micro_batch_size", -1)])
def test_grpo_options_are_validated_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"trainer_options.{field}"):
        GRPOOptions(**{field: value})


def test_options_from_dict_rejects_unknown_fields_and_fills_defaults():
    with pytest.raises(ConfigError, match="unknown field.*betta"):
        GRPOOptions.from_dict({"betta": 0.1})
    with pytest.raises(ConfigError, match="trainer_options.max_grad_norm"):
        SFTOptions.from_dict({"max_grad_norm": -1})
    assert GRPOOptions.from_dict({"beta": 0.01}).to_dict()["loss_type"] == "dapo"
    assert all(help_text for _, help_text, _ in GRPOOptions.field_help())


def test_trainers_are_registered_through_the_plugin_hook():
    assert plugins.trainers().get("grpo") is GRPOTrainer
    assert plugins.trainers().get("sft") is SFTTrainer
    assert plugins.trainers().owner["grpo"] == "trainers"


# ---- pure pieces -----------------------------------------------------------------------------
def test_group_advantages_centre_scale_and_count_all_equal_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1])
    adv, zero = group_advantages(rewards, 4, "group")
    assert zero.tolist() == [False, True, True]
    assert torch.all(adv[4:] == 0)  # exactly zero, not 1e-17
    std = torch.tensor([1.0, 0.0, 0.0, 1.0]).std()
    assert torch.allclose(adv[:4], (torch.tensor([1.0, 0, 0, 1]) - 0.5) / (std + 1e-4))
    unscaled, _ = group_advantages(rewards, 4, "none")
    assert torch.allclose(unscaled[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_completion_mask_keeps_the_end_token_and_drops_what_follows():
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    assert completion_mask(ids, {2}).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


def test_batch_stream_is_seeded_and_sees_every_item_once_per_pass():
    a = [next(s) for s in [BatchStream(list(range(10)), 5, seed=1)] * 2]
    b = [next(s) for s in [BatchStream(list(range(10)), 5, seed=1)] * 2]
    assert a == b and sorted(a[0] + a[1]) == list(range(10))
    assert a != [next(s) for s in [BatchStream(list(range(10)), 5, seed=2)] * 2]


def test_sft_masks_the_prompt_and_ends_the_target_with_the_turn_end():
    lm = tiny_lm()
    task = LettersTask()
    ex = task.examples("train", 1)[0]
    prompt, target = encode_example(lm.tokenizer, task, ex, max_seq_len=512)
    assert lm.tokenizer.decode(target) == "abcdefghij<|im_end|>\n"
    ids, attention, labels = pad_batch([(prompt, target), (prompt[:3], target)], pad_id=0, device="cpu")
    assert (labels[0, :len(prompt)] == -100).all() and labels[0, len(prompt):].tolist() == target
    assert attention[1].sum() == 3 + len(target) and (labels[1, 3 + len(target):] == -100).all()
    short_prompt, short_target = encode_example(lm.tokenizer, task, ex, max_seq_len=len(target) + 5)
    assert len(short_prompt) + len(short_target) == len(target) + 5 and short_target == target


def test_tail_logits_match_the_full_forward_for_every_kind_of_method():
    for name in ("lora", "prompt_tuning"):
        lm = tiny_lm()
        method, model = adapt(lm, name)
        ids = torch.randint(3, 250, (2, 9))
        mask = torch.ones_like(ids)
        full = method.forward_logits(model, ids, mask)
        assert torch.allclose(tail_logits(method, model, ids, mask, 4), full[:, -4:], atol=1e-6)


def _nudged(lm, name):
    method, model = adapt(lm, name)
    with torch.no_grad():  # away from the identity init, so the adapter shapes the logits
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return method, model


def _logits_and_grads(model, run, scored):
    """Logits, positions forwarded and the trainable gradients of a weighted sum over the ``scored``
    positions (padding's logits are never scored, and differ between forwards)."""
    model.zero_grad(set_to_none=True)
    logits, positions = run()
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits) * scored[..., None]
    (logits * weights).sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    return logits.detach(), positions, grads


@pytest.mark.parametrize("name", ["lora", "full", "prompt_tuning"])
def test_completion_logits_share_each_prompt_and_match_the_whole_rows(name):
    """GRPO's training forward runs each group's prompt once: logits and gradients equal the rows
    forwarded whole (left-padded prompts of two lengths, ragged completions), in fewer positions."""
    from pefthub.trainers.common import completion_logits

    torch.manual_seed(0)
    method, model = _nudged(tiny_lm(), name)
    long, short = torch.randint(3, 250, (11,)), torch.randint(3, 250, (6,))
    prompt_ids = torch.zeros(6, 11, dtype=torch.long)
    prompt_mask = torch.zeros(6, 11, dtype=torch.long)
    for row in range(6):  # rows 0-2 the long prompt, 3-5 the short one (left padding)
        p = long if row < 3 else short
        prompt_ids[row, -len(p):], prompt_mask[row, -len(p):] = p, 1
    completion = torch.randint(3, 250, (6, 7))
    c_mask = torch.ones(6, 7, dtype=torch.long)
    c_mask[1, 4:] = c_mask[4, 2:] = 0
    shared = _logits_and_grads(model, lambda: completion_logits(method, model, prompt_ids, prompt_mask,
                                                                completion, c_mask), c_mask)
    ids, mask = torch.cat([prompt_ids, completion], 1), torch.cat([prompt_mask, c_mask], 1)
    whole = _logits_and_grads(model, lambda: (tail_logits(method, model, ids, mask, 8)[:, :-1], ids.numel()),
                              c_mask)
    assert shared[0].shape == (6, 7, whole[0].shape[-1])
    real = c_mask.bool()
    assert torch.allclose(shared[0][real], whole[0][real], atol=1e-5)
    for a, b in zip(shared[2], whole[2]):  # float rounding only (fp32 sums in another order)
        assert (a - b).norm() <= 1e-5 * b.norm()
    if name == "prompt_tuning":  # virtual tokens rewrite the input: rows are forwarded whole
        assert shared[1] == whole[1]
    else:
        assert shared[1] == 2 * 11 + 6 * 6 < whole[1]


@pytest.mark.parametrize("name", ["lora", "bitfit"])
def test_sft_forward_shares_the_common_opening_and_matches_the_plain_forward(name):
    """SFT's rows share the chat template's opening: it is forwarded once, with the same logits and
    gradients as the plain forward of every row (right padding included)."""
    from pefthub.trainers.common import prefix_shared_tail_logits

    torch.manual_seed(0)
    method, model = _nudged(tiny_lm("tiny-random-qwen2" if name == "bitfit" else "tiny-random"), name)
    opening = torch.randint(3, 250, (20,)).tolist()
    rows = [opening + torch.randint(3, 250, (n,)).tolist() for n in (9, 5, 12)]
    ids = torch.zeros(3, 32, dtype=torch.long)
    mask = torch.zeros(3, 32, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    keep = 32 - 22
    real = mask[:, -keep:].bool()
    shared = _logits_and_grads(model, lambda: prefix_shared_tail_logits(method, model, ids, mask, keep), real)
    plain = _logits_and_grads(model, lambda: (tail_logits(method, model, ids, mask, keep), ids.numel()), real)
    assert torch.allclose(shared[0][real], plain[0][real], atol=1e-5)
    for a, b in zip(shared[2], plain[2]):
        assert (a - b).norm() <= 1e-5 * b.norm()
    assert shared[1] == 20 + 3 * 12 < plain[1]


def test_reward_falls_back_to_the_task_scorer():
    task = LettersTask()
    name, fn = resolve_reward(task, "")
    ex = task.examples("train", 2)
    assert name == "letters.score"
    assert fn(completions=["abcd", "AB12"], example=ex, answer=["x", "x"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="unknown reward"):
        resolve_reward(task, "no-such-reward")


# ---- rollouts --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_class,method_name", [
    (HFGenerateBackend, "lora"), (HFGenerateBackend, "prompt_tuning"), (HFGenerateBackend, "bitfit"),
    (FusedRolloutBackend, "lora"), (FusedRolloutBackend, "bitfit"), (FusedRolloutBackend, "vera"),
    (FusedRolloutBackend, "full")])
def test_rollout_log_probs_match_the_training_forward(backend_class, method_name):
    """The sampler's log-probs (merged weights, or virtual tokens in generate) agree with the
    training forward on the same tokens: rollout and log-prob pass see the same model."""
    lm = tiny_lm("tiny-random-qwen2" if method_name == "bitfit" else "tiny-random")
    method, model = adapt(lm, method_name)
    with torch.no_grad():  # move the adapter away from its identity init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    backend = backend_class(model, lm.tokenizer, method)
    prompts = [lm.tokenizer("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")["input_ids"],
               lm.tokenizer("<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n")["input_ids"]]
    ro = backend.generate(prompts, generations=3, max_new_tokens=10, temperature=0.9, seed=5)
    assert ro.completion_ids.shape[0] == 6 and len(ro.texts) == 6
    ids = torch.cat([ro.prompt_ids, ro.completion_ids], 1)
    mask = torch.cat([ro.prompt_mask, ro.completion_mask], 1)
    with torch.no_grad():
        logits = tail_logits(method, model, ids, mask, ro.completion_ids.shape[1] + 1)[:, :-1] / 0.9
        train = torch.log_softmax(logits, -1).gather(-1, ro.completion_ids[..., None]).squeeze(-1)
    gap = ((train - ro.logprobs).abs() * ro.completion_mask).max()
    assert gap < 1e-4, gap
    assert (ro.logprobs[ro.completion_mask == 1] < 0).all()


class OneShortPromptTask(LettersTask):
    """Every prompt long but one; only the short prompt's completions get unequal rewards, so the
    rows that carry gradient have less left padding than the rollout batch had."""

    def examples(self, split, n=None):
        xs = [Example(id=f"{split}-{i}", question="Letters." if i == 0 else
                      f"Write some lowercase letters for me, please, as many as you like ({i}).", answer="abc",
                      solution="abcdefghij") for i in range(4)]
        return xs[:n] if n else xs

    def score(self, completion, example):
        return super().score(completion, example) if example.id.endswith("-0") else 0.5


def test_prompt_tuning_trains_on_the_padding_it_was_sampled_with():
    """peft prepends virtual tokens before the left padding, so the padding's width changes what a
    prompt-tuned row computes: the log-prob pass must keep the rollout's padding, not trim it."""
    lm = tiny_lm()
    method, model = adapt(lm, "prompt_tuning")
    outcome = grpo(rollout_backend="hf").train(model=model, tokenizer=lm.tokenizer, method=method,
                                               task=OneShortPromptTask(), budget=budget(steps=2, batch_size=4),
                                               learning_rate=1e-2, seed=0)
    assert outcome.status == "success", outcome.error
    trained = [c for c in outcome.curves if c["trained_completions"]]
    assert trained and all(c["trained_completions"] <= 4 for c in trained)  # only the short prompt's group
    assert all(c["logprob_gap"] < 1e-4 for c in trained), [c["logprob_gap"] for c in trained]


@pytest.mark.parametrize("method_name,engine", [("lora", "fused"), ("prompt_tuning", "hf")])
def test_grpo_default_engine_is_fused_where_it_serves_and_hf_for_prompt_tuning(method_name, engine):
    lm = tiny_lm()
    method, model = adapt(lm, method_name)
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                           budget=budget(steps=2), learning_rate=1e-2, seed=0)
    assert outcome.status == "success", outcome.error
    assert [c["rollout_backend"] for c in outcome.curves] == [engine, engine]
    assert all(c["logprob_gap"] is None or c["logprob_gap"] < 1e-4 for c in outcome.curves)


# ---- learning signal -------------------------------------------------------------------------
@pytest.mark.parametrize("method_name,lr", [("lora", 1e-2), ("full", 1e-2)])
def test_grpo_raises_mean_reward(method_name, lr):
    lm = tiny_lm()
    method, model = adapt(lm, method_name)
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                           budget=budget(steps=8), learning_rate=lr, seed=0)
    assert outcome.status == "success", outcome.error
    rewards = [c["reward"] for c in outcome.curves]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:2]) / 2 + 0.3, rewards


def _fixed_batch_loss(lm, method, model, task):
    pairs = [encode_example(lm.tokenizer, task, ex, 96) for ex in task.examples("train", 4)]
    ids, attention, labels = pad_batch(pairs, 0, "cpu")
    with torch.no_grad():
        logits = method.forward_logits(model, ids, attention)[:, :-1]
        return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                       labels[:, 1:].reshape(-1), ignore_index=-100))


SFT_LR = {"full": 1e-2, "lora": 3e-2, "tinylora": 1e-1, "vera": 1e-1, "lora_xs": 1e-1, "bitfit": 3e-2,
          "prompt_tuning": 1e-1}


@pytest.mark.parametrize("method_name", METHODS)
def test_sft_lowers_loss_and_touches_only_the_method_parameters(method_name):
    lm = tiny_lm()
    task = LettersTask()
    method, model = adapt(lm, method_name)
    before = _fixed_batch_loss(lm, method, model, task)
    frozen, trained = frozen_state(model), trainable_state(model)
    outcome = SFTTrainer().train(model=model, tokenizer=lm.tokenizer, method=method, task=task,
                                 budget=budget(steps=6), learning_rate=SFT_LR[method_name], seed=0)
    assert outcome.status == "success", outcome.error
    after = _fixed_batch_loss(lm, method, model, task)
    assert after < before - 0.05, (before, after)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, trained[n]) for n, p in model.named_parameters() if n in trained)
    assert outcome.spent.optimizer_steps == 6 and outcome.spent.examples == 24
    assert [c["step"] for c in outcome.curves] == list(range(1, 7))


@pytest.mark.parametrize("method_name,model_name", [("lora", "tiny-random"), ("tinylora", "tiny-random"),
                                                    ("prompt_tuning", "tiny-random"), ("full", "tiny-random"),
                                                    ("bitfit", "tiny-random")])
def test_grpo_leaves_frozen_weights_bit_identical(method_name, model_name):
    """Rollouts fold the adapter into the base weights and back; nothing frozen may drift."""
    lm = tiny_lm(model_name)
    config = {"train_embeddings": False} if method_name == "full" else {}
    method, model = adapt(lm, method_name, **config)
    frozen, trained = frozen_state(model), trainable_state(model)
    assert frozen or method_name == "full"
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                           budget=budget(steps=3), learning_rate=3e-2, seed=1)
    assert outcome.status == "success", outcome.error
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, trained[n]) for n, p in model.named_parameters() if n in trained)
    assert all(c["logprob_gap"] is None or c["logprob_gap"] < 1e-4 for c in outcome.curves)


@pytest.mark.parametrize("method_name", ["lora", "prompt_tuning"])
def test_gradients_reach_exactly_the_method_parameters(method_name, monkeypatch):
    """At every optimizer step, the parameters holding a gradient are exactly the method's."""
    from pefthub.trainers import common

    lm = tiny_lm()
    method, model = adapt(lm, method_name)
    names = {id(p): n for n, p in model.named_parameters()}
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    seen: list[set[str]] = []
    original = common.grad_norm_and_clip

    def spy(params, max_norm):
        seen.append({names[id(p)] for p in model.parameters() if p.grad is not None})
        return original(params, max_norm)

    monkeypatch.setattr(common, "grad_norm_and_clip", spy)
    outcome = SFTTrainer().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                 budget=budget(steps=2), learning_rate=1e-2, seed=0)
    assert outcome.status == "success"
    assert seen == [expected, expected]
    assert all(("lora_" in n) if method_name == "lora" else ("prompt_encoder" in n) for n in expected)


# ---- determinism and accounting --------------------------------------------------------------
def _grpo_run(seed, method_name="lora"):
    lm = tiny_lm()
    method, model = adapt(lm, method_name)
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                           budget=budget(steps=3), learning_rate=1e-2, seed=seed)
    return outcome, trainable_state(model)


def test_same_seed_same_rollouts_and_parameters():
    a, pa = _grpo_run(3)
    b, pb = _grpo_run(3)
    c, _ = _grpo_run(4)
    assert [x["reward"] for x in a.curves] == [x["reward"] for x in b.curves]
    assert a.spent.tokens_generated == b.spent.tokens_generated
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert [x["reward"] for x in a.curves] != [x["reward"] for x in c.curves]


def test_grpo_records_what_it_spent():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    b = budget(steps=3, batch_size=2, generations=3)
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), budget=b,
                           learning_rate=1e-2, seed=0)
    s = outcome.spent
    assert (s.optimizer_steps, s.prompts, s.completions, s.examples) == (3, 6, 18, 0)
    assert 0 < s.tokens_generated <= 18 * 12
    assert sum(round(c["completion_length"] * 6) for c in outcome.curves) == s.tokens_generated
    assert s.tokens_trained <= s.tokens_generated
    assert s.seconds_generation > 0 and s.seconds_train > 0
    assert s.peak_rss_bytes > 50 * 2**20 and s.peak_accelerator_bytes is None
    assert s.train_flops > 2 * 1e5 * s.tokens_generated  # at least the rollouts' forward FLOPs
    assert s.zero_advantage_groups == sum(c["zero_advantage_groups"] for c in outcome.curves)
    for c in outcome.curves:
        assert {"step", "lr", "loss", "reward", "reward_std", "kl", "entropy", "logprob_gap", "grad_norm",
                "seconds"} <= set(c)


def test_zero_advantage_rows_are_skipped_without_changing_the_gradient():
    """Leaving zero-advantage rows out of the backward (beta = 0) gives the same loss and gradient
    as training on them, with or without micro-batching."""
    from pefthub.trainers.common import encode, render_prompt

    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    task = LettersTask()
    prompts = [encode(lm.tokenizer, render_prompt(lm.tokenizer, task.messages(ex))) for ex in task.examples("train", 3)]
    ro = HFGenerateBackend(model, lm.tokenizer, method).generate(prompts, generations=4, max_new_tokens=10,
                                                                 temperature=1.0, seed=0)
    advantages = torch.tensor([0.5, -1.0, 0.2, 0.3] + [0.0] * 4 + [-0.4, 0.0, 0.9, -0.5])
    grads, losses = [], []
    for skip, micro in ((True, 3), (False, 0), (False, 5)):
        trainer = grpo(micro_batch_size=micro)
        trainer.skip_zero_advantage_rows = skip
        model.zero_grad(set_to_none=True)
        stats = trainer._optimise(model, method, None, ro, advantages, "none", budget(max_new_tokens=10), 1, 1,
                                  Spent())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
        losses.append(stats["loss"])
        assert stats["rows"] == (7 if skip else 12)
    for other in grads[1:]:
        assert all(torch.allclose(grads[0][n], other[n], atol=1e-7, rtol=1e-5) for n in other)
    assert losses[0] == pytest.approx(losses[1], abs=1e-7) == pytest.approx(losses[2], abs=1e-7)
    assert max(float(g.abs().max()) for g in grads[0].values()) > 1e-4


def test_schedule_warmup_then_cosine():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    outcome = SFTTrainer().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                 budget=budget(steps=6, schedule="cosine", warmup_ratio=0.34), learning_rate=1e-2,
                                 seed=0)
    lrs = [c["lr"] for c in outcome.curves]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(5e-3) and lrs[2] == pytest.approx(1e-2)
    assert lrs[3] > lrs[4] > lrs[5] > 0


def test_kl_to_the_reference_is_logged_and_grows_from_zero():
    for name in ("lora", "full"):  # adapter disabled / frozen copy as reference
        lm = tiny_lm()
        method, model = adapt(lm, name)
        outcome = grpo(beta=0.1).train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                       budget=budget(steps=3), learning_rate=3e-2, seed=0)
        kls = [c["kl"] for c in outcome.curves]
        assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 1e-4, (name, kls)


def test_truncated_importance_sampling_path_runs_and_logs_the_gap():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    outcome = grpo(rollout_correction="tis", tis_cap=2.0).train(
        model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), budget=budget(steps=2),
        learning_rate=1e-2, seed=0)
    assert outcome.status == "success"
    assert all(c["logprob_gap"] is not None and c["logprob_gap"] < 1e-4 for c in outcome.curves)


def test_tis_with_an_engine_that_reports_no_log_probs_names_the_engine(monkeypatch):
    import dataclasses

    from pefthub.generation import rollout

    class NoLogprobs(HFGenerateBackend):
        name = "no-logprobs"
        exact = False

        def generate(self, *args, **kwargs):
            return dataclasses.replace(super().generate(*args, **kwargs), logprobs=None)

    monkeypatch.setitem(rollout.ROLLOUT_BACKENDS, "no-logprobs", NoLogprobs)
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    with pytest.raises(ConfigError, match=r"^rollout_correction 'tis' needs log-probs .* 'no-logprobs' reports none$"):
        grpo(rollout_backend="no-logprobs", rollout_correction="tis").train(
            model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), budget=budget(steps=1),
            learning_rate=1e-2, seed=0)


# ---- failures are recorded, not silent -------------------------------------------------------
def test_nan_loss_stops_the_run_with_a_failed_status():
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    with torch.no_grad():
        next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
    outcome = SFTTrainer().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                 budget=budget(steps=3), learning_rate=1e-2, seed=0)
    assert outcome.status == "failed" and outcome.error == "NaN loss at step 1"
    assert outcome.spent.optimizer_steps == 0 and outcome.curves == []


def test_a_reward_that_returns_nan_fails_the_run():
    class NanTask(LettersTask):
        def score(self, completion, example):
            return math.nan

    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=NanTask(), budget=budget(),
                           learning_rate=1e-2, seed=0)
    assert outcome.status == "failed" and "NaN" in outcome.error and "letters.score" in outcome.error


def test_out_of_memory_is_a_recorded_failure(monkeypatch):
    lm = tiny_lm()
    method, model = adapt(lm, "lora")

    def boom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 99999999999 bytes")

    for engine in (HFGenerateBackend, FusedRolloutBackend):
        monkeypatch.setattr(engine, "generate", boom)
    outcome = grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), budget=budget(),
                           learning_rate=1e-2, seed=0)
    assert outcome.status == "failed" and outcome.error.startswith("out of memory at step 1")
    assert isinstance(outcome.spent, Spent)


def test_other_exceptions_propagate_to_the_runner(monkeypatch):
    lm = tiny_lm()
    method, model = adapt(lm, "lora")
    for engine in (HFGenerateBackend, FusedRolloutBackend):
        monkeypatch.setattr(engine, "generate", lambda *a, **k: (_ for _ in ()).throw(ValueError("bug")))
    with pytest.raises(ValueError, match="bug"):
        grpo().train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(), budget=budget(),
                     learning_rate=1e-2, seed=0)
    assert TrainingFailure is not ValueError

"""Sharded (FSDP2) full fine-tuning with GRPO in 2 CPU processes with gloo, against one process.

A sharded GRPO step must be the single-process step. Sampling is made independent of how the
prompts are split by a rollout engine that samples each prompt's group with a seed of its own
(``hf`` generate or the ``fused`` sampler per prompt, on the ranks' gathered weights); the reward gives some groups equal rewards, so zero-advantage rows
are skipped and the ranks train different numbers of rows (the padded micro-batches). Per-step
losses, rewards, entropies and gradient norms agree to rtol 1e-4 (fp32; only the summation order and
the padding width of the prompts differ) and the final weights to atol 1e-5, while each rank holds
about half of every parameter.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch

from pefthub.errors import ConfigError
from pefthub.generation.rollout import (ROLLOUT_BACKENDS, FusedRolloutBackend, HFGenerateBackend, Rollouts,
                                        pad_token_id)
from pefthub.models import load_model
from pefthub.runner import resolve_config, run_experiment
from pefthub.trainers import sharded
from pefthub.trainers.grpo import GRPOTrainer

TASK = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
BUDGET = {"steps": 3, "batch_size": 4, "generations": 2, "max_new_tokens": 6, "max_seq_len": 96}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class PerPrompt:
    """A rollout engine run once per prompt, seeded by (step seed, prompt): a prompt's completions do
    not depend on which other prompts share the call, so one process and two ranks sample alike."""

    def generate(self, prompts, *, generations, max_new_tokens, temperature, seed):
        sample = super().generate
        parts = [sample(
            [p], generations=generations, max_new_tokens=max_new_tokens, temperature=temperature,
            seed=(seed + zlib.crc32(repr(p).encode())) % 2**63) for p in prompts]
        pad = pad_token_id(self.tokenizer)
        P = max(r.prompt_ids.shape[1] for r in parts)
        C = max(r.completion_ids.shape[1] for r in parts)

        def left(t, value):
            return torch.nn.functional.pad(t, (P - t.shape[1], 0), value=value)

        def right(t, value):
            return torch.nn.functional.pad(t, (0, C - t.shape[1]), value=value)

        return Rollouts(torch.cat([left(r.prompt_ids, pad) for r in parts]),
                        torch.cat([left(r.prompt_mask, 0) for r in parts]),
                        torch.cat([right(r.completion_ids, pad) for r in parts]),
                        torch.cat([right(r.completion_mask, 0) for r in parts]),
                        torch.cat([right(r.logprobs, 0.0) for r in parts]),
                        [t for r in parts for t in r.texts], sum(r.positions_computed for r in parts))


class PerPromptHF(PerPrompt, HFGenerateBackend):
    name = "per-prompt-hf"


class PerPromptFused(PerPrompt, FusedRolloutBackend):
    name = "per-prompt-fused"


for engine in (PerPromptHF, PerPromptFused):
    ROLLOUT_BACKENDS[engine.name] = engine


class RecordingGRPO(GRPOTrainer):
    """GRPO with a reward that varies within most groups (token ids mod 5) and is constant for a third of
    the prompts; in each rank it writes how much of the parameters it holds."""

    report_dir = ""

    @staticmethod
    def _rewards(reward_name, reward_fn, rollouts, batch, generations, step):
        ids = (rollouts.completion_ids * rollouts.completion_mask).sum(1)
        rewards = (ids % 5).float() / 4
        flat = torch.tensor([zlib.crc32(ex.id.encode()) % 3 == 0 for ex in batch for _ in range(generations)])
        return rewards.masked_fill(flat.to(rewards.device), 0.5)

    def run_steps(self, *, model, **kwargs):
        from torch.distributed.tensor import DTensor

        out = super().run_steps(model=model, **kwargs)
        if self.report_dir:
            params = list(model.parameters())
            report = {"all_dtensor": all(isinstance(p, DTensor) for p in params),
                      "param_local": sum(p.to_local().numel() for p in params),
                      "param_global": sum(p.numel() for p in params),
                      "halves": all(0.4 * p.numel() <= p.to_local().numel() <= 0.6 * p.numel()
                                    for p in params if p.shape[0] >= 8)}
            Path(self.report_dir, f"rank{self.shard.rank}.json").write_text(json.dumps(report))
        return out


def config(**overrides):
    base = {"model": "tiny-random", "task": dict(TASK), "trainer": "grpo",
            "trainer_options": {"micro_batch_size": 1, "rollout_backend": PerPromptHF.name},
            "method": "full", "method_config": {}, "params_target": None, "learning_rate": 1e-3, "seed": 0,
            "budget": dict(BUDGET), "eval": {"split": "test", "limit": 2, "max_new_tokens": 4, "backend": "hf"},
            "device": "cpu"}
    base.update(overrides)
    return resolve_config(base)


CURVES = ("loss", "reward", "reward_std", "grad_norm", "entropy", "completion_length", "clip_ratio")
COUNTS = ("zero_advantage_groups", "trained_completions", "capped_completions", "unanswered_completions")


@pytest.mark.parametrize("scale_rewards,engine", [("group", PerPromptHF), ("batch", PerPromptFused)])
def test_a_full_grpo_run_given_two_gpus_trains_sharded_as_one_process_does(tmp_path, monkeypatch, scale_rewards,
                                                                             engine):
    models = {}
    single_train, sharded_train = GRPOTrainer.train, sharded.train

    def train_in_one_process(self, **kwargs):
        models["one"] = kwargs["model"]
        return single_train(RecordingGRPO(self.options), **kwargs)

    def train_in_ranks(trainer, **kwargs):
        models["two"] = kwargs["model"]
        recording = RecordingGRPO(trainer.options)
        recording.report_dir = str(tmp_path)
        return sharded_train(recording, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "train", train_in_one_process)
    monkeypatch.setattr(sharded, "train", train_in_ranks)
    cfg = config(trainer_options={"micro_batch_size": 1, "rollout_backend": engine.name,
                                  "scale_rewards": scale_rewards})
    one = run_experiment(cfg, results_dir=tmp_path / "one")
    two = run_experiment(cfg, results_dir=tmp_path / "two", num_gpus=2)

    assert one["status"] == two["status"] == "success", two.get("error")
    assert two["training"]["sharded"]["ranks"] == 2 and {c["rollout_backend"] for c in two["curves"]} == {engine.name}
    c1, c2 = one["curves"], two["curves"]
    assert len(c1) == len(c2) == 3
    for name in COUNTS:
        assert [c[name] for c in c2] == [c[name] for c in c1], name
    # A step where an odd number of the 4 groups teach nothing: the 2 ranks train different numbers of
    # rows (the padded micro-batches); with hf's samples also a step where no row trains at all.
    assert any(c["zero_advantage_groups"] % 2 and c["trained_completions"] for c in c1)
    assert engine is not PerPromptHF or any(c["trained_completions"] == 0 for c in c1)

    def column(curves, name):
        return torch.tensor([float("nan") if c[name] is None else c[name] for c in curves], dtype=torch.float64)

    for name in CURVES:
        torch.testing.assert_close(column(c2, name), column(c1, name), rtol=1e-4, atol=1e-7, equal_nan=True,
                                   msg=name)
    assert c1[0]["grad_norm"] > 1.0  # clipping (max_grad_norm 1) acted on the sharded gradients
    for name in ("prompts", "prompts_trained", "completions", "tokens_generated", "tokens_trained",
                 "zero_advantage_groups", "optimizer_steps"):
        assert two["budget"]["spent"][name] == one["budget"]["spent"][name], name
    # The trained weights came back into the runner's model, equal to the single process's.
    before = load_model("tiny-random", seed=0).model.state_dict()
    trained, reference = models["two"].state_dict(), models["one"].state_dict()
    assert any(not torch.equal(reference[k], before[k]) for k in reference)
    for key in reference:
        torch.testing.assert_close(trained[key], reference[key], rtol=0, atol=1e-5, msg=key)

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    total = sum(p.numel() for p in models["one"].parameters())
    for report in reports:
        assert report["all_dtensor"] and report["halves"] and report["param_global"] == total
        assert 0.45 * total < report["param_local"] < 0.55 * total
    assert sum(r["param_local"] for r in reports) == total


@pytest.mark.parametrize("options,match", [
    ({"dynamic_sampling": True}, "does not support trainer_options.dynamic_sampling"),
    ({"beta": 0.04}, "does not support trainer_options.beta = 0.04"),
    ({"rollout_backend": "vllm"}, "does not support trainer_options.rollout_backend = 'vllm'"),
])
def test_grpo_options_sharding_does_not_serve_are_one_error_before_loading(tmp_path, options, match):
    with pytest.raises(ConfigError, match=match):
        run_experiment(config(trainer_options=options), results_dir=tmp_path, num_gpus=2)
    assert list(tmp_path.iterdir()) == []

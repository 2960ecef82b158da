"""Sharded full fine-tuning (torch FSDP2) in 2 CPU processes with gloo, against one process.

A sharded step must be the single-process step: per-step losses and gradient norms agree to
rtol 1e-4 (fp32; they differ only in summation order and the shared-opening forward the single
process uses) and the final weights to atol 1e-6, while each rank holds about half of every
parameter and of AdamW's state. The run through the runner shows the wiring: resources'
``num_gpus = 2`` trains sharded, evaluates on one device and writes the same result.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pefthub.errors import ConfigError
from pefthub.models import load_model
from pefthub.runner import resolve_config, run_experiment
from pefthub.trainers import common, sharded
from pefthub.trainers.sft import SFTTrainer

TASK = {"name": "chain_sum", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}
BUDGET = {"steps": 4, "batch_size": 4, "max_seq_len": 128}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny-model ops: a second thread only adds waiting on a busy machine
    yield
    torch.set_num_threads(threads)


class RecordingSFT(SFTTrainer):
    """SFT that, in each rank, writes how much of the parameters and of AdamW's state it holds."""

    report_dir = ""

    def run_steps(self, *, model, **kwargs):
        from torch.distributed.tensor import DTensor

        made = []
        original = common.make_optimizer
        common.make_optimizer = lambda *a, **k: made.append(original(*a, **k)) or made[-1]
        try:
            out = super().run_steps(model=model, **kwargs)
        finally:
            common.make_optimizer = original
        params = list(model.parameters())
        state = [v for s in made[0].state.values() for v in s.values() if isinstance(v, DTensor)]
        report = {"all_dtensor": all(isinstance(p, DTensor) for p in params),
                  "param_local": sum(p.to_local().numel() for p in params),
                  "param_global": sum(p.numel() for p in params),
                  "state_local": sum(v.to_local().numel() for v in state),
                  "state_global": sum(v.numel() for v in state)}
        Path(self.report_dir, f"rank{self.shard.rank}.json").write_text(json.dumps(report))
        return out


def config(**overrides):
    base = {"model": "tiny-random", "task": dict(TASK), "trainer": "sft",
            "trainer_options": {"micro_batch_size": 1},  # 2 micro-batches per rank, 4 in one process
            "method": "full", "method_config": {}, "params_target": None, "learning_rate": 1e-3, "seed": 0,
            "budget": dict(BUDGET), "eval": {"split": "test", "limit": 4, "max_new_tokens": 8, "backend": "hf"},
            "device": "cpu"}
    base.update(overrides)
    return resolve_config(base)


def test_a_full_sft_run_given_two_gpus_trains_sharded_as_one_process_does(tmp_path, monkeypatch):
    models = {}
    single_train, sharded_train = SFTTrainer.train, sharded.train

    def train_in_one_process(self, **kwargs):
        models["one"] = kwargs["model"]
        return single_train(self, **kwargs)

    def train_in_ranks(trainer, **kwargs):
        models["two"] = kwargs["model"]
        recording = RecordingSFT(trainer.options)
        recording.report_dir = str(tmp_path)
        return sharded_train(recording, **kwargs)

    monkeypatch.setattr(SFTTrainer, "train", train_in_one_process)
    monkeypatch.setattr(sharded, "train", train_in_ranks)
    cfg = config()
    one = run_experiment(cfg, results_dir=tmp_path / "one")
    events = []
    two = run_experiment(cfg, results_dir=tmp_path / "two", num_gpus=2, progress=events.append)

    assert one["status"] == two["status"] == "success", two.get("error")
    assert one["run_id"] == two["run_id"]  # the GPUs a run is given are not part of its identity
    assert [e["step"] for e in events if e["phase"] == "train"] == [1, 2, 3, 4]  # rank 0's progress
    for name in ("loss", "grad_norm"):
        torch.testing.assert_close(torch.tensor([c[name] for c in two["curves"]]),
                                   torch.tensor([c[name] for c in one["curves"]]), rtol=1e-4, atol=0, msg=name)
    assert one["curves"][0]["grad_norm"] > 1.0  # clipping (max_grad_norm 1) acted on the sharded gradients
    assert [c["tokens"] for c in two["curves"]] == [c["tokens"] for c in one["curves"]]
    assert two["training"]["sharded"]["ranks"] == 2 and two["training"]["sharded"]["backend"] == "gloo"
    assert two["training"]["sharded"]["rank0_peak_rss_bytes"] > 0 and "training" not in one
    spent = two["budget"]["spent"]
    assert spent["optimizer_steps"] == 4 and spent["examples"] == 16 and spent["train_flops"] > 0
    # The trained weights came back into the runner's model, equal to the single process's ...
    before = load_model("tiny-random", seed=0).model.state_dict()
    trained, reference = models["two"].state_dict(), models["one"].state_dict()
    assert any(not torch.equal(trained[k], before[k]) for k in trained)
    for key in reference:
        torch.testing.assert_close(trained[key], reference[key], rtol=0, atol=1e-6, msg=key)
    # ... and were evaluated as any run's are.
    scores = [{k: v for k, v in doc["evaluation"]["test"].items() if k != "seconds"} for doc in (one, two)]
    assert scores[0] == scores[1]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    total = reports[0]["param_global"]
    assert total == sum(p.numel() for p in models["one"].parameters())
    for report in reports:
        assert report["all_dtensor"]
        assert 0.45 * total < report["param_local"] < 0.55 * total  # half of every parameter (rows padded)
        assert report["state_global"] == 2 * total  # exp_avg and exp_avg_sq of every parameter ...
        assert report["state_local"] == 2 * report["param_local"]  # ... held as this rank's shard only
    assert sum(r["param_local"] for r in reports) == total


@pytest.mark.parametrize("change,gpus,gpus_here,match", [
    ({"trainer": "trl-sft", "trainer_options": {}}, 2, 0, "supports the sft and grpo trainers, not 'trl-sft'"),
    ({"budget": dict(BUDGET, batch_size=3)}, 2, 0, "batch_size = 3 must be a multiple of resources.num_gpus = 2"),
    ({}, 1.5, 0, "whole number of GPUs"),
    ({"dtype": "bfloat16"}, 2, 0, "on the CPU computes in float32"),
    ({"device": "auto"}, 2, 0, "sharded training on 2 GPUs, but torch sees none .*device 'cpu' shards"),
    ({"device": "cuda", "dtype": "bfloat16"}, 2, 1, "sharded training on 2 GPUs, but torch sees 1 on"),
    ({"device": "cuda:1", "dtype": "bfloat16"}, 2, 2, "names one GPU, but resources.num_gpus = 2 trains on GPUs 0 to 1"),
    ({"device": "cuda", "dtype": "float16"}, 2, 2, "bfloat16 or float32, not float16"),
])
def test_a_sharded_run_that_cannot_go_is_one_error_before_loading(tmp_path, monkeypatch, change, gpus, gpus_here,
                                                                    match):
    from pefthub import devices

    monkeypatch.setattr(devices, "cuda_count", lambda: gpus_here)
    raw = config(**change)
    with pytest.raises(ConfigError, match=match):
        run_experiment(raw, results_dir=tmp_path, num_gpus=gpus)
    assert list(tmp_path.iterdir()) == []


def test_only_full_fine_tuning_shards():
    from pefthub.devices import resolve

    cpu = resolve("cpu", "float32")
    assert sharded.ranks("full", "sft", 8, cpu, 4, "cpu") == 4
    assert sharded.ranks("lora", "sft", 8, cpu, 4) == 1  # an adapter trains on one device
    assert sharded.ranks("full", "sft", 8, cpu, 1) == 1
    shard = sharded.DataShard(rank=1, world_size=2)
    assert shard.take(list("abcdef")) == ["d", "e", "f"] and sharded.SINGLE.take([1, 2]) == [1, 2]

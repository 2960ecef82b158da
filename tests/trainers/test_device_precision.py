"""Device and precision as part of a run: bf16 compute with fp32 trainable parameters (on CPU here),
gradient checkpointing, and a GPU asked for where there is none refused before loading."""

from __future__ import annotations

import copy

import pytest
import torch

from pefthub import plugins
from pefthub.devices import Precision, keep_trainable_fp32, placement_keys, resolve
from pefthub.errors import ConfigError
from pefthub.trainers import common
from pefthub.trainers.grpo import GRPOOptions, GRPOTrainer
from pefthub.trainers.sft import SFTOptions, SFTTrainer

from test_trainers import LettersTask, budget, tiny_lm

#: bf16 keeps 8 bits of mantissa (relative rounding 2^-8 ≈ 0.4%) per op; on the same weights the tiny
#: model's loss and gradient norm stay within this of fp32's (measured: under 0.2%). Later steps are
#: not compared: an update smaller than bf16's resolution of the activations it adds to is rounded
#: away in the forward (the trainable parameters keep it in fp32), so trajectories drift apart.
BF16_LOSS_RTOL = 2e-2


def adapted(method_name: str, dtype: torch.dtype, **config):
    lm = tiny_lm()
    lm.model.to(dtype)
    cls = plugins.methods().get(method_name)
    method = cls(cls.config_class(**config))
    torch.manual_seed(0)  # the adapter's own initialisation, the same for both precisions
    return lm, method, keep_trainable_fp32(method.apply(lm.model))


def first_step(trainer, method_name: str, dtype: torch.dtype, **config) -> tuple[list[float], object]:
    """(loss, gradient norm) of a first step on the same starting weights, and the trained model."""
    lm, method, model = adapted(method_name, dtype, **config)
    with Precision(dtype).autocast(torch.device("cpu")):
        outcome = trainer.train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                budget=budget(steps=1, batch_size=2), learning_rate=1e-3, seed=0)
    assert outcome.status == "success", outcome.error
    return [outcome.curves[0]["loss"], outcome.curves[0]["grad_norm"]], model


@pytest.mark.parametrize("method_name,config", [("lora", {"r": 2}), ("tinylora", {"u": 13}), ("full", {}),
                                                ("bitfit", {}), ("vera", {"r": 4}), ("lora_xs", {"r": 2}),
                                                ("prompt_tuning", {"num_virtual_tokens": 4})])
def test_bf16_sft_gives_fp32_loss_within_tolerance_and_keeps_trainables_fp32(method_name, config):
    fp32, _ = first_step(SFTTrainer(SFTOptions()), method_name, torch.float32, **config)
    bf16, model = first_step(SFTTrainer(SFTOptions()), method_name, torch.bfloat16, **config)
    assert bf16 != fp32  # the bf16 run really computed in bf16
    assert bf16 == pytest.approx(fp32, rel=BF16_LOSS_RTOL)
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert all(p.dtype == torch.bfloat16 for p in frozen if p.is_floating_point())


def test_bf16_log_probs_are_taken_in_fp32_and_match_fp32():
    lm32, method32, m32 = adapted("lora", torch.float32, r=2)
    lm16, method16, m16 = adapted("lora", torch.bfloat16, r=2)
    ids = torch.tensor([[5, 9, 14, 33, 40, 41, 60, 7]], device="cpu")
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = common.token_logprobs(common.tail_logits(method32, m32, ids, mask, 8)[:, :-1], ids[:, 1:])
        with Precision(torch.bfloat16).autocast(torch.device("cpu")):
            logits = common.tail_logits(method16, m16, ids, mask, 8)[:, :-1]
            got = common.token_logprobs(logits, ids[:, 1:])
    assert logits.dtype == torch.bfloat16 and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=0.05), (got - ref).abs().max()


@pytest.mark.parametrize("method_name,config,backend", [("lora", {"r": 2}, "fused"), ("bitfit", {}, "fused"),
                                                        ("prompt_tuning", {"num_virtual_tokens": 4}, "hf"),
                                                        ("full", {}, "hf")])
def test_bf16_grpo_trains_with_fp32_trainables_and_finite_loss(method_name, config, backend):
    trainer = GRPOTrainer(GRPOOptions(rollout_backend=backend))
    (loss, grad_norm), model = first_step(trainer, method_name, torch.bfloat16, **config)
    assert torch.isfinite(torch.tensor([loss, grad_norm], device="cpu")).all()
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("trainer_cls,options_cls,extra", [(SFTTrainer, SFTOptions, {}),
                                                           (GRPOTrainer, GRPOOptions, {"rollout_backend": "hf"})])
def test_gradient_checkpointing_changes_memory_not_results(trainer_cls, options_cls, extra, monkeypatch):
    lm, method, model = adapted("lora", torch.float32, r=2)
    twin = copy.deepcopy(model)
    seen = []
    original = trainer_cls.run_steps

    def spy(self, **kw):
        seen.append(kw["model"].get_base_model().is_gradient_checkpointing)
        return original(self, **kw)

    monkeypatch.setattr(trainer_cls, "run_steps", spy)
    outcomes = []
    for m, on in ((model, False), (twin, True)):
        trainer = trainer_cls(options_cls(**extra, gradient_checkpointing=on))
        outcomes.append(trainer.train(model=m, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                      budget=budget(steps=2, batch_size=2), learning_rate=1e-2, seed=0))
    assert seen == [False, True] and not twin.get_base_model().is_gradient_checkpointing  # on for the run only
    plain, checkpointed = ([p["loss"] for p in o.curves] for o in outcomes)
    assert checkpointed == pytest.approx(plain, rel=1e-5, abs=1e-7)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_gradient_checkpointing_stays_out_of_default_configs():
    assert "gradient_checkpointing" not in SFTOptions().to_dict()
    assert "gradient_checkpointing" not in GRPOOptions().to_dict()
    assert SFTOptions(gradient_checkpointing=True).to_dict()["gradient_checkpointing"] is True
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        SFTOptions(gradient_checkpointing="yes")


def test_device_and_dtype_settings_are_checked_and_auto_is_the_cpu_here():
    assert resolve().device == "cpu" and resolve().dtype == "float32"
    assert resolve("cpu", "bfloat16").torch_dtype == torch.bfloat16
    assert placement_keys() == {} and placement_keys("cpu", "float16") == {"device": "cpu", "dtype": "float16"}
    for device in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError, match=f"config.device: '{device}' asked for, but torch sees no CUDA GPU"):
            resolve(device, where="config")
    with pytest.raises(ConfigError, match="device: must be auto, cpu, cuda or cuda:N"):
        resolve("gpu")
    with pytest.raises(ConfigError, match="dtype: must be one of"):
        resolve("cpu", "fp8")


def test_a_run_records_its_device_and_dtype_and_default_run_ids_do_not_change(tmp_path):
    from pefthub.results import run_id
    from pefthub.runner import default_task, resolve_config, run_experiment

    base = {"model": "tiny-random", "task": default_task(), "method": "lora", "method_config": {"r": 2}, "trainer": "sft",
            "budget": {"steps": 1, "batch_size": 2, "max_seq_len": 96}, "eval": {"limit": 2, "max_new_tokens": 4}}
    default = resolve_config(base)
    assert "device" not in default and "dtype" not in default
    assert run_id(resolve_config({**base, "device": "auto", "dtype": "auto"})) == run_id(default)
    bf16 = resolve_config({**base, "device": "cpu", "dtype": "bfloat16"})
    assert run_id(bf16) != run_id(default)
    doc = run_experiment(bf16, results_dir=tmp_path)
    assert doc["status"] == "success", doc["error"]
    assert doc["environment"]["compute"] == {"device": "cpu", "dtype": "bfloat16", "gpu": None}


def test_train_with_a_gpu_where_there_is_none_is_one_line_before_loading(monkeypatch, capsys):
    from pefthub import models
    from pefthub.cli import main

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    assert main(["train", "--device", "cuda", "--model", "tiny-random"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --device: 'cuda' asked for, but torch sees no CUDA GPU on this machine (use --device "
                   "cpu, or install a CUDA build of torch where a GPU is present)"]

"""Exporting a method-adapted model as the plain checkpoint vLLM serves (no vLLM needed): names,
merged values, a reload through transformers, and the refusals (prompt tuning, biases an
architecture cannot declare, unmerged adapters)."""

from __future__ import annotations

import pytest
import torch

from pefthub import plugins
from pefthub.generation import vllm_engine
from pefthub.errors import ConfigError, UnsupportedError
from pefthub.models import load_model

MERGEABLE = ("tinylora", "lora", "lora_xs", "vera", "bitfit", "full")


def adapted(method_name, model_name="tiny-random"):
    lm = load_model(model_name, seed=0)
    cls = plugins.methods().get(method_name)
    method = cls(cls.config_class())
    model = method.apply(lm.model)
    torch.manual_seed(1)
    with torch.no_grad():  # move every trainable tensor away from its identity initialisation
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return lm, method, model


@pytest.mark.parametrize("method_name", MERGEABLE)
def test_export_is_the_merged_model_under_base_names(method_name, tmp_path):
    from transformers import AutoModelForCausalLM

    lm, method, model = adapted(method_name)
    plain = load_model("tiny-random", seed=0).model
    expected_keys = set(plain.state_dict()) - {"lm_head.weight"}  # tied: stored once
    with vllm_engine.merged_state(model, method) as state:
        keys = set(state)
        if method_name == "bitfit":  # added biases, declared by the config flags BitFit sets
            assert {k for k in keys if k.endswith(".bias")} and keys > expected_keys
        else:
            assert keys == expected_keys
    vllm_engine.save_merged_checkpoint(model, lm.tokenizer, tmp_path, method=method)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    ids = torch.tensor([[5, 40, 41, 42, 43, 44, 9]])
    with torch.inference_mode():
        with method.merged(model) as merged:
            expected = method.forward_logits(merged, ids)
        got = reloaded(input_ids=ids).logits
        base = plain(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert (got - base).abs().max() > 1e-3  # the adapter is in the checkpoint, not dropped


def test_partial_bitfit_biases_are_completed_with_zeros():
    lm = load_model("tiny-random", seed=0)
    cls = plugins.methods().get("bitfit")
    method = cls(cls.config_class(target_modules=["q_proj"]))
    model = method.apply(lm.model)
    assert model.config.attention_bias  # q_proj alone sets the flag, which covers k/v/o too
    with vllm_engine.merged_state(model, method) as state:
        assert torch.count_nonzero(state["model.layers.0.self_attn.k_proj.bias"]) == 0
        assert state["model.layers.0.self_attn.q_proj.bias"] is not None


def test_biases_an_architecture_cannot_declare_are_refused():
    _, method, model = adapted("bitfit", "tiny-random-qwen2")  # qwen2 has no o_proj/MLP bias flags
    with pytest.raises(UnsupportedError, match="no place in a qwen2 checkpoint"):
        with vllm_engine.merged_state(model, method):
            pass


def test_prompt_tuning_and_unmerged_adapters_are_refused():
    cls = plugins.methods().get("prompt_tuning")
    method = cls(cls.config_class(num_virtual_tokens=2))
    with pytest.raises(UnsupportedError, match="cannot run on vLLM"):
        vllm_engine.check_servable(method)
    _, _, model = adapted("lora")
    with pytest.raises(UnsupportedError, match="unmerged adapter"):
        vllm_engine.hf_state_dict(model)  # not inside method.merged: the adapter would be lost


def test_engine_options_are_validated_naming_the_field():
    with pytest.raises(ConfigError, match=r"vllm.gpu_memory_utilization"):
        vllm_engine.EngineOptions(gpu_memory_utilization=1.5)
    with pytest.raises(ConfigError, match=r"vllm.dtype"):
        vllm_engine.EngineOptions(dtype="int8")
    cpu = vllm_engine.EngineOptions(device="cpu")
    assert (cpu.resolved_dtype(), cpu.resolved_enforce_eager()) == ("float32", True)
    gpu = vllm_engine.EngineOptions(device="cuda")
    assert (gpu.resolved_dtype(), gpu.resolved_enforce_eager()) == ("bfloat16", False)


def test_cpu_kv_cache_holds_at_least_one_full_sequence(tmp_path):
    lm = load_model("tiny-random")
    lm.model.config.architectures = ["LlamaForCausalLM"]
    lm.model.config.save_pretrained(tmp_path)
    small = vllm_engine.engine_kwargs(tmp_path, vllm_engine.EngineOptions(device="cpu", kv_cache_gib=1e-6))
    per_token = vllm_engine.kv_bytes_per_token(lm.model.config, "float32")
    assert per_token == 2 * 2 * 2 * 16 * 4  # K and V × layers × kv heads × head dim × fp32
    assert small["kv_cache_memory_bytes"] == per_token * small["max_model_len"]
    assert small["dtype"] == "float32" and small["logprobs_mode"] == "processed_logprobs"
    gpu = vllm_engine.engine_kwargs(tmp_path, vllm_engine.EngineOptions(device="cuda"))
    assert "kv_cache_memory_bytes" not in gpu and gpu["gpu_memory_utilization"] == 0.3

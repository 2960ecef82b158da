"""`pefthub plan`'s GPU memory and GPU-hours (pefthub/memory_plan.py) against numbers computed by
hand for the shipped Qwen2.5-7B-Instruct architecture, and the paper suite planned offline."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pefthub import memory_plan as mp
from pefthub.cli import main
from pefthub.models import load_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "benchmarks" / "paper-gsm8k"

# Qwen2.5-7B-Instruct: h 3584, 28 layers, 28 heads of 128, 4 KV heads, MLP 18944, vocab 152064, untied.
H, L, KV_D, I, V = 3584, 28, 4 * 128, 18944, 152064
EMBED = V * H                                                   # 544,997,376
LAYER = H * H + H + 2 * (H * KV_D + KV_D) + H * H + 3 * H * I + 2 * H
TOTAL = L * LAYER + H + 2 * EMBED                               # 7,615,616,512


@pytest.fixture(scope="module")
def arch():
    return mp.Architecture.from_config(load_config("qwen2.5-7b-instruct"))


def paper_config(method="tinylora", trainer="grpo", **options):
    budget = {"steps": 342, "batch_size": 64, "generations": 4, "max_new_tokens": 4096, "max_seq_len": 4608}
    rollouts = {"rollout_backend": "vllm", "beta": 0.0} if trainer == "grpo" else {}
    return {"model": "Qwen/Qwen2.5-7B-Instruct", "method": method, "trainer": trainer,
            "trainer_options": {**rollouts, "micro_batch_size": 1, **options},
            "budget": budget, "eval": {"limit": 1319, "validation_limit": 200, "max_new_tokens": 4096,
                                       "backend": "vllm"}}


def test_architecture_counts_match_the_published_size_and_the_meta_model(arch):
    from pefthub.models import meta_model
    from pefthub.trainers.budget import forward_params

    assert TOTAL == 7_615_616_512  # the 7.61B Qwen publishes
    assert arch.params == TOTAL and arch.layer_params == LAYER
    assert arch.forward_params == TOTAL - EMBED == 7_070_619_136
    for name in ("qwen2.5-7b-instruct", "tiny-random", "tiny-random-qwen2"):
        model = meta_model(name)
        small = mp.Architecture.from_config(model.config)
        assert small.params == sum(p.numel() for p in model.parameters()), name
        assert small.forward_params == forward_params(model), name


# bf16 activations per token (pefthub/memory_plan.py): each layer's two norms, attention, MLP ...
LAYER_ACT = 2 * ((4 + 2 * 2) * H + 4) + (2 * H + 2 * KV_D) * 2 + 4 * 28 + 4 * I * 2          # 225,400
# ... plus the input ids, the rotary cos/sin and the final norm; checkpointed: layer inputs + one layer.
ACT = 8 + 2 * 128 * 2 + L * LAYER_ACT + (4 + 2 * 2) * H + 4                               # 6,340,396
ACT_CKPT = 8 + 2 * 128 * 2 + L * H * 2 + LAYER_ACT + (4 + 2 * 2) * H + 4                  # 455,300
LOGITS = V * (2 + 4 + 4)                                                                   # 1,520,640


def test_per_token_figures_by_hand(arch):
    assert arch.kv_bytes_per_token(2) == 2 * L * KV_D * 2 == 57_344
    assert arch.layer_activation_bytes(2) == LAYER_ACT == 225_400
    assert arch.activation_bytes_per_token(2, checkpointing=False) == ACT == 6_340_396
    assert arch.activation_bytes_per_token(2, checkpointing=True) == ACT_CKPT == 455_300
    assert arch.logits_bytes_per_token(2) == LOGITS == 1_520_640
    assert arch.logits_bytes_per_token(4) == V * (4 + 4)


def test_tinylora_grpo_on_one_gpu_by_hand(arch):
    est = mp.estimate_run(arch, paper_config(), algorithm="grpo", trainable_params=13)
    tokens = 1 * 4608
    assert est.weights == (TOTAL - 13) * 2                          # bf16 frozen weights
    assert est.trainable_state == 13 * (4 + 4 + 8)                  # fp32 master, grad, AdamW moments
    assert est.activations == tokens * ACT
    assert est.logits == tokens * LOGITS
    assert est.vllm_reserved == 0.3 * 80e9
    assert est.vllm_kv_tokens == int((0.3 * 80e9 - TOTAL * 2) // 57_344)
    assert est.vllm_needs_tokens == 32768  # the eval engine's default: the model's whole context
    assert est.rollout_rows == 256 and est.rollouts_at_once == est.vllm_kv_tokens // 4608 == 33
    assert est.total == pytest.approx(75_454_887_094, abs=1)        # ≈ 75.5 GB: fits 80 GB
    assert est.fits and mp.fix_for(arch, paper_config(), est, algorithm="grpo", trainable_params=13) is None
    # FLOPs at the caps: 342 steps × 64 prompts × 4 completions × 4608 tokens trained at 4N + 2·13;
    # generated: each prompt's 512-token room once, 4096 new tokens per completion, and evaluation.
    n = TOTAL - EMBED
    trained = 342 * 256 * 4608
    generated = 342 * 64 * 512 + 342 * 256 * 4096 + (1319 + 200) * (512 + 4096)
    assert est.train_flops == (4 * n + 2 * 13) * trained
    assert est.generation_flops == 2 * n * generated
    seconds = est.train_flops / (989e12 * 0.35) + est.generation_flops / (989e12 * 0.10)
    assert est.gpu_hours == pytest.approx(seconds / 3600)
    assert 20 < est.gpu_hours < 30


def test_full_fine_tuning_needs_fsdp_on_80gb(arch):
    config = paper_config(method="full", trainer="sft")
    kwargs = dict(algorithm="sft", trainable_params=TOTAL)
    one = mp.estimate_run(arch, config, **kwargs)
    assert one.trainable_state == TOTAL * 16 == 121_849_864_192     # ≈122 GB: no single 80 GB GPU
    assert one.weights == 0 and not one.fits and not one.sharded
    # 2 GPUs: 60.9 GB of state + 2 × 545M × 2 B gathered + training's 36.2 GB at micro-batch 1 =
    # 99.3 GB; checkpointed, training needs 9.1 GB and the evaluation engine's 24 GB is larger: 87.1 GB.
    # 4 GPUs: 30.5 + 2.2 + 36.2 = 68.9 GB.
    assert mp.fix_for(arch, config, one, **kwargs) == "set resources.num_gpus >= 4 (full fine-tuning shards with FSDP)"
    four = mp.estimate_run(arch, config, **kwargs, num_gpus=4)
    assert four.sharded and four.trainable_state == TOTAL * 16 / 4 and four.shard_buffer == 2 * EMBED * 2
    assert four.total == pytest.approx(TOTAL * 4 + 2 * EMBED * 2 + 4608 * (ACT + LOGITS))
    assert four.fits and four.total < 69e9


def test_full_grpo_shards_with_rollouts_on_the_gathered_weights(arch):
    """Sharded GRPO rolls out on each rank's gathered weights, not on vLLM (pefthub/trainers/sharded.py):
    the paper's full/grpo row (vLLM rollouts, 8 GPUs) would be refused and needs 155 GB on one GPU;
    with the fused engine it shards over the 8 and fits."""
    config = paper_config(method="full")
    kwargs = dict(algorithm="grpo", trainable_params=TOTAL, num_gpus=8)
    est = mp.estimate_run(arch, config, **kwargs)
    assert est.refused and not est.sharded and est.num_gpus == 1 and not est.fits
    assert "with GRPO does not support trainer_options.rollout_backend = 'vllm'" in est.refused
    assert mp.fix_for(arch, config, est, **kwargs) == (
        "set trainer_options.grpo.rollout_backend = 'fused' (sharded GRPO does not roll out on vLLM)")
    fused = mp.estimate_run(arch, paper_config(method="full", rollout_backend="fused"), **kwargs)
    assert fused.sharded and fused.refused is None and fused.trainable_state == TOTAL * 16 / 8
    # The rollout holds the whole bf16 weights and the KV cache of its 256 / 8 completions at 4608 tokens.
    kv = 2 * L * KV_D * 2
    assert fused.rollout_gather == TOTAL * 2 + 32 * 4608 * kv            # ≈ 23.7 GB
    assert fused.total == pytest.approx(TOTAL * 2 + 2 * EMBED * 2 + max(4608 * (ACT + LOGITS), fused.rollout_gather,
                                                                        0.3 * 80e9))
    assert fused.fits and fused.total < 54e9
    # SFT's rows never gather for rollouts.
    assert mp.estimate_run(arch, paper_config(method="full", trainer="sft"), algorithm="sft", trainable_params=TOTAL,
                           num_gpus=8).rollout_gather == 0


def test_fixes_for_activations_and_vllm(arch):
    config = paper_config(micro_batch_size=8)
    kwargs = dict(algorithm="grpo", trainable_params=13)
    est = mp.estimate_run(arch, config, **kwargs)
    assert est.micro_batch == 8 and not est.fits
    assert mp.fix_for(arch, config, est, **kwargs) == "set trainer_options.grpo.micro_batch_size <= 1"
    checkpointed = mp.estimate_run(arch, paper_config(micro_batch_size=8, gradient_checkpointing=True), **kwargs)
    assert checkpointed.activations == 8 * 4608 * ACT_CKPT
    # A vLLM share too small for its weights and one sequence is named with the share that holds them.
    small = {**paper_config(), "vllm": {"gpu_memory_utilization": 0.1, "max_model_len": 4608}}
    est = mp.estimate_run(arch, small, **kwargs)
    assert est.vllm_needs_tokens == 4608 and est.vllm_kv_tokens == 0 and not est.fits
    share = -(-100 * (TOTAL * 2 + 4608 * 57_344) // int(80e9)) / 100   # 0.2 (rounded up to a percent)
    assert mp.fix_for(arch, small, est, **kwargs) == f"set vllm.gpu_memory_utilization >= {share:g}"


def test_base_row_counts_the_larger_phase(arch):
    config = {**paper_config(), "method": "base", "trainer": "none", "trainer_options": {}}
    est = mp.estimate_run(arch, config, algorithm="none", trainable_params=0)
    assert est.activations == est.train_flops == 0 and est.micro_batch == 0
    assert est.total == TOTAL * 2 + 0.3 * 80e9
    assert est.generation_flops == 2 * (TOTAL - EMBED) * (1319 + 200) * (512 + 4096)


def test_plan_paper_suite_offline_without_touching_the_network(monkeypatch, capsys):
    """The paper suite names the hub id; its plan resolves the shipped architecture without asking
    the hub, with or without HF_HUB_OFFLINE."""
    def no_network(*args, **kwargs):
        raise AssertionError("pefthub plan opened a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    for offline in ("1", None):
        if offline:
            monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        else:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        assert main(["plan", str(PAPER), "--json", "--gpu-memory-gb", "80"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["model"] == "Qwen/Qwen2.5-7B-Instruct"
        gpu = plan["gpu"]
        assert gpu["weights_present"] is False and "hf download Qwen/Qwen2.5-7B-Instruct" in gpu["weights"]
        rows = {r["row"]: r for r in gpu["rows"]}
        assert len(rows) == 13 and sum(r["runs"] for r in rows.values()) == plan["runs"] == 253
        assert [r for r, v in rows.items() if not v["fits"]] == []  # every row runs as written on 80 GB GPUs
        for row in ("full/sft", "full/grpo"):  # ~122 GB of state: sharded over the row's 8 GPUs
            assert rows[row]["sharded"] and rows[row]["num_gpus"] == 8 and rows[row]["fits"]
        assert gpu["gpu_hours"] == pytest.approx(sum(r["runs"] * r["gpu_hours"] for r in rows.values()))


def test_plan_flags_a_run_that_does_not_fit(capsys):
    assert main(["plan", str(PAPER), "--gpu-memory-gb", "40"]) == 0
    out = capsys.readouterr().out
    assert "GPU plan" in out and "tinylora@13/grpo does not fit" in out and "set " in out


def test_the_generated_plan_page_is_current(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["plan", "benchmarks/paper-gsm8k", "--markdown"]) == 0
    assert (REPO / "docs" / "gpu-plan.md").read_text() == capsys.readouterr().out, \
        "docs/gpu-plan.md is stale: pefthub plan benchmarks/paper-gsm8k --markdown > docs/gpu-plan.md"


def test_gpu_flags_are_checked(capsys):
    assert main(["plan", str(PAPER), "--gpu-memory-gb", "0"]) != 0
    assert capsys.readouterr().err.strip() == "error: --gpu-memory-gb must be > 0 (got 0)"
    assert main(["plan", "--model", "tiny-random", "--gpu-tflops", "100"]) != 0
    assert "applies to a suite" in capsys.readouterr().err


def test_activation_formula_matches_what_autograd_saves():
    """The bytes autograd keeps for backward through a Qwen2 decoder stack in bf16 (SDPA attention,
    every weight trainable), per extra token of one sequence, are the plan's ``activation_bytes_per_token``:
    measured as the difference between two lengths, which removes what does not grow with tokens."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, max_position_embeddings=512)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(torch.bfloat16).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved_bytes(seq: int, checkpointing: bool = False) -> int:
        kept: dict[int, int] = {}

        def pack(t):
            storage = t.untyped_storage()
            if storage.data_ptr() not in weights:
                kept[storage.data_ptr()] = storage.nbytes()
            return t

        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                ids = torch.randint(0, 512, (1, seq))
                model.model(input_ids=ids, use_cache=False).last_hidden_state.float().sum().backward()
        finally:
            model.gradient_checkpointing_disable()
        return sum(kept.values())

    arch = mp.Architecture.from_config(config)
    grown = saved_bytes(96) - saved_bytes(64)
    # The stack's final norm output feeds the output head, which keeps it; here nothing does.
    head_input = arch.hidden * 2
    assert grown == (arch.activation_bytes_per_token(2, checkpointing=False) - head_input) * 32
    # Checkpointed, the forward keeps each layer's input; the layer recomputed during backward and the
    # rotary cos/sin (held by the checkpoint as arguments, not through saved-tensor hooks) are not seen.
    grown = saved_bytes(96, checkpointing=True) - saved_bytes(64, checkpointing=True)
    unseen = arch.layer_activation_bytes(2) + head_input + 2 * arch.head_dim * 2
    assert grown == (arch.activation_bytes_per_token(2, checkpointing=True) - unseen) * 32

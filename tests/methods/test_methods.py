"""Method-specific promises: exact counts, budgets, configs, merging, and clear errors."""

import pytest
import torch

from pefthub import plugins
from pefthub.errors import ConfigError, UnsupportedError
from pefthub.models import load_model, meta_model
from pefthub.planning import parse_overrides, plan_method, resolve_method


def method(name):
    return plugins.methods().get(name)


def test_tinylora_13_parameters_on_qwen25_7b_seven_modules():
    plan = plan_method("qwen2.5-7b-instruct", "tinylora", overrides={"u": 13, "weight_tying": 1.0})
    assert plan.trainable_params == 13
    assert plan.config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert plan.total_params == 7_615_616_512
    # frozen SVD factors and projections dominate the saved adapter
    assert plan.adapter_bytes["trainable_fp32"] == 52
    assert plan.adapter_bytes["saved_fp32"] > 1_000_000


@pytest.mark.parametrize("params", [1, 13, 120, 700])
def test_tinylora_hits_budgets_exactly(params):
    m, count = resolve_method("tinylora", meta_model("smollm2-135m-instruct"), params=params)
    assert count == params
    groups = max(1, round(210 * (1 - m.config.weight_tying)))
    assert groups * m.config.u == params


def test_tinylora_count_is_groups_times_u():
    model = meta_model("smollm2-135m-instruct")  # 30 layers x 7 modules = 210 targets
    cfg = method("tinylora").config_class(u=4, weight_tying=0.0)
    assert method("tinylora").count_params(model, cfg) == 210 * 4


def test_lora_xs_count_is_modules_times_r_squared():
    model = meta_model("smollm2-135m-instruct")
    for r in (1, 2, 5):
        cfg = method("lora_xs").config_class(r=r)
        assert method("lora_xs").count_params(model, cfg) == 210 * r * r
    m, count = resolve_method("lora_xs", model, params=13)
    assert count == 13 and m.config.r == 1 and m.config.n_modules == 13


def test_prompt_tuning_budget_exact_on_multiples_of_hidden():
    m, count = resolve_method("prompt_tuning", meta_model("smollm2-135m-instruct"), params=576 * 5)
    assert count == 2880 and m.config.num_virtual_tokens == 5


def test_nearest_budget_is_reported_not_faked():
    m, count = resolve_method("lora", meta_model("smollm2-135m-instruct"), params=1_000_000)
    assert count == 915_840 and m.config.r == 3  # nearest rank; the real count is what is reported


@pytest.mark.parametrize("name, params", [("lora", 13), ("vera", 13), ("full", 1000), ("bitfit", 10)])
def test_impossible_budget_is_a_clear_error(name, params):
    with pytest.raises(ConfigError, match=rf"impossible budget: method '{name}'"):
        resolve_method(name, meta_model("smollm2-135m-instruct"), params=params)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_non_positive_budget_rejected(bad):
    with pytest.raises(ConfigError, match="params budget"):
        resolve_method("tinylora", meta_model("tiny-random"), params=bad)


@pytest.mark.parametrize("name, fields, match", [
    ("tinylora", {"u": 0}, r"TinyLoraMethodConfig.u: must be a positive integer \(got 0\)"),
    ("tinylora", {"weight_tying": 1.5}, r"weight_tying: must be a number in \[0, 1\] \(got 1.5\)"),
    ("lora", {"r": -1}, r"LoraMethodConfig.r"),
    ("lora", {"rank": 4}, r"unknown field\(s\) rank"),
    ("prompt_tuning", {"init": "text"}, r"init: must be one of"),
    ("lora_xs", {"n_modules": 0}, r"n_modules"),
    ("lora", {"target_modules": []}, r"^LoraMethodConfig.target_modules: must be a non-empty list of strings \(got \[\]\)$"),
    ("bitfit", {"add_missing_biases": "yes"}, r"^BitFitMethodConfig.add_missing_biases: must be true or false"),
    ("lora", {"alpha": 16}, None),  # an integer for a float field is that float (one setting, one hash)
])
def test_invalid_configs_name_the_field(name, fields, match):
    if match is None:
        from pefthub.results import canonical_json

        assert canonical_json(method(name).config_class.from_dict(fields).to_dict()) == \
            canonical_json(method(name).config_class.from_dict({k: float(v) for k, v in fields.items()}).to_dict())
        return
    with pytest.raises(ConfigError, match=match):
        method(name).config_class.from_dict(fields)


def test_unknown_method_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown method 'dorra' \(known: bitfit, full, lora"):
        plugins.methods().get("dorra")


def test_bitfit_adds_zero_biases_and_refuses_to_train_nothing():
    lm = load_model("tiny-random")
    assert all(m.bias is None for m in lm.model.modules() if isinstance(m, torch.nn.Linear))
    cfg = method("bitfit").config_class(add_missing_biases=False)
    with pytest.raises(UnsupportedError, match="nothing to train"):
        method("bitfit")(cfg).apply(lm.model)
    model = method("bitfit")().apply(load_model("tiny-random").model)
    assert model.config.attention_bias and model.config.mlp_bias
    biases = [m.bias for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None]
    assert biases and all(torch.equal(b, torch.zeros_like(b)) for b in biases)


def test_bitfit_trains_existing_biases_where_the_model_has_them():
    lm = load_model("tiny-random-qwen2")
    q_bias = lm.model.model.layers[0].self_attn.q_proj.bias.detach().clone()
    model = method("bitfit")().apply(lm.model)
    live = model.model.layers[0].self_attn.q_proj.bias
    assert live.requires_grad and torch.equal(live.detach(), q_bias)  # kept, not re-zeroed


def test_repeated_merges_leave_frozen_weights_bit_identical():
    lm = load_model("tiny-random")
    m = method("tinylora")(method("tinylora").config_class(u=3))
    model = m.apply(lm.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.fill_(0.3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(3, 100, (1, 8))
    for _ in range(50):
        with m.merged(model) as merged_model:
            merged_model(input_ids=ids)
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_merged_generation_matches_unmerged():
    lm = load_model("tiny-random")
    m = method("lora")()
    model = m.apply(lm.model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ids = torch.tensor([[5, 6, 7, 8]])
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    plain = model.generate(input_ids=ids, **kwargs)
    with m.merged(model) as merged_model:
        merged = merged_model.generate(input_ids=ids, **kwargs)
    assert torch.equal(plain, merged)


def test_prompt_tuning_logits_align_with_input_ids():
    lm = load_model("tiny-random")
    m = method("prompt_tuning")(method("prompt_tuning").config_class(num_virtual_tokens=3))
    model = m.apply(lm.model)
    ids = torch.randint(3, 100, (2, 7))
    assert m.forward_logits(model, ids, torch.ones_like(ids)).shape[:2] == (2, 7)


def test_parse_overrides():
    assert parse_overrides(["u=13", "weight_tying=1.0", "target_modules=q_proj,v_proj", "init=random"]) == {
        "u": 13, "weight_tying": 1.0, "target_modules": ["q_proj", "v_proj"], "init": "random"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["u13"])


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="VeRA's fast merge needs oneDNN")
def test_vera_fast_merge_equals_peft_delta_and_bypasses_it():
    lm = load_model("tiny-random")
    m = method("vera")(method("vera").config_class(r=16))
    model = m.apply(lm.model)
    torch.manual_seed(0)
    with torch.no_grad():  # peft starts λ_b at zero (Δ = 0): give both vectors values
        for n, p in model.named_parameters():
            if "vera_lambda" in n:
                p.uniform_(-1, 1)
    layers = [mod for mod in model.modules() if hasattr(mod, "vera_lambda_d")]
    assert layers
    for layer in layers:
        weight = layer.get_base_layer().weight.data
        expected = weight + layer.get_delta_weight("default")
        layer.get_delta_weight = None  # the fast path must not fall back on peft's product
        fast = m.merge_weight(layer, ["default"], weight)
        del layer.get_delta_weight
        assert fast is not weight and fast.shape == weight.shape
        assert torch.allclose(fast, expected, rtol=1e-5, atol=1e-6), (fast - expected).abs().max()
        assert not torch.equal(fast, weight)

"""Helpers for plugin authors' tests.

``check_method(MyMethod)`` checks the whole method contract on a tiny random model in one call and
raises ``AssertionError`` naming the first broken promise::

    from pefthub.testing import check_method

    def test_my_method():
        check_method(MyMethod, MyMethod.config_class(rank=4))
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pefthub.errors import UnsupportedError
from pefthub.methods import Method, MethodConfig

#: Merged and unmerged forwards differ only by fp32 rounding of W + ΔW.
MERGE_ATOL = 1e-4


@dataclass
class MethodCheckReport:
    method: str
    model: str
    trainable_params: int
    adapter_bytes: dict
    adapter_file_bytes: int
    checks: list[str] = field(default_factory=list)


def _fresh(model_name: str, seed: int):
    from pefthub.models import load_model

    return load_model(model_name, seed=seed)


def _logits(method: Method, model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return method.forward_logits(model, ids, torch.ones_like(ids)).float()


def _file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pt"))


def check_method(method_cls: type[Method], config: MethodConfig | None = None, *,
                 model: str = "tiny-random", seed: int = 0) -> MethodCheckReport:
    """Check ``method_cls`` against the pefthub method contract on a tiny random model.

    Checks: the trainable count reported equals the ``requires_grad`` numel and is positive; only
    the method's parameters train; identity at initialisation when claimed; one optimizer step
    changes the output and leaves the base weights bit-identical (unless the method trains them);
    save/load reproduces the logits; merged logits equal unmerged ones within fp32 tolerance and
    the base weights are restored bit-for-bit; adapter bytes agree with the file on disk; a budget
    equal to the default count is met (exactly when the method claims exact budgets); unsupported
    trainers raise :class:`UnsupportedError`.
    """
    name = getattr(method_cls, "name", method_cls.__name__)
    method = method_cls(config)
    checks: list[str] = []
    torch.manual_seed(seed)

    loaded = _fresh(model, seed)
    base = loaded.model
    ids = torch.randint(3, len(loaded.tokenizer), (2, 10), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits.float()
    base_weights = {n: p.detach().clone() for n, p in base.named_parameters() if n.endswith("weight")}

    adapted = method.apply(base)
    count = method.trainable_parameters(adapted)
    actual = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert count == actual, f"{name}: trainable_parameters() says {count}, requires_grad numel is {actual}"
    assert count > 0, f"{name}: nothing to train (0 trainable parameters)"
    checks.append("count")

    trains_base = getattr(method_cls, "trains_base_weights", False)
    if not trains_base:
        leaked = [n for n, p in adapted.named_parameters() if p.requires_grad and _is_base_weight(n, base_weights)]
        assert not leaked, f"{name}: base weights are trainable: {leaked[:3]}"
        checks.append("only-method-params")

    init_logits = _logits(method, adapted, ids)
    if method_cls.identity_at_init:
        assert torch.allclose(init_logits, base_logits, atol=1e-6), \
            f"{name}: claims identity at init but logits differ by {(init_logits - base_logits).abs().max():.3g}"
        checks.append("identity-at-init")

    # One optimizer step on a next-token loss: the output must move, frozen weights must not.
    opt = torch.optim.SGD([p for p in adapted.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):  # two steps: LoRA-style zero-initialised factors need one step to unlock the other
        logits = method.forward_logits(adapted, ids, torch.ones_like(ids))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained_logits = _logits(method, adapted, ids)
    assert not torch.allclose(trained_logits, init_logits), f"{name}: an optimizer step did not change the output"
    checks.append("learns")
    if not trains_base:
        for n, p in adapted.named_parameters():
            key = _base_name(n, base_weights)
            if key is not None:
                assert torch.equal(p.detach(), base_weights[key]), f"{name}: base weight {key} changed in training"
        checks.append("base-frozen")

    with tempfile.TemporaryDirectory() as tmp:
        method.save_adapter(adapted, tmp)
        file_bytes = _file_bytes(Path(tmp))
        reloaded = method.load_adapter(_fresh(model, seed).model, tmp)
        assert torch.allclose(_logits(method, reloaded, ids), trained_logits, atol=1e-6), \
            f"{name}: logits after save/load differ from the trained model's"
        checks.append("save-load")

    sizes = method.adapter_bytes(adapted)
    assert sizes.trainable_fp32 == 4 * count and sizes.trainable_bf16 == 2 * count, f"{name}: trainable bytes wrong"
    assert sizes.saved_fp32 <= file_bytes <= sizes.saved_fp32 + 64 * 1024 + sizes.saved_fp32 // 100, \
        f"{name}: adapter_bytes says {sizes.saved_fp32} B with frozen buffers but the saved files hold {file_bytes} B"
    checks.append("bytes")

    if method_cls.mergeable:
        before = {n: p.detach().clone() for n, p in adapted.named_parameters()}
        with method.merged(adapted) as merged_model:
            merged_logits = _logits(method, merged_model, ids)
        assert torch.allclose(merged_logits, trained_logits, atol=MERGE_ATOL), \
            f"{name}: merged logits differ from unmerged by {(merged_logits - trained_logits).abs().max():.3g}"
        for n, p in adapted.named_parameters():
            assert torch.equal(p.detach(), before[n]), f"{name}: merged() did not restore {n} bit-for-bit"
        assert torch.equal(_logits(method, adapted, ids), trained_logits), f"{name}: output changed after merged()"
        checks.append("merge")

    from pefthub.models import meta_model

    meta = meta_model(model)
    default_count = method_cls.count_params(meta, method.config)
    assert default_count == count, f"{name}: meta-device count {default_count} != real count {count}"
    try:
        picked = method_cls.config_for_params(meta, default_count)
    except UnsupportedError:
        assert not method_cls.exact_params, f"{name}: claims exact budgets but cannot target one"
        checks.append("budget-unsupported")  # allowed: such a method just can't take --params
    else:
        picked_count = method_cls.count_params(meta, picked)
        if method_cls.exact_params:
            assert picked_count == default_count, f"{name}: claims exact budgets but {default_count} gave {picked_count}"
        checks.append("budget")

    for trainer in ("sft", "grpo", "no-such-trainer"):
        if trainer in method_cls.supported_trainers:
            method.check_trainer(trainer)
        else:
            try:
                method.check_trainer(trainer)
            except UnsupportedError:
                continue
            raise AssertionError(f"{name}: check_trainer({trainer!r}) should raise UnsupportedError")
    checks.append("trainers")

    return MethodCheckReport(name, model, count, sizes.to_dict(), file_bytes, checks)


def _base_name(name: str, base_weights: dict) -> str | None:
    """The base-model parameter name a (possibly peft-wrapped) parameter name refers to."""
    candidates = [name, name.replace("base_model.model.", "", 1)]
    candidates += [c.replace(".base_layer", "") for c in list(candidates)]
    for c in candidates:
        if c in base_weights:
            return c
    return None


def _is_base_weight(name: str, base_weights: dict) -> bool:
    return _base_name(name, base_weights) is not None

"""The method contract, checked for every registered method on both tiny model shapes
(llama-shaped without biases, qwen2-shaped with q/k/v biases), as peft's tests do."""

import pytest
import torch

from pefthub import plugins
from pefthub.testing import check_method

METHODS = list(plugins.methods())


def test_all_seven_builtin_methods_are_registered():
    assert {"tinylora", "lora", "lora_xs", "vera", "bitfit", "prompt_tuning", "full"} <= set(METHODS)


@pytest.mark.parametrize("model", ["tiny-random", "tiny-random-qwen2"])
@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name, model):
    report = check_method(plugins.methods().get(name), model=model)
    expected = {"count", "learns", "save-load", "bytes", "trainers"}
    assert expected <= set(report.checks)
    cls = plugins.methods().get(name)
    assert ("merge" in report.checks) == cls.mergeable
    assert ("identity-at-init" in report.checks) == cls.identity_at_init


class _LyingCount(plugins.methods().get("lora")):
    name = "lying_count"

    def trainable_parameters(self, model):
        return super().trainable_parameters(model) + 1


class _FalseIdentity(plugins.methods().get("prompt_tuning")):
    name = "false_identity"
    identity_at_init = True


class _BrokenMerge(plugins.methods().get("lora")):
    name = "broken_merge"

    def merged(self, model):
        import contextlib

        @contextlib.contextmanager
        def scaled():
            with torch.no_grad():
                w = next(p for n, p in model.named_parameters() if n.endswith("q_proj.base_layer.weight"))
                w.mul_(1.5)
            yield model

        return scaled()


@pytest.mark.parametrize("cls, message", [
    (_LyingCount, r"trainable_parameters\(\) says"),
    (_FalseIdentity, "claims identity at init"),
    (_BrokenMerge, "merged logits differ"),
])
def test_check_method_catches_broken_methods(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_method(cls)

"""Every tensor follows the model's device, proven on a CPU-only machine two ways.

Statically: every tensor factory in the packages that build tensors for a model names its device
(or derives from an existing tensor). At run time: SFT and GRPO steps, rollouts and evaluation run
with torch's default device set to ``meta`` under :func:`pefthub.devices.device_guard`, so any tensor
made without naming a device lands on ``meta`` and the first op that mixes it with the model's CPU
tensors raises, as a CUDA model would on a CPU tensor.
"""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest
import torch

from pefthub import plugins
from pefthub.devices import device_guard, keep_trainable_fp32
from pefthub.trainers.budget import Budget, Spent

from test_trainers import LettersTask, tiny_lm

ROOT = Path(__file__).resolve().parents[2]
#: Where tensors handed to a model are made (the fused decoder's KV cache included).
SCANNED = ("pefthub/trainers", "pefthub/generation", "pefthub/methods", "pefthub/evaluation", "plugins")
#: torch functions that make a new tensor (or generator) on the default device unless told otherwise.
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "linspace", "logspace", "eye",
             "rand", "randn", "randint", "randperm", "Generator", "tril_indices", "triu_indices", "empty_strided",
             "scalar_tensor", "from_numpy", "sparse_coo_tensor"}


def unplaced_factories(source: str, filename: str = "<string>") -> list[str]:
    """``file:line torch.f(...)`` for each tensor factory call in ``source`` that names no device
    (``torch.from_numpy`` cannot: it is reported unless its result is moved with ``.to(...)``)."""
    tree = ast.parse(source, filename)
    moved = {id(node.func.value) for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to"}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and node.func.attr in FACTORIES):
            continue
        if any(k.arg == "device" for k in node.keywords) or id(node) in moved and node.func.attr == "from_numpy":
            continue
        found.append(f"{filename}:{node.lineno} torch.{node.func.attr}(...)")
    return found


def host_tensors_left_behind(source: str, filename: str = "<string>") -> list[str]:
    """``file:line name`` for each name bound to a tensor built on the host (``device="cpu"``) that its
    function never moves with ``name.to(...)``: on a CPU machine a missing move changes nothing, so
    this is where a dropped ``.to(device)`` would go unseen at run time."""
    found = []
    for fn in ast.walk(ast.parse(source, filename)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        host: dict[str, int] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                on_host = any(k.arg == "device" and isinstance(k.value, ast.Constant) and k.value.value == "cpu"
                              for k in node.value.keywords)
                for target in node.targets:
                    if on_host and isinstance(target, ast.Name):
                        host.setdefault(target.id, node.lineno)
        moved = {node.func.value.id for node in ast.walk(fn)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to"
                 and isinstance(node.func.value, ast.Name)}
        found += [f"{filename}:{line} {name}" for name, line in host.items() if name not in moved]
    return found


def scanned_files() -> list[Path]:
    files = sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20
    return files


def test_every_tensor_factory_names_its_device():
    found = [hit for f in scanned_files() for hit in unplaced_factories(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == [], "tensor factories without a device (pass device=..., or derive from a tensor):\n" + "\n".join(found)


def test_every_tensor_built_on_the_host_is_moved_to_the_model_device():
    found = [hit for f in scanned_files() for hit in host_tensors_left_behind(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == [], "tensors built with device='cpu' and never moved with .to(...):\n" + "\n".join(found)


def test_the_static_check_finds_a_host_tensor_that_is_not_moved():
    source = ("import torch\n"
              "def build(rows, device):\n"
              "    ids = torch.zeros(3, dtype=torch.long, device='cpu')\n"
              "    mask = torch.ones(3, dtype=torch.long, device='cpu')\n"
              "    ids[0] = torch.tensor(rows[0], device='cpu')\n"
              "    return ids.to(device), mask\n")
    assert host_tensors_left_behind(source) == ["<string>:4 mask"]


def test_the_static_check_finds_a_factory_without_a_device():
    source = ("import torch\n"
              "a = torch.zeros(3, device=x.device)\n"
              "b = torch.tensor([1, 2])\n"
              "g = torch.Generator()\n"
              "c = torch.full((2,), 0, dtype=torch.long, device='cpu').to(d)\n"
              "e = x.new_zeros(3)\n")
    assert unplaced_factories(source) == ["<string>:3 torch.tensor(...)", "<string>:4 torch.Generator(...)"]


@contextlib.contextmanager
def stray_tensors_on_meta():
    """Tensors made without a device land on ``meta``; the guard raises where one meets a real one."""
    torch.set_default_device("meta")
    try:
        with device_guard():
            yield
    finally:
        torch.set_default_device(None)


def test_the_runtime_check_catches_a_tensor_left_on_the_default_device():
    model = torch.nn.Linear(4, 4)
    with stray_tensors_on_meta(), pytest.raises(RuntimeError, match="device guard"):
        model(torch.zeros(2, 4))
    with stray_tensors_on_meta():
        model(torch.zeros(2, 4, device="cpu"))
        model.weight[torch.arange(2, device="cpu")]
    with stray_tensors_on_meta(), pytest.raises(RuntimeError, match="device guard"):
        model.weight[torch.arange(2)]  # CUDA would copy these indices silently; the guard refuses


def adapted(method_name: str, **config):
    lm = tiny_lm()
    cls = plugins.methods().get(method_name)
    method = cls(cls.config_class(**config))
    return lm, method, keep_trainable_fp32(method.apply(lm.model))


# (trainer, method, method config, trainer options): each path that builds tensors for the model.
CASES = [
    ("sft", "lora", {"r": 2}, {}),
    ("sft", "tinylora", {"u": 13}, {}),
    ("sft", "full", {}, {"gradient_checkpointing": True}),
    ("grpo", "lora", {"r": 2}, {"rollout_backend": "hf"}),
    ("grpo", "lora", {"r": 2}, {"rollout_backend": "fused", "scale_rewards": "batch"}),
    ("grpo", "tinylora", {"u": 13}, {"rollout_backend": "fused", "rollout_correction": "tis"}),
    ("grpo", "bitfit", {}, {"rollout_backend": "hf", "beta": 0.05}),
    ("grpo", "lora_xs", {"r": 2}, {"rollout_backend": "fused", "dynamic_sampling": True}),
    ("grpo", "full", {}, {"rollout_backend": "fused", "gradient_checkpointing": True}),
]


@pytest.mark.parametrize("trainer_name,method_name,config,options", CASES,
                         ids=[f"{t}-{m}-{'-'.join(o) or 'default'}" for t, m, _, o in CASES])
def test_training_steps_make_no_tensor_off_the_model_device(trainer_name, method_name, config, options):
    lm, method, model = adapted(method_name, **config)
    cls = plugins.trainers().get(trainer_name)
    trainer = cls(cls.options_class.from_dict(options))
    budget = Budget(steps=2, batch_size=2, generations=4, max_new_tokens=6, max_seq_len=128)
    with stray_tensors_on_meta():
        outcome = trainer.train(model=model, tokenizer=lm.tokenizer, method=method, task=LettersTask(),
                                budget=budget, learning_rate=1e-3, seed=0, spent=Spent())
    assert outcome.status == "success", outcome.error
    losses = [point["loss"] for point in outcome.curves]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses, device="cpu")))
    if trainer_name == "grpo":  # the loss path ran: some group had unequal rewards
        assert any(point["trained_completions"] > 0 for point in outcome.curves)


def test_fused_evaluation_makes_no_tensor_off_the_model_device():
    from pefthub.evaluation import evaluate
    from pefthub.tasks import DEFAULT_TASK, task_from_config

    lm = tiny_lm()
    task = task_from_config(dict(DEFAULT_TASK))
    with stray_tensors_on_meta():
        result = evaluate(lm.model, lm.tokenizer, task, split="test", limit=4, max_new_tokens=6, batch_size=2,
                          backend="fused")
    assert result.summary["n"] == 4

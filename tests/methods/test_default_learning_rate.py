"""A method declares its own default learning rate; the runner, `pefthub methods` and the docs read it there."""

from __future__ import annotations

import types

from pefthub import runner
from pefthub.commands.methods_command import describe_methods
from pefthub.hookspecs import hookimpl

CONFIG = {"model": "tiny-random", "task": {"name": "basic_arithmetic"}, "budget": {"steps": 1}}


def test_the_built_in_methods_keep_their_default_learning_rates():
    expected = {"full": 1e-5, "lora": 1e-4, "vera": 1e-3, "lora_xs": 1e-3, "tinylora": 1e-3, "bitfit": 1e-3,
                "prompt_tuning": 1e-3}
    assert {name: runner.default_learning_rate(name) for name in expected} == expected
    assert {m["name"]: m["default_learning_rate"] for m in describe_methods()} == expected
    # A config without a learning rate resolves to the method's (a run id then carries it explicitly).
    assert runner.resolve_config({**CONFIG, "method": "vera", "trainer": "sft"})["learning_rate"] == 1e-3


def test_a_plugin_method_declares_its_own_the_same_way(fresh_plugins):
    lora = fresh_plugins.methods().get("lora")
    slow = type("SlowLora", (lora,), {"name": "slow_lora", "default_learning_rate": 3e-5,
                                      "trainer_learning_rates": {"grpo": 2e-5}})
    plugin = types.ModuleType("pefthub_test_slow_lora")
    plugin.register_methods = hookimpl(lambda register: register(slow))
    fresh_plugins.reset()
    fresh_plugins.host().add(plugin, "slow_lora")
    assert "slow_lora" in fresh_plugins.methods()

    config = {**CONFIG, "method": "slow_lora", "trainer": "sft"}
    assert runner.prepare(config).learning_rate == 3e-5
    assert runner.prepare({**config, "trainer": "grpo"}).learning_rate == 2e-5  # its per-trainer rate
    assert runner.prepare({**config, "learning_rate": 1e-2}).learning_rate == 1e-2  # a given rate wins
    assert runner.default_learning_rate("slow_lora", "grpo") == 2e-5
    shown = describe_methods("slow_lora")[0]
    assert (shown["default_learning_rate"], shown["trainer_learning_rates"]) == (3e-5, {"grpo": 2e-5})

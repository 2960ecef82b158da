"""Plugin loading: entry points, allowlist, and one clear error per kind of broken plugin."""

import importlib.metadata
import subprocess
import sys
import types

import pytest

from pefthub import plugins
from pefthub.errors import PluginError
from pefthub.hookspecs import hookimpl
from pefthub.methods import Method


def _module(name, **hooks):
    mod = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(mod, hook, hookimpl(fn))
    return mod


class _Dup(Method):
    name = "lora"  # clashes with the built-in


def test_builtins_load_through_the_entry_point_group():
    eps = {ep.name: ep for ep in importlib.metadata.entry_points(group="pefthub") if ep.dist.name == "pefthub"}
    assert {"tinylora", "lora", "lora_xs", "vera", "bitfit", "prompt_tuning", "full"} <= set(eps)
    host = plugins.PluginHost()
    assert host.info["tinylora"].builtin and host.info["tinylora"].hooks == ["register_methods"]
    assert host.info["tinylora"].module == "pefthub.builtins.tinylora"


def test_duplicate_method_name_names_both_plugins():
    host = plugins.PluginHost()
    host.add(_module("third", register_methods=lambda register: register(_Dup)), "third-party-dup")
    with pytest.raises(PluginError, match=r"method 'lora' is registered by both plugin 'lora' \(from pefthub\) and plugin 'third-party-dup' \(from \(in-process\)\)"):
        host.collect("register_methods", plugins._class_name_key)


def test_plugin_raising_inside_a_hook_is_named():
    def boom(register):
        raise RuntimeError("kaput")

    host = plugins.PluginHost(load_entry_points=False)
    host.add(_module("boomer", register_methods=boom), "boomer")
    with pytest.raises(PluginError, match=r"^plugin 'boomer' \(from \(in-process\)\) raised in register_methods: RuntimeError: kaput$"):
        host.collect("register_methods", plugins._class_name_key)


def test_wrong_hook_signature_is_named():
    host = plugins.PluginHost(load_entry_points=False)
    with pytest.raises(PluginError) as err:
        host.add(_module("sloppy", register_methods=lambda registrar, extra: None), "sloppy", distribution="pefthub-sloppy")
    assert str(err.value) == ("plugin 'sloppy' (from pefthub-sloppy) implements register_methods(registrar, extra), "
                              "but the hook is register_methods(register)")


def test_unknown_hook_is_named():
    host = plugins.PluginHost(load_entry_points=False)
    with pytest.raises(PluginError) as err:
        host.add(_module("typo", register_method=lambda register: None), "typo")
    assert str(err.value) == ("plugin 'typo' (from (in-process)) implements unknown hook 'register_method' "
                              "(did you mean 'register_methods'?)")


def test_registering_a_nameless_method_is_named():
    class Nameless(Method):
        name = None

    host = plugins.PluginHost(load_entry_points=False)
    host.add(_module("anon", register_methods=lambda register: register(Nameless)), "anon")
    with pytest.raises(PluginError, match=r"plugin 'anon' \(from \(in-process\)\) registered a method without a name"):
        host.collect("register_methods", plugins._class_name_key)


def _fake_entry_points(extra):
    real = plugins._entry_points()

    def fake():
        return real + extra

    return fake


def test_plugin_failing_at_import_is_named(monkeypatch):
    ep = importlib.metadata.EntryPoint("broken", "pefthub_no_such_module_xyz", "pefthub")
    monkeypatch.setattr(plugins, "_entry_points", _fake_entry_points([ep]))
    with pytest.raises(PluginError, match="plugin 'broken' .* failed to import: ModuleNotFoundError"):
        plugins.PluginHost()


@pytest.mark.parametrize("env, loaded", [
    ({}, True),
    ({"PEFTHUB_LOAD_PLUGINS": "extra"}, True),
    ({"PEFTHUB_LOAD_PLUGINS": "someone-else"}, False),
    ({"PEFTHUB_LOAD_PLUGINS": ""}, False),
    ({"PEFTHUB_DISABLE_PLUGIN_AUTOLOAD": "1"}, False),
])
def test_allowlist_and_autoload_switch(monkeypatch, env, loaded):
    sys.modules["pefthub_test_extra_plugin"] = _module("pefthub_test_extra_plugin",
                                                       register_methods=lambda register: None)
    ep = importlib.metadata.EntryPoint("extra", "pefthub_test_extra_plugin", "pefthub")
    monkeypatch.setattr(plugins, "_entry_points", _fake_entry_points([ep]))
    monkeypatch.delenv("PEFTHUB_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PEFTHUB_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    host = plugins.PluginHost()
    assert ("extra" in host.info) == loaded
    assert "tinylora" in host.info  # built-ins always load


def test_cli_reports_a_broken_plugin_in_one_line(tmp_path):
    # A real distribution on sys.path whose entry point fails at import.
    dist = tmp_path / "pefthub_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pefthub-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pefthub]\nbroken = pefthub_broken_mod\n")
    (tmp_path / "pefthub_broken_mod.py").write_text("raise ImportError('needs a GPU driver')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "pefthub", "methods"], capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: plugin 'broken' (from pefthub-broken) failed to import: "
                                  "ImportError: needs a GPU driver")
    env["PEFTHUB_LOAD_PLUGINS"] = ""
    out = subprocess.run([sys.executable, "-m", "pefthub", "methods", "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_every_broken_plugin_is_reported_in_one_line(monkeypatch):
    # Three third-party plugins broken three ways, plus a good one: one error line names all three.
    sys.modules["pefthub_test_sloppy"] = _module("pefthub_test_sloppy", register_methods=lambda registrar, extra: None)
    sys.modules["pefthub_test_good"] = _module("pefthub_test_good", register_methods=lambda register: None)
    eps = [importlib.metadata.EntryPoint("missing", "pefthub_no_such_module_xyz", "pefthub"),
           importlib.metadata.EntryPoint("sloppy", "pefthub_test_sloppy", "pefthub"),
           importlib.metadata.EntryPoint("good", "pefthub_test_good", "pefthub"),
           importlib.metadata.EntryPoint("typo", "pefthub_test_typo", "pefthub")]
    sys.modules["pefthub_test_typo"] = _module("pefthub_test_typo", register_method=lambda register: None)
    monkeypatch.setattr(plugins, "_entry_points", _fake_entry_points(eps))
    monkeypatch.delenv("PEFTHUB_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("PEFTHUB_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    with pytest.raises(PluginError) as err:
        plugins.PluginHost()
    message = str(err.value)
    assert "\n" not in message and message.startswith("3 plugins are broken: ")
    for name in ("missing", "sloppy", "typo"):
        assert f"plugin '{name}' (from " in message
    assert "good" not in message


def test_every_plugin_raising_in_a_hook_is_reported():
    def boom(register):
        raise RuntimeError("kaput\nsecond line")

    host = plugins.PluginHost(load_entry_points=False)
    host.add(_module("one", register_methods=boom), "one", distribution="dist-one")
    host.add(_module("two", register_methods=boom), "two", distribution="dist-two")
    with pytest.raises(PluginError) as err:
        host.collect("register_methods", plugins._class_name_key)
    message = str(err.value)
    assert message.startswith("2 plugins are broken: ") and "\n" not in message
    for name in ("one", "two"):
        assert f"plugin '{name}' (from dist-{name}) raised in register_methods: RuntimeError: kaput second line" in message


def test_allowlisted_names_matching_no_plugin_are_warned_about(monkeypatch, capsys, fresh_plugins):
    from pefthub.cli import main

    monkeypatch.setenv("PEFTHUB_LOAD_PLUGINS", "no_such_plugin,lora,other-missing")
    assert main(["plugins", "--json"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert warnings == [
        "warning: PEFTHUB_LOAD_PLUGINS names 'no_such_plugin', which matches no installed plugin or distribution",
        "warning: PEFTHUB_LOAD_PLUGINS names 'other-missing', which matches no installed plugin or distribution",
    ]


# ---- docs/plugins.md: the method that is not built on peft ------------------------------------
def test_the_documented_non_peft_method_meets_the_contract():
    """Runs the code block of docs/plugins.md section 5 itself (not a copy) through check_method."""
    import re
    import sys
    import types
    from pathlib import Path

    from pefthub.testing import check_method

    guide = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    section = guide.split("## 5. A method without peft", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("pefthub_docs_norm_tuning")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    try:
        exec(compile(code, "docs/plugins.md#5", "exec"), module.__dict__)
        cls = module.NormTuning
        for model in ("tiny-random", "tiny-random-qwen2"):
            report = check_method(cls, model=model)
            assert report.trainable_params == 64  # hidden_size of the tiny models
            assert {"count", "identity-at-init", "learns", "save-load", "bytes", "merge"} <= set(report.checks)
            assert "base-frozen" not in report.checks  # trains_base_weights: it trains a base weight
        host = plugins.PluginHost(load_entry_points=False)
        host.add(module, "norm_tuning", distribution="docs")
        assert "norm_tuning" in host.collect("register_methods", plugins._class_name_key)
    finally:
        del sys.modules[module.__name__]

"""Docs stay true to the code; the package installs what it should and nothing generic."""

import inspect
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from pefthub import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def test_every_hookspec_is_documented_in_the_plugin_guide():
    guide = (ROOT / "docs" / "plugins.md").read_text()
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("register_")]
    assert specs, "no hookspecs found"
    for name in specs:
        assert f"`{name}(register)`" in guide, f"hook {name} is not documented in docs/plugins.md"


def test_method_reference_is_generated_from_the_registered_configs():
    env = {**os.environ, "PEFTHUB_LOAD_PLUGINS": ""}
    out = subprocess.run([sys.executable, "-m", "pefthub", "methods", "--markdown"], capture_output=True,
                         text=True, check=True, env=env)
    assert (ROOT / "docs" / "methods.md").read_text() == out.stdout, \
        "docs/methods.md is stale: PEFTHUB_LOAD_PLUGINS= pefthub methods --markdown > docs/methods.md"


def test_every_subpackage_is_listed_for_installation():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "pefthub").rglob("__init__.py")}
    assert found <= listed, f"not installed: {sorted(found - listed)}"


def test_every_builtin_plugin_module_has_an_entry_point():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = set(config["project"]["entry-points"]["pefthub"].values())
    modules = {f"pefthub.builtins.{p.stem}" for p in (ROOT / "plugins").glob("*.py")
               if not p.name.startswith("_") and re.search(r"^@hookimpl", p.read_text(), re.M)}
    assert modules <= entry_points, f"built-in plugins without an entry point: {sorted(modules - entry_points)}"


def test_readme_starts_with_the_two_commands_ci_uses():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in block] == ["make bench", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.venv
def test_wheel_installs_builtins_under_pefthub_not_a_generic_top_level(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "-w", str(tmp_path), str(ROOT)], check=True)
    wheel = next(tmp_path.glob("pefthub-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top_level == {"pefthub"}, top_level
    assert "pefthub/builtins/tinylora.py" in names
    assert "pefthub/data/model_configs/qwen2.5-7b-instruct.json" in names

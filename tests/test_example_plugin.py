"""The example third-party plugin (docs/example-plugin, DoRA via peft) installed with pip into a
fresh virtual environment: it appears in `pefthub plugins` and passes `check_method` there."""

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "docs" / "example-plugin"


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("plugin-venv")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # Reuse this environment's packages (torch, peft, pefthub itself) instead of reinstalling GBs.
    parent = sysconfig.get_paths()["purelib"]
    Path(site, "_pefthub_parent.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-build-isolation", "--quiet", str(PLUGIN)], check=True)
    return python


@pytest.mark.venv
def test_example_plugin_shows_up_after_pip_install(plugin_venv):
    out = subprocess.run([plugin_venv, "-m", "pefthub", "plugins", "--json"], capture_output=True, text=True,
                         check=True)
    info = {p["name"]: p for p in json.loads(out.stdout)}
    assert info["dora"]["distribution"] == "pefthub-dora"
    assert info["dora"]["hooks"] == ["register_methods"] and not info["dora"]["builtin"]
    out = subprocess.run([plugin_venv, "-m", "pefthub", "methods", "dora", "--json"], capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout)[0]["plugin"] == "dora"
    # The allowlist can switch it off again.
    out = subprocess.run([plugin_venv, "-m", "pefthub", "plugins", "--json"], capture_output=True, text=True,
                         check=True, env={"PEFTHUB_LOAD_PLUGINS": "", "PATH": "/usr/bin:/bin"})
    assert "dora" not in {p["name"] for p in json.loads(out.stdout)}


@pytest.mark.venv
def test_example_plugin_passes_its_own_contract_test(plugin_venv):
    out = subprocess.run([plugin_venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
                         capture_output=True, text=True, cwd=PLUGIN)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout

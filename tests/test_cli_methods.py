"""`pefthub methods`, `pefthub plugins` and `pefthub plan` as a user runs them."""

import json
import subprocess
import sys

import pytest

from pefthub.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "pefthub", *args], capture_output=True, text=True)


def test_plan_prints_13_for_tinylora_fully_tied_on_qwen25_7b():
    out = run("plan", "--model", "qwen2.5-7b-instruct", "--method", "tinylora", "--set", "u=13",
              "--set", "weight_tying=1.0", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)[0]
    assert plan["trainable_params"] == 13 and plan["adapter_bytes"]["trainable_fp32"] == 52
    table = run("plan", "--model", "qwen2.5-7b-instruct", "--method", "tinylora", "--params", "13")
    assert table.returncode == 0 and "u=13 weight_tying=1.0" in table.stdout and " 13 " in table.stdout


def test_methods_lists_all_seven_with_help_and_trainers(capsys):
    assert main(["methods", "--json"]) == 0
    methods = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert {"tinylora", "lora", "lora_xs", "vera", "bitfit", "prompt_tuning", "full"} <= set(methods)
    assert all(f["help"] for m in methods.values() for f in m["fields"])
    assert methods["bitfit"]["notes"].startswith("adds zero-initialised biases")
    assert methods["prompt_tuning"]["mergeable"] is False
    assert set(methods["tinylora"]["trainers"]) == {"sft", "grpo"}


@pytest.mark.parametrize("args, message", [
    (["methods", "nope"], "error: unknown method 'nope' (known: "),
    (["plan", "--model", "qwen2.5-7b-instruct", "--method", "vera", "--params", "13"],
     "error: impossible budget: method 'vera' cannot train ~13 parameters"),
    (["plan", "--model", "qwen2.5-7b-instruct", "--method", "lora", "--set", "rank=4"],
     "error: LoraMethodConfig: unknown field(s) rank"),
    (["plan", "--model", "no/such-model", "--method", "lora"], "error: model 'no/such-model' is not in the local Hugging Face cache"),
    (["plan", "--model", "no-such-model", "--method", "lora"], "error: unknown model 'no-such-model'"),
    (["plan"], "error: plan needs a suite directory or --model"),
])
def test_bad_input_gives_one_line_and_exit_2(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert out.stderr.startswith(message), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_every_command_has_help():
    out = run("--help")
    assert out.returncode == 0
    for command in ("methods", "plugins", "plan"):
        assert command in out.stdout
        sub = run(command, "--help")
        assert sub.returncode == 0 and "usage: pefthub " + command in sub.stdout

"""scripts/gpu-check on this CPU machine: without CUDA it skips in one line; with the hidden
``--device cpu --tiny`` it runs every part's code path with tiny shapes, as on the target machine
(torch, transformers and peft only: the optional packages are hidden from it), and writes the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pefthub import devicecheck
from pefthub.models import load_model

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu-check"
#: What the target machine lacks (docs/gpu.md): hidden from the check's processes by a sitecustomize.
ABSENT = ("vllm", "trl", "lm_eval", "datasets", "reasoning_gym")


def run_script(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=240, env={**os.environ, **(env or {})})


#: Run at start-up of the check's processes (children too): the optional packages are absent
#: (``find_spec`` gives None, importing raises ModuleNotFoundError) and pefthub is not installed
#: (no ``pefthub`` entry points: methods come from the checkout's plugins/).
SITECUSTOMIZE = f"""
import importlib.metadata, sys
for name in {ABSENT!r}:
    sys.modules[name] = None
_entry_points = importlib.metadata.entry_points
def entry_points(**selection):
    if selection.get("group") == "pefthub":
        return importlib.metadata.EntryPoints(())
    return _entry_points(**selection)
importlib.metadata.entry_points = entry_points
"""


def target_machine_env(tmp_path: Path) -> dict:
    """PYTHONPATH with a sitecustomize that makes this machine look like the target (:data:`SITECUSTOMIZE`)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the check would run")
def test_without_cuda_it_skips_in_one_line_and_exits_0(tmp_path):
    done = run_script(cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: skipped: ") and "no CUDA GPU" in lines[0]
    assert not (tmp_path / devicecheck.DEFAULT_OUT).exists()


def test_tiny_cpu_run_covers_every_part_and_writes_the_report(tmp_path):
    out = tmp_path / "report.json"
    # bf16 as on the GPU: frozen weights in bf16 under autocast, trainable parameters fp32.
    done = run_script("--device", "cpu", "--dtype", "bfloat16", "--tiny", "--out", str(out), cwd=tmp_path,
                      env=target_machine_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["schema"] == devicecheck.SCHEMA and report["status"] == "pass" and report["failed"] == []
    versions = report["versions"]
    assert versions["torch"] == torch.__version__ and versions["transformers"] and versions["peft"]
    assert versions["compute"] == {"device": "cpu", "dtype": "bfloat16", "gpu": None}
    assert report["mode"]["dtype"] == "bfloat16" and report["mode"]["device"] == "cpu"
    assert all(versions["optional"][name] is None for name in ABSENT)

    checks = {c["name"]: c for c in report["checks"]}
    tiny = [f"{engine}/{method}" for method in ("tinylora@13", "lora") for engine in devicecheck.TINY_ENGINES]
    tiny += [f"{engine}+gradient_checkpointing/tinylora@13" for engine in ("sft", "grpo-fused")]
    assert set(checks) == {*tiny, "grpo-vllm/tinylora@13",
                           *(f"grpo-timing/{name}" for name in devicecheck.TIMED_MODELS)}
    for name in tiny:
        check = checks[name]
        assert check["status"] == "pass", check
        details = check["details"]
        assert details["device_watch"]["forward_inputs_checked"] > 0 and details["device_watch"]["problems"] == []
        assert details["dtypes"] == {"trainable": ["float32"], "frozen": ["bfloat16"]}
        assert [p["step"] for p in details["curves"]] == [1, 2]
        assert all(isinstance(p["loss"], float) for p in details["curves"])
        if name.startswith("grpo"):
            engine = name.split("/")[0].split("+")[0].removeprefix("grpo-")
            assert all(p["rollout_backend"] == engine for p in details["curves"])
            assert any(p["trained_completions"] for p in details["curves"])
        assert details["trainer_options"].get("gradient_checkpointing", False) == ("+gradient_checkpointing" in name)
    vllm = checks["grpo-vllm/tinylora@13"]
    assert vllm["status"] == "skip" and "vllm is not installed" in vllm["reason"]

    shapes = devicecheck.TINY_TIMING
    for name in devicecheck.TIMED_MODELS:
        check = checks[f"grpo-timing/{name}"]
        assert check["status"] == "pass", check
        details = check["details"]
        assert details["trainable_params"] == 13 and details["tiny"] is True and details["method"] == "tinylora"
        assert [s["step"] for s in details["steps"]] == [1, 2]
        # EOS can never be sampled: every completion runs to max_new_tokens.
        assert all(s["tokens_generated"] == shapes["prompts"] * shapes["generations"] * shapes["new_tokens"]
                   for s in details["steps"])
        measured = details["measured"]
        assert measured["tokens_per_s"] > 0 and measured["model_flops"] > 0
        assert measured["mfu"] is None and "no GPU" in measured["mfu_reason"]
        assert measured["peak_memory_bytes"] is None and measured["seconds_vs_plan"] is None
        plan = details["plan"]
        assert "memory_plan.estimate_run" in plan["source"] and plan["memory_bytes"] > 0
        assert 0.3 < measured["flops_vs_plan"] < 3, measured  # the plan and the trainers count FLOPs alike
    assert "PASS grpo-timing/qwen2.5-7b-instruct" in done.stdout


def test_a_part_past_its_guard_is_stopped_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setitem(devicecheck.PARTS_GUARD_S, "tiny", 0.5)
    opts = devicecheck.Options(tmp_path / "r.json", "cpu", "float32", True, ["tiny"], 120.0)
    lines: list[str] = []
    _, checks = devicecheck.run_parts(opts, lines.append)
    assert len(checks) == 1 and checks[0]["status"] == "fail", checks
    assert "exceeding its 0.5 s guard" in checks[0]["reason"] and lines[-1].startswith("FAIL tiny")


def test_a_child_that_dies_at_start_up_fails_every_part_with_its_last_words(tmp_path):
    # cuda:0 passes the parent's check only where a GPU is; here the child's own check refuses it.
    opts = devicecheck.Options(tmp_path / "r.json", "cuda:0", "auto", True, ["tiny", "vllm"], 120.0)
    _, checks = devicecheck.run_parts(opts, lambda line: None)
    assert [c["name"] for c in checks] == ["tiny", "vllm"] and all(c["status"] == "fail" for c in checks)
    assert "ended with exit code 1 during 'start-up'" in checks[0]["reason"] and "no CUDA GPU" in checks[0]["reason"]
    assert checks[1]["reason"].startswith("not run: ")


def test_the_whole_budget_stops_the_check(tmp_path):
    opts = devicecheck.Options(tmp_path / "r.json", "cpu", "float32", True, ["tiny", "vllm"], 0.5)
    _, checks = devicecheck.run_parts(opts, lambda line: None)
    assert all(c["status"] == "fail" for c in checks) and len(checks) == 2
    assert "exceeding the check's 0.5 s budget" in checks[0]["reason"] and checks[1]["reason"].startswith("not run")


def test_slow_tinylora_set_up_falls_back_to_lora_for_the_timing(monkeypatch):
    from pefthub import devices

    name = next(iter(devicecheck.TIMED_MODELS))
    monkeypatch.setitem(devicecheck.TIMED_MODELS, name, {**devicecheck.TIMED_MODELS[name], "apply_limit_s": 1e-4})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check = devicecheck.timing_check(name, devices.resolve("cpu", "float32"), lambda event: None, True,
                                         time.perf_counter() + 120)
    finally:
        torch.set_num_threads(threads)
    assert check["status"] == "pass", check
    details = check["details"]
    assert details["method"] == "lora" and details["method_config"]["r"] == 1
    assert "stopped after" in details["tinylora_apply"]
    assert [s["step"] for s in details["steps"]] == [1, 2]


def test_time_limit_interrupts_python_work_and_disarms_after():
    with pytest.raises(devicecheck.TooSlow):
        with devicecheck.time_limit(0.05):
            while True:
                pass
    with devicecheck.time_limit(0.05):
        pass
    time.sleep(0.1)  # the timer was disarmed: nothing fires here


def test_device_watch_reports_forward_inputs_off_the_expected_device():
    model = load_model("tiny-random").model
    ids = torch.tensor([[5, 6, 7]])
    problems = {}
    for expected in ("cpu", "meta"):
        watch = devicecheck.DeviceWatch(expected)
        with watch.watching(model), torch.no_grad():
            model(input_ids=ids)
        assert watch.forward_inputs > 0
        problems[expected] = watch.problems()
    assert problems["cpu"] == []
    assert problems["meta"] and all("off-device forward input" in p and "on cpu" in p for p in problems["meta"])


@pytest.mark.parametrize("name,tflops", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                         ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                         ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0)])
def test_peak_flops_by_device_name(name, tflops):
    assert devicecheck.peak_bf16_flops(name)[0] == pytest.approx(tflops * 1e12)


def test_unknown_gpu_or_no_gpu_has_no_peak_and_says_why():
    peak, reason = devicecheck.peak_bf16_flops("Some Future GPU")
    assert peak is None and "no peak bf16 FLOP/s known for 'Some Future GPU'" in reason
    assert devicecheck.peak_bf16_flops(None)[0] is None


def test_unknown_part_is_one_error_line(capsys):
    assert devicecheck.main(["--only", "tiny,bogus"]) == 2
    assert "unknown part(s) bogus" in capsys.readouterr().err


def test_result_line_of_a_gpu_timing():
    measured = {"tokens_per_s": 1234.5, "seconds": 20.0, "seconds_vs_plan": 1.7, "mfu": 0.2512,
                "generation_mfu": 0.08, "train_mfu": 0.31, "peak_memory_bytes": 40 * 2**30, "memory_vs_plan": 0.9}
    line = devicecheck._line({"name": "grpo-timing/qwen2.5-7b-instruct", "status": "pass", "seconds": 61.0,
                              "reason": None, "details": {"measured": measured}})
    assert line == ("PASS grpo-timing/qwen2.5-7b-instruct (61.0 s): 1234 tok/s, 20.0 s/step (plan ×1.7), "
                    "MFU 25.1% (generation 8.0%, training 31.0%), peak 40.0 GiB (plan ×0.9)")

"""`pefthub bench` / `pefthub plan <suite>` end to end on the tiny model: real runs, resume after
kill -9, one-line errors for bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from pefthub import grid, suites
from pefthub import results as R
from pefthub.cli import main
from pefthub.hookspecs import hookimpl
from pefthub.trainers.sft import SFTTrainer

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "200"}


def default_task_toml() -> str:
    """The default task as a TOML [task] table body."""
    import json

    from pefthub.tasks import DEFAULT_TASK

    return "\n".join(f"{k} = {json.dumps(v)}" for k, v in DEFAULT_TASK.items())


def tiny_suite(tmp_path: Path, grid: str, name: str = "tiny", budget: str = "", extra: str = "") -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "suite.toml").write_text(textwrap.dedent(f"""
        model = "tiny-random"
        {extra}
        [task]
        {{task}}
        [budget]
        steps = 2
        batch_size = 2
        generations = 2
        max_new_tokens = 8
        max_seq_len = 160
        {budget}
        [eval]
        limit = 4
        validation_limit = 3
        max_new_tokens = 8
        [resources]
        num_cpus = 1
        [grid]
        {grid}
    """).replace("{task}", default_task_toml()))
    return path


#: Small on purpose: base row, one method with two learning rates, TinyLoRA under GRPO (4 runs).
KILL_GRID = """
methods = ["lora", "tinylora"]
trainers = ["sft"]
learning_rates = [1e-3, 1e-2]
[methods.tinylora]
params = [13]
trainers = ["grpo"]
learning_rates = [1e-3]
"""

GRID = """
methods = ["lora", "tinylora"]
trainers = ["sft", "grpo"]
learning_rates = [1e-3]
[methods.lora]
learning_rates = [1e-3, 1e-2]
[methods.tinylora]
params = [13]
trainers = ["grpo"]
"""


def bench_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pefthub", "bench", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=REPO)


def test_expand_resolves_the_grid_on_the_meta_device(tmp_path):
    suite = suites.load(tiny_suite(tmp_path, GRID))
    runs = suites.expand(suite)
    labels = [r.label for r in runs]
    assert labels == ["base/none",
                      "lora/sft/lr=0.001/seed=0", "lora/sft/lr=0.01/seed=0",
                      "lora/grpo/lr=0.001/seed=0", "lora/grpo/lr=0.01/seed=0",
                      "tinylora@13/grpo/lr=0.001/seed=0"]
    tiny = runs[-1]
    assert tiny.trainable_params == 13
    assert tiny.config["method_config"]["u"] == 13 and tiny.config["params_target"] == 13
    assert tiny.config["trainer_options"]["beta"] == 0.0  # full trainer options, defaults filled in
    assert tiny.config["budget"]["steps"] == 2 and tiny.config["eval"]["split"] == "test"
    assert runs[0].config["method"] == "base" and runs[0].config["trainer"] == "none"
    assert len({r.run_id for r in runs}) == len(runs)
    # identity is stable across parses and changes with anything that affects the run
    assert [r.run_id for r in suites.expand(suites.load(tiny_suite(tmp_path, GRID)))] == [r.run_id for r in runs]
    changed = suites.expand(suites.load(tiny_suite(tmp_path / "b", GRID, budget="warmup_ratio = 0.5")))
    assert changed[0].run_id == runs[0].run_id  # the base row does not train: the budget is not its identity
    assert not {r.run_id for r in changed[1:]} & {r.run_id for r in runs[1:]}


@pytest.mark.parametrize("grid, expected", [
    ('methods = ["nosuch"]\nlearning_rates = [1e-3]', "grid.methods: unknown method 'nosuch'"),
    ('methods = ["lora"]\nlearning_rates = [1e-3]\n[methods.lora]\nparams = [13]', "impossible budget"),
    ('methods = ["lora"]\nlearning_rates = [1e-3]\n[methods.lora]\nconfig = { rank = 4 }', "unknown field(s) rank"),
    ('methods = ["lora"]\ntrainers = ["ppo"]\nlearning_rates = [1e-3]',
     "grid.trainers: unknown trainer 'ppo' (registered: grpo, sft, trl-grpo, trl-sft)"),
    ('methods = ["lora"]\nlearning_rates = [1e-3]\n[methods.lora]\ntrainers = ["sft", "ppo"]',
     "methods.lora.trainers: unknown trainer 'ppo'"),
])
def test_bad_grids_fail_with_one_line(tmp_path, capsys, grid, expected):
    path = tiny_suite(tmp_path, grid)
    assert main(["bench", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path / "suite.toml") in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_options_for_an_unregistered_trainer_fail_with_one_line(tmp_path, capsys):
    path = tiny_suite(tmp_path, 'methods = ["lora"]\nlearning_rates = [1e-3]', extra="[trainer_options.ppo]\nbeta = 1")
    assert main(["bench", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{path / 'suite.toml'}: trainer_options.ppo: unknown trainer 'ppo' (registered: " in err
    assert err.count("\n") == 1


def test_input_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "suite.toml").write_text("model = 'tiny-random'\n[budget\n")
    assert main(["bench", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "malformed TOML" in err and "line 2" in err and err.count("\n") == 1
    negative = tiny_suite(tmp_path, GRID, name="negative", budget="").parent / "negative"
    text = (negative / "suite.toml").read_text().replace("steps = 2", "steps = -3")
    (negative / "suite.toml").write_text(text)
    assert main(["bench", str(negative)]) == 2
    assert "budget.steps: must be a positive integer (got -3)" in capsys.readouterr().err
    assert main(["bench", str(tiny_suite(tmp_path, GRID)), "--only", "nothing-matches", "--dry-run"]) == 2
    assert "no run of suite 'tiny' matches" in capsys.readouterr().err
    assert main(["bench", str(tiny_suite(tmp_path, GRID)), "--address", "auto"]) == 2
    assert "--address only applies to --executor ray" in capsys.readouterr().err


def test_unreachable_ray_cluster_is_one_line(tmp_path):
    out = bench_cli(str(tiny_suite(tmp_path, GRID)), "--executor", "ray", "--address", "127.0.0.1:9",
                    "--results", str(tmp_path / "r"), timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: cannot connect to the Ray cluster at 127.0.0.1:9: Connection refused"]
    assert not list((tmp_path / "r").glob("*.json"))


def test_dry_run_prints_grid_and_runs_nothing(tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["bench", str(tiny_suite(tmp_path, GRID)), "--dry-run", "--results", str(results),
                 "--skip", "sft"]) == 0
    out = capsys.readouterr().out
    assert "budget: 2 steps × batch 2" in out
    assert "tinylora@13/grpo/lr=0.001/seed=0" in out and "lora/sft" not in out
    assert "4 run(s) would run" in out
    assert not results.exists()


def test_plan_suite_shows_exact_counts(tmp_path, capsys):
    assert main(["plan", str(tiny_suite(tmp_path, GRID))]) == 0
    out = capsys.readouterr().out
    assert "tiny: 6 runs" in out and "u=13" in out and "52 B" in out


def test_kill_9_then_rerun_redoes_nothing_finished(tmp_path):
    """The issue's resume guarantee: kill -9 mid-sweep, rerun, finished runs untouched, all succeed."""
    suite_dir = tiny_suite(tmp_path, KILL_GRID)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "pefthub", "bench", str(suite_dir), "--results", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=REPO)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(results.glob("*.json")):
        time.sleep(0.05)
    assert proc.poll() is None, "bench finished before it could be killed; enlarge the grid"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in results.glob("*.json")}
    assert finished
    time.sleep(2.5)  # the orphaned run notices its driver is gone (1 s poll) and exits without writing
    assert {p for p in results.glob("*.json")} == set(finished)

    out = bench_cli(str(suite_dir), "--results", str(results))
    assert out.returncode == 0, out.stderr
    assert f"{len(finished)} already done" in out.stdout
    for path, (mtime, content) in finished.items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content
    runs = suites.expand(suites.load(suite_dir))
    docs, problems = R.load_results_dir(results)
    assert problems == []
    assert sorted(d["run_id"] for d in docs) == sorted(r.run_id for r in runs)
    assert all(d["status"] == "success" for d in docs), [d.get("error") for d in docs]
    assert not [p for p in results.iterdir() if p.name.endswith(".tmp")]
    if any(d["config"]["method"] != "base" for d in docs if d["run_id"] not in {p.stem for p in finished}):
        assert "step 2/2" in out.stdout  # without a terminal, a plain progress line per run (LOG_EVERY)

    # a third run has nothing to do and says so; the results table lists every row
    again = bench_cli(str(suite_dir), "--results", str(results))
    assert again.returncode == 0 and f"{len(runs)} already done" in again.stdout and "0 to run" in again.stdout
    for row in ("base", "lora", "tinylora@13"):
        assert row in again.stdout
    from pefthub.report.records import read_runs
    from pefthub.report.rows import build_rows

    rows = build_rows(read_runs(results, [e.run_id for e in runs]))
    lora_sft = next(r for r in rows if r.label == "lora/sft")
    assert lora_sft.lr_selection == "validation" and lora_sft.learning_rate in (1e-3, 1e-2)


def test_plan_paper_gsm8k_offline(capsys):
    """The issue's done-criterion: the paper grid validates offline with exact counts and bytes,
    including TinyLoRA's 13-parameter configuration on Qwen2.5-7B-Instruct."""
    assert main(["plan", str(REPO / "benchmarks" / "paper-gsm8k"), "--json"]) == 0
    import json

    plan = json.loads(capsys.readouterr().out)
    assert plan["model"] == "Qwen/Qwen2.5-7B-Instruct" and plan["runs"] == 253
    rows = {(m["name"], m["params_target"]): m for m in plan["methods"]}
    tiny13 = rows[("tinylora", 13)]
    assert tiny13["trainable_params"] == 13 and tiny13["adapter_bytes"]["trainable_fp32"] == 52
    assert tiny13["config"]["u"] == 13 and tiny13["config"]["weight_tying"] == 1.0
    assert rows[("tinylora", 1)]["trainable_params"] == 1 and rows[("tinylora", 120)]["trainable_params"] == 120
    # LoRA-XS at r=1: one trainable scalar per adapted module (28 layers × 7 modules)
    assert rows[("lora_xs", None)]["trainable_params"] == 28 * 7
    assert rows[("full", None)]["trainable_params"] == tiny13["total_params"]
    assert plan["trainer_options"]["grpo"]["beta"] == 0.0
    assert all(m["learning_rates"] == [1e-7, 5e-7, 1e-6, 5e-6, 1e-5, 1e-4, 2e-4] for m in plan["methods"])


@pytest.mark.parametrize("name, runs", [("quick", 8), ("cpu-pilots/quick-v1", 15), ("cpu-pilots/quick-v2", 10),
                                       ("cpu-pilots/quick-rates", 10),
                                       ("cpu-paper-shape", 55),
                                       ("cpu-paper-shape-v2", 25)])
def test_shipped_cpu_suites_resolve(name, runs):
    suite = suites.load(REPO / "benchmarks" / name)  # its results, where committed: leaderboards/<name>/results
    resolution = suites.resolve(suite)
    experiments = suites.expand(suite, resolution)
    assert len(experiments) == runs  # cpu-paper-shape: base + 18 rows x 3 rates at seed 0, before selection
    assert {e.config["task"]["name"] for e in experiments} == {suite.task["name"]}
    tiny = {e.config["params_target"]: e.trainable_params for e in experiments if e.config["method"] == "tinylora"}
    assert all(n == target for target, n in tiny.items())
    committed = REPO / "leaderboards" / name / "results"
    if committed.is_dir():  # every committed result is a run of this grid (all of it, once the grid is done)
        planned = {e.run_id for e in grid.tuned_grid(suite, resolution, committed)}
        files = {p.name.removesuffix(".json") for p in committed.glob("*.json")}
        assert files <= planned and (files == planned or suite.tune_on_first_seed)


class TaggedSFTTrainer(SFTTrainer):
    """A third-party engine of the sft algorithm, as a plugin would ship one: tags its curves."""

    name = "tagged-sft"
    summary = "the built-in SFT loop, curves tagged with the engine's name (test plugin)"

    def run_steps(self, **kwargs) -> None:
        super().run_steps(**kwargs)
        for point in kwargs["curves"]:
            point["engine"] = self.name


def test_a_suite_runs_built_in_trl_and_plugin_trainers(tmp_path, capsys, fresh_plugins):
    """Suites take any registered trainer: the TRL engine and one a plugin registers through the hook."""
    plugin = types.ModuleType("tagged_trainer_plugin")
    plugin.register_trainers = hookimpl(lambda register: register(TaggedSFTTrainer))
    fresh_plugins.host().add(plugin, "tagged-trainer")
    grid = 'methods = ["lora"]\ntrainers = ["sft", "trl-sft", "tagged-sft"]\nlearning_rates = [1e-3]'
    path = tiny_suite(tmp_path, grid, extra="base = false")
    toml = path / "suite.toml"  # TRL's SFTTrainer runs no step at all when rows exceed max_length
    toml.write_text(toml.read_text().replace("max_seq_len = 160", "max_seq_len = 384").replace("steps = 2", "steps = 1")
                    .replace("validation_limit = 3", "validation_limit = 0").replace("\nlimit = 4", "\nlimit = 1"))
    results = tmp_path / "results"
    assert main(["bench", str(path), "--isolation", "inline", "--results", str(results), "--strict"]) == 0
    docs, problems = R.load_results_dir(results)
    assert problems == []
    by_trainer = {d["config"]["trainer"]: d for d in docs}
    assert sorted(by_trainer) == ["sft", "tagged-sft", "trl-sft"]
    assert [(d["status"], d["budget"]["spent"]["optimizer_steps"]) for d in docs] == [("success", 1)] * 3, \
        [(d["config"]["trainer"], d["status"], d["error"]) for d in docs]
    assert [p["engine"] for p in by_trainer["tagged-sft"]["curves"]] == ["tagged-sft"]
    assert "lora/tagged-sft" in capsys.readouterr().out


def test_a_finished_failed_control_says_its_trainers_runs_can_only_read_not_tested(tmp_path):
    """The committed 6-step aiw quick board's control (lora/grpo) did not pass: with its tinylora@13/grpo run gone,
    a bench says that run can only give "not tested" comparisons, before running it; with the control's own
    run gone too, it says nothing (the control is not finished)."""
    import shutil

    store, suite_dir = tmp_path / "results", str(REPO / "benchmarks" / "cpu-pilots" / "quick-v2")
    shutil.copytree(REPO / "leaderboards" / "cpu-pilots" / "quick-v2" / "results", store,
                    ignore=shutil.ignore_patterns("logs"))
    suite = suites.load(suite_dir)
    by_row = {e.group_label: e.run_id for e in suites.expand(suite)}
    for name in (f"{by_row['tinylora@13/grpo']}.json", f"{by_row['tinylora@13/grpo']}.samples.jsonl"):
        (store / name).unlink()
    dry = bench_cli(suite_dir, "--results", str(store), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    text = " ".join(dry.stdout.split())
    assert ("Positive control not passed: the positive control lora/grpo did not train (flat-reward) (Δ +9.0, "
            "95% CI [+0.3, +21.5]); GRPO is not shown to learn on this model. The 1 GRPO run(s) still to run can "
            'only give comparisons that read "not tested" (--skip grpo leaves them out).') in text
    (store / f"{by_row['lora/grpo']}.json").unlink()
    dry = bench_cli(suite_dir, "--results", str(store), "--dry-run")
    assert dry.returncode == 0 and "Positive control not passed" not in dry.stdout

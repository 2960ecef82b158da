"""Suite files: parsing, validation errors that name file and key, grid expansion, shipped suites."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pefthub import suites
from pefthub.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
model = "tiny-random"
[task]
name = "basic_arithmetic"
[budget]
steps = 2
batch_size = 2
[grid]
methods = ["lora", "tinylora"]
learning_rates = [1e-3]
"""


def write_suite(tmp_path: Path, text: str, name: str = "mini") -> Path:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "suite.toml").write_text(textwrap.dedent(text))
    return path


def test_minimal_suite_gets_defaults(tmp_path):
    suite = suites.load(write_suite(tmp_path, MINIMAL))
    assert suite.name == "mini" and suite.model == "tiny-random"
    assert suite.budget["steps"] == 2 and suite.budget["batch_size"] == 2
    assert suite.budget["schedule"] == "constant" and suite.budget["generations"] >= 1
    assert suite.seeds == [0] and suite.include_base is True
    assert [m.name for m in suite.methods] == ["lora", "tinylora"]
    assert all(m.params == [None] and m.trainers == ["sft", "grpo"] for m in suite.methods)
    assert suite.eval["validation_limit"] == 0 and suite.eval["backend"] == "auto"


def test_per_method_overrides(tmp_path):
    suite = suites.load(write_suite(tmp_path, MINIMAL + """
        seeds = [0, 1]
        [eval]
        validation_limit = 8
        [resources]
        num_cpus = 2
        [methods.tinylora]
        params = [1, 13]
        learning_rates = [1e-2, 1e-3]
        trainers = ["grpo"]
        config = { r = 2 }
        resources = { memory_gb = 3 }
    """.replace("[grid]", "[grid]")))
    lora, tiny = suite.methods
    assert lora.learning_rates == [1e-3] and lora.params == [None] and lora.trainers == ["sft", "grpo"]
    assert tiny.params == [1, 13] and tiny.learning_rates == [1e-2, 1e-3] and tiny.trainers == ["grpo"]
    assert tiny.config == {"r": 2}
    assert tiny.resources == {"num_cpus": 2, "num_gpus": 0, "memory_gb": 3}
    assert lora.resources == {"num_cpus": 2, "num_gpus": 0, "memory_gb": None}


@pytest.mark.parametrize("text, expected", [
    ("colour = 'red'\n" + MINIMAL, ": colour: unknown key"),
    (MINIMAL + "colour = 'red'\n", "grid.colour: unknown key"),
    (MINIMAL.replace("steps = 2", "steps = 2\nstep_count = 3"), "budget.step_count: unknown key"),
    (MINIMAL.replace("steps = 2", "steps = -1"), "budget.steps: must be a positive integer (got -1)"),
    (MINIMAL.replace("steps = 2", "steps = 0"), "budget.steps: must be a positive integer"),
    (MINIMAL.replace("steps = 2", "steps = 2.5"), "budget.steps"),
    (MINIMAL.replace("steps = 2\n", ""), "budget.steps: missing"),
    (MINIMAL.replace("batch_size = 2", "batch_size = 2\nschedule = 'wavy'"), "budget.schedule"),
    (MINIMAL.replace('model = "tiny-random"\n', ""), "model: missing"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = [-1e-3]"), "grid.learning_rates: must be a number > 0 (got -0.001)"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = []"), "grid.learning_rates: must be a non-empty list"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = [1e-3, 1e-3]"), "has duplicates"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = [1e-3]\ntrainers = [3]"),
     "grid.trainers: must be a non-empty string (got 3)"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = [1e-3]\nseeds = [-1]"), "grid.seeds: must be a non-negative integer (got -1)"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = [1e-3, 1e-4]"),
     "eval.validation_limit: is 0 but method 'lora' has 2 learning rates"),
    (MINIMAL + "[methods.vera]\nparams = [3]\n", "methods.vera: configures a method that grid.methods does not list"),
    (MINIMAL.replace('"tinylora"]', '"no_such_method"]') + "[methods.tinylora]\nparams = [3]\n",
     "grid.methods: unknown method 'no_such_method' (registered: bitfit, full, lora,"),
    (MINIMAL + "[methods.lora]\nrank = 3\n", "methods.lora.rank: unknown key"),
    (MINIMAL + "[methods.lora]\nparams = [0]\n", "methods.lora.params: must be a positive integer (got 0)"),
    (MINIMAL + "[methods.lora]\nmethod = 'base'\n", "'base' is the untrained reference row"),
    (MINIMAL + "[eval]\nbackend = 'tgi'\n", "eval.backend: must be one of auto, fused, hf, vllm"),
    (MINIMAL + "[eval]\nlimit = 0\n", "eval.limit: must be a positive integer (got 0)"),
    (MINIMAL + "[resources]\nnum_gpus = -1\n", "resources.num_gpus: must be a number >= 0 (got -1)"),
    (MINIMAL + "[resources]\nmemory_gb = 0\n", "resources.memory_gb: must be a number > 0 (got 0)"),
    (MINIMAL.replace("learning_rates = [1e-3]", "learning_rates = [1e-3]\ntune_on_first_seed = 1"),
     "grid.tune_on_first_seed: must be true or false (got 1)"),
    (MINIMAL + "[eval]\nsplit = 'validation'\n", "eval.split: unknown key"),
    ("trainer_options = 3\n" + MINIMAL, "trainer_options: must be a table"),
    ("base = 'yes'\n" + MINIMAL, "base: must be true or false"),
])
def test_invalid_suites_name_file_and_key(tmp_path, text, expected):
    path = write_suite(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        suites.load(path)
    message = str(info.value)
    assert expected in message
    assert str(path / "suite.toml") in message
    assert "\n" not in message


def test_malformed_toml_is_one_line_with_line_number(tmp_path):
    path = write_suite(tmp_path, 'model = "tiny-random"\n[task\nname = "x"\n')
    with pytest.raises(ConfigError) as info:
        suites.load(path)
    message = str(info.value)
    assert message.startswith(f"{path / 'suite.toml'}: malformed TOML")
    assert "line 2" in message and "\n" not in message


def test_locate_by_name_path_or_file(tmp_path, monkeypatch):
    path = write_suite(tmp_path / "benchmarks", MINIMAL, name="named")
    monkeypatch.chdir(tmp_path)
    assert suites.locate("named") == Path("benchmarks") / "named"
    assert suites.locate(path) == path
    assert suites.locate(path / "suite.toml") == path
    with pytest.raises(ConfigError, match="suite 'nope' not found"):
        suites.locate("nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no suite.toml in this directory"):
        suites.locate(tmp_path / "empty")
    # a suite in a subdirectory is found by the name its file declares (the pilots under cpu-pilots/)
    pilot = write_suite(tmp_path / "benchmarks" / "pilots", 'name = "pilot-a"\n' + MINIMAL, name="a")
    assert suites.locate("pilot-a") == Path("benchmarks") / "pilots" / "a" == pilot.relative_to(tmp_path)
    write_suite(tmp_path / "benchmarks" / "other", 'name = "pilot-a"\n' + MINIMAL, name="a")
    with pytest.raises(ConfigError, match="suite 'pilot-a' is the name of several suites"):
        suites.locate("pilot-a")


@pytest.mark.parametrize("name", ["quick", "cpu-paper-shape", "paper-gsm8k"])
def test_shipped_suites_parse(name):
    suite = suites.load(REPO / "benchmarks" / name)
    assert suite.name == name
    assert suite.file.exists()


def test_shipped_suites_follow_the_issue():
    from pefthub.tasks import DEFAULT_TASK

    quick = suites.load(REPO / "benchmarks" / "quick")  # issue #24: the aiw task, splits from one distribution
    assert quick.model == "smollm2-135m-instruct"
    assert (quick.task["name"], quick.task["dataset"], quick.task["options"], quick.task["split_rule"]) == (
        "reasoning_gym", "aiw", {"max_entities": 3}, "hash")
    assert [m.method for m in quick.methods] == ["tinylora", "lora", "lora_xs", "vera", "bitfit",
                                                 "prompt_tuning", "full"]
    # SFT only, at the budget where cpu-paper-shape-v2's validation curves pass 90% (GRPO did not learn there)
    assert all(m.trainers == ["sft"] for m in quick.methods) and quick.seeds == [0] and quick.budget["steps"] == 20
    assert quick.positive_control is None
    assert next(m for m in quick.methods if m.method == "tinylora").params == [13]
    assert quick.eval["limit"] == quick.task["test_size"] == 100 and quick.eval["validation_limit"] == 0

    quick_v1 = suites.load(REPO / "benchmarks" / "cpu-pilots" / "quick-v1")  # the chain_sum board, kept
    assert quick_v1.name == "cpu-pilots-quick-v1" and quick_v1.task == DEFAULT_TASK
    assert [m.method for m in quick_v1.methods] == [m.method for m in quick.methods] and quick_v1.seeds == [0]

    shape = suites.load(REPO / "benchmarks" / "cpu-paper-shape")
    assert shape.model == quick.model and shape.task == DEFAULT_TASK
    tiny = next(m for m in shape.methods if m.method == "tinylora")
    assert tiny.params == [1, 13, 120]
    assert {m.method for m in shape.methods} == {"tinylora", "lora_xs", "lora", "vera", "bitfit", "prompt_tuning", "full"}
    assert shape.seeds == [0, 1, 2] and shape.eval["limit"] >= 400 and shape.eval["validation_limit"] > 0
    assert len({tuple(m.learning_rates) for m in shape.methods}) > 1  # LR grids differ per method

    paper = suites.load(REPO / "benchmarks" / "paper-gsm8k")
    assert paper.model == "Qwen/Qwen2.5-7B-Instruct" and paper.task["name"] == "gsm8k"
    assert paper.budget["generations"] == 4 and paper.budget["batch_size"] == 64
    assert paper.budget["max_new_tokens"] == 4096
    # 3 epochs over GSM8K train less the held-out validation problems, 64 problems per step
    assert paper.budget["steps"] == 3 * -(-(7473 - paper.task["validation_size"]) // 64)
    assert paper.trainer_options["grpo"]["beta"] == 0.0
    assert all(m.learning_rates == [1e-7, 5e-7, 1e-6, 5e-6, 1e-5, 1e-4, 2e-4] for m in paper.methods)
    assert paper.seeds == [0, 1, 2]
    assert next(m for m in paper.methods if m.method == "tinylora").params == [1, 13, 120]
    assert {m.method for m in paper.methods} == {"tinylora", "lora_xs", "lora", "full"}
    assert paper.resources["num_gpus"] >= 1 and paper.eval["backend"] == "vllm"


def test_label_of_matches_expand_labels():
    config = {"method": "tinylora", "params_target": 13, "trainer": "grpo", "learning_rate": 1e-3, "seed": 2}
    assert suites.label_of(config) == "tinylora@13/grpo/lr=0.001/seed=2"
    assert suites.label_of({"method": "base", "trainer": "none"}) == "base/none"
    assert suites.label_of(dict(config, variant="tiny-r4", params_target=None)) == "tiny-r4/grpo/lr=0.001/seed=2"


def test_a_row_may_set_its_own_trainer_options_over_the_suites(tmp_path):
    text = MINIMAL + """
        [trainer_options.grpo]
        temperature = 0.7
        [methods.tinylora.trainer_options.grpo]
        rollout_backend = "hf"
    """
    runs = suites.expand(suites.load(write_suite(tmp_path, text)))
    options = {(r.config["method"], r.config["trainer"]): r.config["trainer_options"] for r in runs
               if r.config["method"] != "base"}
    assert options[("tinylora", "grpo")]["rollout_backend"] == "hf"
    assert options[("tinylora", "grpo")]["temperature"] == 0.7  # the suite's own options still apply
    assert options[("lora", "grpo")]["rollout_backend"] == "auto"
    assert options[("tinylora", "sft")] == options[("lora", "sft")]
    plain = {r.label: r.run_id for r in suites.expand(suites.load(write_suite(tmp_path, MINIMAL + """
        [trainer_options.grpo]
        temperature = 0.7
    """, name="plain")))}
    assert all(plain[r.label] == r.run_id for r in runs if not r.label.startswith("tinylora/grpo"))


@pytest.mark.parametrize("table,message", [
    ("[methods.tinylora.trainer_options.ppo]\nbeta = 0.1", "methods.tinylora.trainer_options.ppo: this row does not "
                                                          "train with 'ppo'"),
    ("[methods.tinylora.trainer_options.grpo]\nbeta = -1", "methods.tinylora.trainer_options.grpo.beta: must be a number >= 0 (got -1)"),
    ("[methods.tinylora]\ntrainer_options = 3", "methods.tinylora.trainer_options: must be a table of tables"),
])
def test_a_rows_bad_trainer_options_name_the_row(tmp_path, table, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        suites.expand(suites.load(write_suite(tmp_path, MINIMAL + table)))


def test_quick_runs_each_untuned_method_at_the_rate_its_pilot_chose():
    """VeRA, BitFit and prompt tuning run on `quick` at the rates the committed quick-rates pilot chose on
    validation (benchmarks/cpu-pilots/quick-rates), read here with the reports' own selection rule."""
    from pefthub.report import stats
    from pefthub.report.table import read_table

    table = read_table(REPO / "leaderboards" / "cpu-pilots" / "quick-rates" / "results")
    chosen = {r.label: [r.learning_rate] for r in table.rows if not r.is_base and r.lr_selection == stats.LR_SELECTED}
    quick = suites.load(REPO / "benchmarks" / "quick")
    assert {f"{m.method}/sft": m.rates("sft") for m in quick.methods if f"{m.method}/sft" in chosen} == chosen
    assert set(chosen) == {"vera/sft", "bitfit/sft", "prompt_tuning/sft"}


def test_the_committed_quick_results_are_exactly_the_suites_runs():
    """`make bench` reruns nothing on a clone: the aiw quick board expands to exactly the run ids committed
    under leaderboards/quick/results (so an edit to the suite that changes a run shows up here)."""
    from pefthub import results

    committed = {p.stem for p in (REPO / "leaderboards" / "quick" / "results").glob("*.json")}
    runs = suites.expand(suites.load(REPO / "benchmarks" / "quick"))
    assert len(runs) == 8 and {r.run_id for r in runs} == committed
    assert all(results.read_result(REPO / "leaderboards" / "quick" / "results" / f"{rid}.json")["status"] == "success"
               for rid in committed)

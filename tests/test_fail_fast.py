"""Bad input fails fast, in one line, before any weights, model or dataset load.

Budgets are counted without weights (closed forms, or the meta device) and refused above the
method's ceiling; model names resolve locally first; every CLI command checks all its arguments
before loading anything. The property-based tests feed generated bad arguments and malformed suite
files through the real CLI entry point in-process, with every loader patched to fail loudly.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import socket
import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pefthub import plugins
from pefthub.cli import main
from pefthub.errors import ConfigError
from pefthub.methods import Method
from pefthub.models import known_names, meta_model, resolve_name
from pefthub.planning import plan_method, resolve_method

METHODS = ("tinylora", "lora", "lora_xs", "vera", "bitfit", "prompt_tuning", "full")
SMOLLM2_PARAMS = 134_515_008
#: Far below any weight matrix of Qwen2.5-7B (the smallest, k_proj, is 512 × 3584 fp32 = 7.3 MB).
REAL_TENSOR_BOUND = 1 << 20


class LargestRealTensor(TorchDispatchMode):
    """Records the largest non-meta tensor any torch operation returns inside the block (every
    tensor torch creates, factories included, passes through the dispatcher)."""

    def __init__(self):
        super().__init__()
        self.bytes, self.op = 0, None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                size = t.untyped_storage().nbytes()
                if size > self.bytes:
                    self.bytes, self.op = size, str(func)
        return out


def method(name):
    return plugins.methods().get(name)


# ---- budgets ---------------------------------------------------------------------------------
def test_the_allocation_tracker_sees_real_tensors():
    with LargestRealTensor() as seen:
        torch.zeros(1024, 1024)
    assert seen.bytes == 4 << 20


@pytest.mark.parametrize("name", ["tinylora", "lora", "vera", "prompt_tuning", "lora_xs"])
def test_a_budget_larger_than_the_model_is_refused_at_once_naming_the_ceiling(name):
    model = meta_model("smollm2-135m-instruct")
    with LargestRealTensor() as seen, pytest.raises(ConfigError) as err:
        resolve_method(name, model, params=10_000_000_000)
    ceiling = method(name).max_params(model)
    assert str(err.value) == (f"impossible budget: method '{name}' cannot train ~10,000,000,000 parameters on "
                              f"smollm2-135m-instruct (LlamaForCausalLM); the largest budget it supports there is "
                              f"{ceiling:,}")
    assert ceiling <= SMOLLM2_PARAMS
    assert seen.bytes < REAL_TENSOR_BOUND


def test_the_ceiling_itself_is_a_valid_budget():
    model = meta_model("smollm2-135m-instruct")
    m, count = resolve_method("tinylora", model, params=SMOLLM2_PARAMS)
    assert abs(count - SMOLLM2_PARAMS) < 210 and m.config.weight_tying == 0.0  # 210 untied groups, nearest u


def test_an_explicit_config_above_the_ceiling_is_refused():
    with pytest.raises(ConfigError, match=r"would train 10,000,000,000 parameters .* supports there is 134,515,008"):
        resolve_method("tinylora", meta_model("smollm2-135m-instruct"),
                       overrides={"u": 10_000_000_000, "weight_tying": 1.0})


def test_planning_every_method_on_a_7b_model_allocates_no_real_tensor():
    budgets = {"tinylora": [13, 100_352], "lora_xs": [13], "prompt_tuning": [3584 * 4]}
    with LargestRealTensor() as seen:
        for name in METHODS:
            plan_method("qwen2.5-7b-instruct", name)
            for params in budgets.get(name, []):
                assert plan_method("qwen2.5-7b-instruct", name, params=params).trainable_params == params
    assert seen.bytes < REAL_TENSOR_BOUND, f"{seen.op} returned a {seen.bytes:,}-byte tensor"


CONFIGS = [
    ("tinylora", {}), ("tinylora", {"u": 5, "weight_tying": 0.0}), ("tinylora", {"u": 3, "weight_tying": 0.5, "r": 4}),
    ("tinylora", {"save_projection": False}), ("tinylora", {"target_modules": ["q_proj", "down_proj"]}),
    ("lora", {"r": 3}), ("lora", {"r": 2, "target_modules": ["q_proj", "v_proj"]}),
    ("vera", {"r": 16}), ("vera", {"r": 4, "target_modules": ["k_proj"]}),
    ("prompt_tuning", {"num_virtual_tokens": 3}),
    ("lora_xs", {"r": 3}), ("lora_xs", {"r": 2, "n_modules": 5}), ("lora_xs", {"r": 100}),
    ("bitfit", {}), ("bitfit", {"target_modules": ["q_proj", "up_proj"]}),
    ("bitfit", {"target_modules": ["q_proj"], "add_missing_biases": False}),
    ("full", {}), ("full", {"train_embeddings": False}),
]


@pytest.mark.parametrize("model", ["tiny-random", "tiny-random-qwen2"])
@pytest.mark.parametrize("name, fields", CONFIGS)
def test_closed_form_counts_equal_applying_the_method_on_the_meta_device(model, name, fields):
    cls = method(name)
    config = cls.config_class.from_dict(fields)
    meta = meta_model(model)
    try:
        generic = Method.count_params.__func__(cls, meta, config)
    except Exception as exc:  # the closed form must refuse exactly when applying does
        with pytest.raises(type(exc)):
            cls.count_params(meta, config)
        return
    assert cls.count_params(meta, config) == generic
    assert cls.plan_adapter_bytes(meta, config) == Method.plan_adapter_bytes.__func__(cls, meta, config)


# ---- model names -----------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network probed: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)


def test_a_typo_gets_the_closest_known_names_without_the_network(no_network):
    with pytest.raises(ConfigError) as err:
        resolve_name("smollm2-135m-instrct")
    assert str(err.value).endswith("did you mean smollm2-135m-instruct or qwen2.5-7b-instruct?")
    with pytest.raises(ConfigError, match="unknown model 'no-such-model'.*known here: .*tiny-random"):
        resolve_name("no-such-model")


def test_a_hub_id_is_not_asked_for_when_the_hub_is_off(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"'owner/model' is not in the local Hugging Face cache and the hub is off "
                                          r"\(HF_HUB_OFFLINE is set\)"):
        resolve_name("owner/model")


def test_an_unreachable_hub_is_probed_once(monkeypatch):
    calls = []

    def unreachable(address, timeout=None):
        calls.append(address)
        raise OSError(-2, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(ConfigError, match=r"the hub is not reachable from here \(huggingface.co: Name or service"):
        resolve_name("owner/model")
    assert len(calls) == 1


def test_known_names_resolve_locally(no_network):
    assert resolve_name("tiny-random") == ("tiny", "tiny-random")
    assert resolve_name("smollm2-135m-instruct") == ("embedded", "smollm2-135m-instruct")
    assert resolve_name("qwen2.5-7b-instruct")[0] == "shipped"
    assert {"smollm2-135m-instruct", "qwen2.5-7b-instruct", "tiny-random"} <= set(known_names())


# ---- the CLI: every command checks its arguments before loading anything ---------------------
class LoadedTooEarly(BaseException):
    """Raised by a patched loader; a BaseException so no ``except Exception`` can hide it."""


@pytest.fixture(scope="module")
def guarded_loaders():
    """Every way a model, tokenizer or dataset gets loaded fails the test (module-wide, so
    hypothesis examples share it)."""
    import datasets
    import transformers

    from pefthub import models
    from pefthub.tasks.base import Task

    def refuse(what):
        def loader(*args, **kwargs):
            raise LoadedTooEarly(what)
        return loader

    patches = [(models, "load_model"), (models, "embedded_model_dir"), (Task, "examples"),
               (datasets, "load_dataset"), (transformers.AutoModelForCausalLM, "from_pretrained"),
               (transformers.AutoTokenizer, "from_pretrained")]
    with pytest.MonkeyPatch.context() as mp:
        for owner, attr in patches:
            mp.setattr(owner, attr, refuse(f"{getattr(owner, '__name__', owner)}.{attr}"))
        yield


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``pefthub ARGV`` in-process: exit status and everything it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue() + err.getvalue()


def assert_one_line_error(argv: list[str]) -> str:
    code, output = run_cli(argv)
    errors = [line for line in output.splitlines() if "error:" in line]
    assert code not in (0, None), f"pefthub {argv} exited 0:\n{output}"
    assert len(errors) == 1, f"pefthub {argv} printed {len(errors)} error lines:\n{output}"
    assert "Traceback" not in output
    assert "unexpected" not in errors[0], errors[0]  # a crash, not a refusal
    return errors[0]


def test_eval_rejects_a_bad_limit_before_loading(guarded_loaders):
    for limit in ("0", "-5"):
        assert assert_one_line_error(["eval", "--limit", limit]) == \
            f"error: eval.limit: must be a positive integer (got {int(limit)})"


def test_train_and_plan_refuse_a_huge_budget_before_loading(guarded_loaders):
    for command in (["plan", "--model", "smollm2-135m-instruct"], ["train"]):
        for name in ("tinylora", "lora"):
            line = assert_one_line_error(command + ["--method", name, "--params", "10000000000"])
            assert "the largest budget it supports there is 134,515,008" in line


def test_a_shipped_architecture_cannot_start_a_training_run(guarded_loaders, tmp_path):
    line = assert_one_line_error(["train", "--model", "qwen2.5-7b-instruct", "--results", str(tmp_path)])
    assert "known only by its architecture" in line
    # The paper suite's hub id, with no weights in the HF cache: the line says how to get them.
    line = assert_one_line_error(["train", "--model", "Qwen/Qwen2.5-7B-Instruct", "--results", str(tmp_path)])
    assert "known only by its architecture" in line and "`hf download Qwen/Qwen2.5-7B-Instruct`" in line
    assert not list(tmp_path.iterdir())


_WORD = st.text(alphabet=string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=12)
_UNKNOWN_MODEL = _WORD.filter(lambda w: w not in known_names() and w not in ("tiny-random", "tiny-random-qwen2"))
_UNKNOWN_METHOD = _WORD.map(lambda w: "zz" + w)
_UNKNOWN_TASK = _WORD.map(lambda w: "zz" + w)
_NON_POSITIVE = st.integers(max_value=0).map(str)
_NEGATIVE = st.integers(max_value=-1).map(str)
_NOT_AN_INT = st.sampled_from(["abc", "1.5", "", "1e3", "--"])
_BAD_KV = st.sampled_from(["novalue", "=3", " =1"])

#: command -> (valid arguments, {option: strategy of bad values})
BAD_ARGUMENTS = {
    "plan": (["--model", "tiny-random", "--method", "lora"], {
        "--model": _UNKNOWN_MODEL, "--method": _UNKNOWN_METHOD, "--params": st.one_of(_NON_POSITIVE, _NOT_AN_INT,
        st.integers(min_value=10**9, max_value=10**15).map(str)), "--set": st.one_of(_BAD_KV, _WORD.map(lambda w: f"zz{w}=1")),
    }),
    "eval": (["--model", "tiny-random"], {
        "--model": _UNKNOWN_MODEL, "--limit": st.one_of(_NON_POSITIVE, _NOT_AN_INT), "--max-new-tokens": _NON_POSITIVE,
        "--batch-size": _NON_POSITIVE, "--split": _WORD.map(lambda w: "zz" + w), "--backend": _WORD.map(lambda w: "zz" + w),
        "--task": st.one_of(_UNKNOWN_TASK, st.sampled_from(['{"name": 3}', "{not json", '{"name": "chain_sum", "zz": 1}'])),
        "--param": st.one_of(_BAD_KV, _WORD.map(lambda w: f"zz{w}=1")),
    }),
    "train": (["--model", "tiny-random", "--method", "lora", "--trainer", "sft"], {
        "--model": _UNKNOWN_MODEL, "--method": _UNKNOWN_METHOD, "--trainer": _WORD.map(lambda w: "zz" + w),
        "--params": st.one_of(_NON_POSITIVE, st.integers(min_value=10**9, max_value=10**15).map(str)),
        "--steps": _NON_POSITIVE, "--batch-size": _NON_POSITIVE, "--generations": _NON_POSITIVE,
        "--max-new-tokens": _NON_POSITIVE, "--max-seq-len": _NON_POSITIVE, "--eval-limit": _NON_POSITIVE,
        "--eval-max-new-tokens": _NON_POSITIVE, "--seed": _NEGATIVE, "--eval-backend": _WORD.map(lambda w: "zz" + w),
        "--lr": st.floats(max_value=0.0).map(repr), "--warmup-ratio": st.one_of(
            st.floats(min_value=1.0, allow_nan=False), st.floats(max_value=-1e-9)).map(repr),
        "--task": _UNKNOWN_TASK, "--set": _WORD.map(lambda w: f"zz{w}=1"), "--option": _WORD.map(lambda w: f"zz{w}=1"),
        "--schedule": _WORD.map(lambda w: "zz" + w),
    }),
    "methods": ([], {"": _UNKNOWN_METHOD}),
    "tasks": ([], {"": _UNKNOWN_TASK}),
    "trainers": ([], {"": _WORD.map(lambda w: "zz" + w)}),
    "bench": (["--dry-run"], {"": _WORD.map(lambda w: "zz-no-suite-" + w)}),
    "site": (["build", "leaderboards"], {"--max-samples": st.integers(max_value=-1).map(str)}),
    "health": ([], {"": _WORD.map(lambda w: "zz-no-results-" + w)}),
    "export": (["--format", "parquet"], {"": _WORD.map(lambda w: "zz-no-results-" + w),
                                         "--format": _WORD.map(lambda w: "zz" + w)}),
    "plugins": ([], {"": _WORD.map(lambda w: "zz" + w)}),  # takes no argument: argparse refuses it
    "compare": (["base", "--suite", "quick"], {
        "": _WORD.map(lambda w: "zz-no-row-" + w), "--suite": _WORD.map(lambda w: "zz-no-suite-" + w),
        "--show": _NEGATIVE}),
    "findings": (["--stdout"], {"": _WORD.map(lambda w: "zz-no-suite-" + w)}),
    "probe": (["--model", "tiny-random"], {
        "--model": _UNKNOWN_MODEL, "--task": _UNKNOWN_TASK, "--generations": st.integers(max_value=1).map(str),
        "--prompts": _NON_POSITIVE, "--max-new-tokens": _NON_POSITIVE, "--seed": _NEGATIVE,
        "--temperature": st.floats(max_value=0.0).map(repr), "--task-param": _BAD_KV,
        "--from": _WORD.map(lambda w: "zz-no-file-" + w + ".toml")}),
}


def test_every_command_gets_bad_arguments():
    from pefthub.cli import _command_modules

    # a PASSTHROUGH command (lm-eval) hands its arguments to another program's parser unread
    assert {m.NAME for m in _command_modules() if not getattr(m, "PASSTHROUGH", False)} == set(BAD_ARGUMENTS)


@st.composite
def bad_invocations(draw):
    command = draw(st.sampled_from(sorted(BAD_ARGUMENTS)))
    valid, options = BAD_ARGUMENTS[command]
    option = draw(st.sampled_from(sorted(options)))
    value = draw(options[option])
    if option == "":  # a positional argument
        return [command, value, *valid]
    args = list(valid)
    if option in args:  # replace the valid value
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    return [command, *args]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=bad_invocations())
def test_bad_arguments_to_any_command_fail_in_one_line_before_loading(guarded_loaders, argv):
    assert_one_line_error(_equals_form(argv))


BAD_OPTIONS = {opt for _, options in BAD_ARGUMENTS.values() for opt in options if opt}


def _equals_form(argv: list[str]) -> list[str]:
    """``--opt VALUE`` as ``--opt=VALUE`` so a generated value starting with '-' stays a value."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in BAD_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


# ---- malformed suite files -------------------------------------------------------------------
VALID_SUITE = {
    "model": "tiny-random",
    "task": {"name": "chain_sum"},
    "budget": {"steps": 1, "batch_size": 2},
    "grid": {"methods": ["lora", "tinylora"], "learning_rates": [1e-3], "trainers": ["sft"]},
    "methods": {"tinylora": {"params": [13]}},
}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                 else repr(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def toml_text(doc: dict) -> str:
    """A suite document as TOML (scalars first, then one [table] per dict, nested tables dotted)."""
    lines = [f"{json.dumps(k)} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]

    def table(prefix: str, body: dict) -> None:
        lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {toml_value(v)}" for k, v in body.items() if not isinstance(v, dict))
        for k, v in body.items():
            if isinstance(v, dict):
                table(f"{prefix}.{json.dumps(k)}", v)

    for k, v in doc.items():
        if isinstance(v, dict):
            table(json.dumps(k), v)
    return "\n".join(lines) + "\n"


_WRONG_TYPE = st.one_of(st.text(max_size=5), st.booleans(), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=1))
#: (path, strategy of values that are invalid there)
SUITE_MUTATIONS = [
    (("model",), st.one_of(_UNKNOWN_MODEL, st.integers(), st.just(""), _WORD.map(lambda w: f"owner/zz{w}"))),
    (("task", "name"), st.one_of(_UNKNOWN_TASK, st.integers())),
    (("task", "max_digits"), st.integers(max_value=0)),
    (("budget", "steps"), st.one_of(st.integers(max_value=0), st.floats(), _WRONG_TYPE)),
    (("budget", "batch_size"), st.one_of(st.integers(max_value=0), _WRONG_TYPE)),
    (("budget", "max_seq_len"), st.integers(max_value=0)),
    (("budget", "schedule"), _WORD.map(lambda w: "zz" + w)),
    (("budget", "warmup_ratio"), st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), _WRONG_TYPE)),
    (("eval", "limit"), st.one_of(st.integers(max_value=0), _WRONG_TYPE)),
    (("eval", "backend"), _WORD.map(lambda w: "zz" + w)),
    (("grid", "methods"), st.one_of(st.just([]), _UNKNOWN_METHOD.map(lambda m: [m]),
                                    _UNKNOWN_METHOD.map(lambda m: ["tinylora", m]))),
    (("grid", "learning_rates"), st.one_of(st.just([]), st.lists(st.floats(max_value=0.0), min_size=1, max_size=2),
                                           st.just([1e-3, 1e-3]))),
    (("grid", "trainers"), _WORD.map(lambda w: ["zz" + w])),
    (("grid", "seeds"), st.lists(st.integers(max_value=-1), min_size=1, max_size=2)),
    (("grid", "params"), st.one_of(st.lists(st.integers(max_value=0), min_size=1, max_size=1),
                                   st.integers(min_value=10**10, max_value=10**14).map(lambda n: [n]))),
    (("methods", "tinylora", "params"), st.integers(min_value=10**10, max_value=10**14).map(lambda n: [n])),
    (("methods", "lora", "config"), st.one_of(_WORD.map(lambda w: {"zz" + w: 1}), st.integers(max_value=0).map(
        lambda r: {"r": r}))),
    (("methods", "zzorphan"), st.just({"params": [3]})),
    (("grid", "zzunknown"), st.integers()),
    (("zzunknown",), st.integers()),
]


@st.composite
def malformed_suites(draw):
    doc = json.loads(json.dumps(VALID_SUITE))
    mutations = draw(st.lists(st.sampled_from(range(len(SUITE_MUTATIONS))), min_size=1, max_size=2, unique=True))
    for index in mutations:
        path, values = SUITE_MUTATIONS[index]
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = draw(values)
    text = toml_text(doc)
    if draw(st.booleans()) and draw(st.integers(0, 9)) == 0:  # now and then, broken TOML syntax
        cut = draw(st.integers(1, len(text) - 1))
        text = text[:cut] + draw(st.sampled_from(["[", "= =", '"', "\n[grid\n"])) + text[cut:]
    return text


def test_the_valid_suite_is_valid(tmp_path, guarded_loaders):
    (tmp_path / "suite.toml").write_text(toml_text(VALID_SUITE))
    code, output = run_cli(["plan", str(tmp_path)])
    assert code == 0, output


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=malformed_suites(), command=st.sampled_from([["plan"], ["bench", "--dry-run"]]))
def test_malformed_suites_fail_in_one_line_before_loading(tmp_path_factory, guarded_loaders, text, command):
    path = tmp_path_factory.mktemp("suite")
    (path / "suite.toml").write_text(text)
    line = assert_one_line_error([command[0], str(path), *command[1:], *(
        ["--results", str(path / "results")] if command[0] == "bench" else [])])
    assert str(path / "suite.toml") in line


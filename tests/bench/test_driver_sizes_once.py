"""The driver validates and sizes a suite's runs once; the child that runs one trusts its resolved config."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest

from pefthub import models, planning, runner, suites
from pefthub.executors.local import LocalExecutor

SUITE = """
model = "tiny-random"
[task]
name = "basic_arithmetic"
[budget]
steps = 1
batch_size = 2
[eval]
limit = 2
[grid]
methods = ["lora", "tinylora"]
trainers = ["sft"]
learning_rates = [1e-3]
[methods.tinylora]
params = [13]
"""


class _StopBeforeWeights(Exception):
    """Raised where the run would load weights: everything the test counts happens before."""


@pytest.fixture
def counted(monkeypatch):
    """Calls of the method sizing (:func:`pefthub.planning.resolve_method`: budget search and count) and
    of the weightless model builds (:func:`pefthub.models.meta_model`) that config checks make."""
    calls: Counter = Counter()
    for owner, name in ((planning, "resolve_method"), (models, "meta_model")):
        def call(*args, _real=getattr(owner, name), _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)
    return calls


def test_the_child_does_not_repeat_the_drivers_checks_and_sizing(tmp_path, monkeypatch, counted):
    (tmp_path / "suite.toml").write_text(textwrap.dedent(SUITE))
    runs = [r for r in suites.expand(suites.load(tmp_path)) if r.config["method"] != suites.BASE_METHOD]
    assert [r.config["method"] for r in runs] == ["lora", "tinylora"]
    assert counted["resolve_method"] == 2  # the driver: once per row

    counted.clear()
    monkeypatch.setattr(models, "load_model", lambda *a, **k: (_ for _ in ()).throw(_StopBeforeWeights("weights")))
    docs = list(LocalExecutor(isolation="inline").run(runs, suite="unit", results_dir=tmp_path / "results",
                                                       events=lambda experiment, event: None))
    assert [d["error"] for d in docs] == ["_StopBeforeWeights: weights"] * 2  # each child got as far as loading
    assert counted == Counter(), f"the child repeated the driver's work: {dict(counted)}"

    # The same config given by hand (`pefthub train`) is checked and sized in full: the counters count.
    runner.prepare(runs[1].config)
    assert counted["resolve_method"] == 1 and counted["meta_model"] >= 1


def test_a_resolved_config_prepares_to_what_the_full_checks_give(tmp_path):
    (tmp_path / "suite.toml").write_text(textwrap.dedent(SUITE))
    for run in suites.expand(suites.load(tmp_path)):
        full, trusted = runner.prepare(run.config), runner.prepare(run.config, resolved=True)
        assert (trusted.method_cls, trusted.learning_rate, trusted.seed, trusted.evaluation) == \
            (full.method_cls, full.learning_rate, full.seed, full.evaluation)
        if full.method_cls is not None:
            assert trusted.method_config == full.method_config
            assert trusted.trainer.options == full.trainer.options and trusted.budget == full.budget

"""Benchmark-wide settings: no hub, the machine's cores for torch, and ``--performance-doc``."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

#: The figures in docs/performance.md are for two threads (the CI machines have two cores).
THREADS = int(os.environ.get("PEFTHUB_BENCH_THREADS", "2"))
torch.set_num_threads(THREADS)


def pytest_addoption(parser):
    parser.addoption("--performance-doc", default=None, metavar="PAGE",
                     help="after the run, merge its results into PAGE's data file (PAGE with .json) and "
                          "re-render PAGE (e.g. docs/performance.md); needs --benchmark-json")


def pytest_benchmark_update_json(config, benchmarks, output_json):
    page = config.getoption("--performance-doc")
    if page:
        import perfdoc  # benchmarks/perfdoc.py, beside this file

        perfdoc.update(page, output_json)


def pytest_configure(config):
    if config.getoption("--performance-doc") and not (config.getoption("benchmark_json", None)
                                                      or config.getoption("benchmark_autosave", None)
                                                      or config.getoption("benchmark_save", None)):
        raise pytest.UsageError("--performance-doc needs --benchmark-json=FILE (or --benchmark-autosave)")

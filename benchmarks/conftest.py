"""Benchmark-wide settings: no hub, the machine's cores for torch, and ``--performance-doc``."""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

#: The figures in docs/performance.md are for two threads (the CI machines have two cores).
THREADS = int(os.environ.get("PEFTHUB_BENCH_THREADS", "2"))
torch.set_num_threads(THREADS)


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, the machine's busy CPU seconds, this process's and its reaped children's CPU
    seconds), or None where /proc/stat is not there."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    if len(fields) > 9:
        busy -= fields[8] + fields[9]  # guest time is counted in user time already
    own = os.times()
    return (time.monotonic(), busy / os.sysconf("SC_CLK_TCK"),
            own.user + own.system + own.children_user + own.children_system)


@pytest.fixture(autouse=True)
def _idle_state(request):
    """Record in each benchmark's ``extra_info`` how many CPU cores other processes kept busy while it
    ran (``perfdoc.IDLE_KEY``; docs/performance.md says whether the machine was idle)."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    import perfdoc

    bench = request.getfixturevalue("benchmark")
    start = _cpu_seconds()
    yield
    end = _cpu_seconds()
    if start and end and end[0] > start[0]:
        others = ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0])
        bench.extra_info[perfdoc.IDLE_KEY] = round(max(0.0, others), 2)


def pytest_addoption(parser):
    parser.addoption("--performance-doc", default=None, metavar="PAGE",
                     help="after the run, merge its results into PAGE's data file (PAGE with .json) and "
                          "re-render PAGE (e.g. docs/performance.md); needs --benchmark-json")
    parser.addoption("--site-runs", default="101", metavar="N[,N...]",
                     help="results-directory sizes for benchmarks/test_site_scale.py (docs/performance.md: 5001)")


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

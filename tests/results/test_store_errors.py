"""A results store that cannot be written (full disk, read-only, vanished): one line naming the store
and the file, the run left not done (no samples file without its document), finished results
untouched -- at every step of writing a result, in the child process and through `pefthub bench`."""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

import pytest

from pefthub import results as R

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from test_bench import doc_for, experiment, run_ok  # noqa: E402

FULL = os.strerror(errno.ENOSPC)
SAMPLES = [{"split": "test", "id": "q0", "correct": True}]


class FailAt:
    """Make the ``nth`` call of ``os.<name>`` (or ``tempfile.mkstemp``) raise ENOSPC."""

    def __init__(self, monkeypatch, name: str, nth: int):
        owner = tempfile if name == "mkstemp" else os
        self.real, self.calls, self.nth = getattr(owner, name), 0, nth
        monkeypatch.setattr(owner, name, self)

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.nth:
            raise OSError(errno.ENOSPC, FULL)
        return self.real(*args, **kwargs)


#: Each step of write_result, in order: (function, which call, the file being written).
STEPS = {
    "samples temp file": ("mkstemp", 1, "samples"),
    "samples data": ("fsync", 1, "samples"),
    "samples rename": ("replace", 1, "samples"),
    "document temp file": ("mkstemp", 2, "document"),
    "document data": ("fsync", 2, "document"),
    "document rename": ("replace", 2, "document"),
    "directory sync": ("fsync", 3, "document"),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_a_write_failing_at_any_step_leaves_the_run_not_done(tmp_path, monkeypatch, step):
    store = tmp_path / "store"
    done = experiment(seed=0)
    R.write_result(store, doc_for(done, test=0.5), SAMPLES)
    before = {p.name: p.read_bytes() for p in store.iterdir()}
    run = experiment(seed=1)
    name, nth, which = STEPS[step]
    FailAt(monkeypatch, name, nth)
    with pytest.raises(R.StoreWriteError) as caught:
        R.write_result(store, doc_for(run, test=0.7), SAMPLES)
    monkeypatch.undo()
    file = R.samples_path(store, run.run_id) if which == "samples" else R.result_path(store, run.run_id)
    assert str(caught.value) == f"cannot write results to {store}: {file}: {FULL}"
    assert {p.name: p.read_bytes() for p in store.iterdir()} == before  # nothing of the run, no temp file


def test_a_vanished_store_names_the_store(tmp_path, monkeypatch):
    store = tmp_path / "store"
    store.mkdir()
    real = os.replace

    def vanish(src, dst):
        real(src, dst)
        for p in store.iterdir():
            p.unlink()
        store.rmdir()

    monkeypatch.setattr(os, "replace", vanish)
    run = experiment()
    with pytest.raises(R.StoreWriteError) as caught:
        R.write_result(store, doc_for(run, test=0.5))
    assert str(caught.value).startswith(f"cannot write results to {store}: {R.result_path(store, run.run_id)}: ")


def run_on_a_full_disk(config, *, suite, results_dir, progress=None):
    """The child's view of a disk that fills when the run writes its document."""
    real = os.replace

    def full(src, dst):
        if str(dst).endswith(R.RESULT_SUFFIX):
            raise OSError(errno.ENOSPC, FULL)
        return real(src, dst)

    os.replace = full
    return run_ok(config, suite=suite, results_dir=results_dir, progress=progress)


def test_a_full_disk_in_the_child_reaches_the_driver_as_one_error(tmp_path):
    from pefthub.executors.local import LocalExecutor

    run = experiment()
    executor = LocalExecutor(run_function=f"{__name__}:run_on_a_full_disk")
    with pytest.raises(R.StoreWriteError) as caught:
        list(executor.run([run], suite="unit", results_dir=tmp_path, events=lambda e, ev: None))
    assert str(caught.value) == f"cannot write results to {tmp_path}: {R.result_path(tmp_path, run.run_id)}: {FULL}"
    assert [p.name for p in tmp_path.iterdir() if p.name != "logs"] == []  # no document, no orphan samples

"""Claims on the runs of a shared results store: which `pefthub bench` runs each pending run.

A claim is a file ``<store>/.claims/<run_id>.<generation>.claim`` created only if absent (written
to a temp file, then hard-linked into place: ``link`` fails on an existing name atomically on local
filesystems and NFS alike), holding the claimer's host, pid, the pid's start time and when the
claim was made; its modification time is the
heartbeat, refreshed every :data:`HEARTBEAT_SECONDS` while the holder lives. The highest
generation of a run decides:

* ``.claim`` and the holder is alive -> held by that process;
* ``.claim`` and the holder is dead (same host, its pid gone or reused) or silent (no heartbeat for
  :data:`STALE_SECONDS`) -> free: the claimer creates generation + 1 (only if absent), so of two
  reclaimers exactly one wins, and the winner removes the older generations;
* ``.released`` (a holder gave the run back unfinished: cancelled, stopped) or none -> free.

A finished result remains the only truth: the claim only decides who computes a pending run, and a
claimer re-reads the result after claiming (see :func:`pefthub.grid.execute`). Hand-written because
no maintained library offers lease files that work across machines over a shared directory (the
``filelock`` package relies on ``flock``/``fcntl`` locks, which NFS does not reliably honour).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pefthub.results import StoreWriteError, utc_now

CLAIMS_DIR = ".claims"
CLAIM_SUFFIX = ".claim"
RELEASED_SUFFIX = ".released"
#: How often a holder refreshes the heartbeat of its claims.
HEARTBEAT_SECONDS = 30.0
#: A claim whose heartbeat is older than this is taken over, whichever host holds it (ten minutes:
#: twenty missed heartbeats, far above NFS attribute caching and usual clock skew).
STALE_SECONDS = 600.0


def claims_dir(store: str | os.PathLike) -> Path:
    return Path(store) / CLAIMS_DIR


def _process_start(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run's claim, read back from its file."""

    run_id: str
    generation: int
    path: Path
    host: str | None
    pid: int | None
    pid_started: float | None
    claimed_at: str | None
    heartbeat: float            # the file's modification time (seconds since the epoch)
    released: bool = False

    def describe(self) -> str:
        who = f"{self.host} pid {self.pid}" if self.host else "an unknown process"
        return f"{who}, since {self.claimed_at}" if self.claimed_at else who

    def stale_reason(self, now: float | None = None) -> str | None:
        """Why this claim may be taken over (``None`` while its holder is alive and beating)."""
        if self.released:
            return "released"
        now = time.time() if now is None else now
        if now - self.heartbeat > STALE_SECONDS:
            return f"no heartbeat for {now - self.heartbeat:.0f} s"
        if self.host == socket.gethostname() and self.pid is not None:
            import psutil

            try:
                proc = psutil.Process(self.pid)
                alive = proc.status() != psutil.STATUS_ZOMBIE
                started = proc.create_time()
            except psutil.Error:
                return f"holder pid {self.pid} is gone"
            if not alive:
                return f"holder pid {self.pid} is gone"
            if self.pid_started is not None and abs(started - self.pid_started) > 1.0:
                return f"holder pid {self.pid} is gone (the pid now belongs to another process)"
        return None


def _generations(store: Path, run_id: str) -> list[tuple[int, Path, bool]]:
    """(generation, path, released) of every claim file of ``run_id``, highest generation first."""
    prefix = f"{run_id}."
    out = []
    try:
        names = os.listdir(claims_dir(store))
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith(prefix):
            continue
        gen, _, suffix = name[len(prefix):].partition(".")
        if gen.isdigit() and f".{suffix}" in (CLAIM_SUFFIX, RELEASED_SUFFIX):
            out.append((int(gen), claims_dir(store) / name, f".{suffix}" == RELEASED_SUFFIX))
    return sorted(out, key=lambda g: (g[0], not g[2]), reverse=True)


def _read_holder(run_id: str, generation: int, path: Path, released: bool) -> Holder:
    """Raises FileNotFoundError when the file went away meanwhile. A file whose content cannot be
    read (edited by hand, written by something else) is judged by its heartbeat only."""
    st = os.stat(path)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(info, dict):
            info = {}
    except FileNotFoundError:
        raise
    except (OSError, ValueError):
        info = {}
    pid = info.get("pid")
    return Holder(run_id, generation, path, info.get("host"), pid if isinstance(pid, int) else None,
                  info.get("pid_started"), info.get("claimed_at"), st.st_mtime, released)


def holder(store: str | os.PathLike, run_id: str) -> Holder | None:
    """The current (highest-generation) claim of ``run_id``, or ``None`` when it was never claimed."""
    for gen, path, released in _generations(Path(store), run_id):
        try:
            return _read_holder(run_id, gen, path, released)
        except FileNotFoundError:
            continue
    return None


class Claim:
    """A claim this process holds."""

    def __init__(self, store: Path, run_id: str, generation: int, path: Path, inode: int):
        self.store, self.run_id, self.generation, self.path, self.inode = store, run_id, generation, path, inode
        self.lost = False

    def refresh(self) -> bool:
        """Beat the heartbeat; ``False`` (and ``lost`` set) when another process took the claim over."""
        if self.lost:
            return False
        try:
            if os.stat(self.path).st_ino != self.inode:
                raise FileNotFoundError(self.path)
            os.utime(self.path)
        except OSError:
            self.lost = True
        return not self.lost

    def release(self, *, finished: bool) -> None:
        """Give the run back: remove the claim when its result is finished, else leave a
        ``.released`` marker so the generation count goes on (see the module docstring)."""
        if self.lost:
            return
        try:
            if os.stat(self.path).st_ino != self.inode:
                return
            if finished:
                os.unlink(self.path)
            else:
                os.replace(self.path, self.path.with_suffix(RELEASED_SUFFIX))
        except OSError:
            pass  # a vanished store has nothing left to release


def _create_exclusive(store: Path, path: Path, info: dict) -> int | None:
    """Create ``path`` holding ``info`` unless it exists (then ``None``); its inode otherwise. The
    content is written to a temp file first and hard-linked into place (``link`` fails on an existing
    name, atomically, NFS included), so a claim is never seen half-written."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.time_ns()}.tmp")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        try:
            os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)
        return os.stat(path).st_ino
    except FileExistsError:
        return None
    except OSError as exc:
        raise StoreWriteError(store, path, exc) from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def acquire(store: str | os.PathLike, run_id: str) -> Claim | Holder:
    """Claim ``run_id`` for this process: the :class:`Claim`, or the live :class:`Holder` of
    another process's claim. Raises :class:`StoreWriteError` when the store cannot be written."""
    store = Path(store)
    directory = claims_dir(store)
    try:
        directory.mkdir(exist_ok=True)  # never its parents: a store that vanished is an error
    except OSError as exc:
        raise StoreWriteError(store, directory, exc) from None
    current = None
    for _ in range(20):
        gens = _generations(store, run_id)
        generation = 0
        if gens:
            gen, path, released = gens[0]
            try:
                current = _read_holder(run_id, gen, path, released)
            except FileNotFoundError:
                continue  # released or taken over meanwhile: look again
            if current.stale_reason() is None:
                return current
            generation = gen + 1
        path = directory / f"{run_id}.{generation}{CLAIM_SUFFIX}"
        inode = _create_exclusive(store, path, {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                                                "pid_started": _process_start(os.getpid()), "claimed_at": utc_now()})
        if inode is None:
            continue  # another claimer won this generation: look again
        for gen, old, _ in gens:
            if gen < generation:
                try:
                    os.unlink(old)
                except OSError:
                    pass
        return Claim(store, run_id, generation, path, inode)
    if current is None:
        current = holder(store, run_id)
    if current is None:  # twenty rounds of claims appearing and vanishing: treat it as held
        return Holder(run_id, -1, directory, None, None, None, None, time.time())
    return current


class Claims:
    """The claims one bench holds, with the thread that beats their heartbeat.

    Use as a context manager: leaving it releases every claim still held (as unfinished).
    """

    def __init__(self, store: str | os.PathLike, heartbeat_seconds: float | None = None):
        self.store = Path(store)
        self.heartbeat_seconds = HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
        self.held: dict[str, Claim] = {}
        self.lost: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Claims":
        self._thread = threading.Thread(target=self._beat, name="pefthub-claims-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for run_id in list(self.held):
            self.release(run_id, finished=False)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def acquire(self, run_id: str) -> Claim | Holder:
        outcome = acquire(self.store, run_id)
        if isinstance(outcome, Claim):
            with self._lock:
                self.held[run_id] = outcome
        return outcome

    def release(self, run_id: str, *, finished: bool) -> None:
        with self._lock:
            claim = self.held.pop(run_id, None)
        if claim is not None:
            claim.release(finished=finished)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            with self._lock:
                claims = list(self.held.values())
            for claim in claims:
                if not claim.refresh() and claim.run_id not in self.lost:
                    self.lost.append(claim.run_id)

"""Result files: identity (config hash), atomic writes, validation, schema upgrades, loading.

The format is specified in ``docs/results-schema.md``; this module is its only implementation.
Everything else (the runner, ``pefthub bench``, the site builder) reads and writes results through
these functions, so a change of format happens in one place with an upgrade function.

No torch import at module level: the site builder and ``pefthub plan`` import this cheaply.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from pefthub.errors import PefthubError

SCHEMA_VERSION = 1
STATUSES = ("success", "failed", "cancelled")
RESULT_SUFFIX = ".json"
SAMPLES_SUFFIX = ".samples.jsonl"
TEMP_SUFFIX = ".tmp"
_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: Distributions whose versions every result records (import name -> distribution name).
TRACKED_PACKAGES = {
    "torch": "torch", "transformers": "transformers", "peft": "peft", "trl": "trl",
    "lm_eval": "lm_eval", "datasets": "datasets", "reasoning_gym": "reasoning-gym", "pluggy": "pluggy",
    "accelerate": "accelerate", "math_verify": "math-verify", "vllm": "vllm", "ray": "ray",
}


class ResultFileError(PefthubError):
    """A result file that cannot be used: unreadable, invalid JSON, wrong shape or unknown version."""

    def __init__(self, file: str | os.PathLike, reason: str):
        self.file = str(file)
        self.reason = reason
        super().__init__(f"{self.file}: {reason}")


class StoreWriteError(PefthubError):
    """A results store that cannot be written (full disk, read-only, vanished path); the message
    names the store, the file being written and the system's reason, on one line."""

    def __init__(self, store: str | os.PathLike, file: str | os.PathLike, error: OSError | str):
        reason = error if isinstance(error, str) else (error.strerror or str(error))
        self.store, self.file, self.reason = str(store), str(file), reason
        super().__init__(str(store), str(file), reason)  # args rebuild it when pickled

    def __str__(self) -> str:
        return f"cannot write results to {self.store}: {self.file}: {self.reason}"


class InvalidResult(ValueError):
    """A result document breaks the schema; the message says which field and how."""


# ---- identity --------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_hash(config: dict) -> str:
    """SHA-256 (64 hex digits) of the canonical JSON of a resolved experiment config."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def run_id(config: dict) -> str:
    """A run's identity: the first 16 hex digits of its config hash."""
    return config_hash(config)[:16]


def utc_now() -> str:
    """The current time as the schema writes it: ISO 8601, UTC, seconds, trailing ``Z``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def result_path(results_dir: str | os.PathLike, rid: str) -> Path:
    return Path(results_dir) / f"{rid}{RESULT_SUFFIX}"


def samples_path(results_dir: str | os.PathLike, rid: str) -> Path:
    return Path(results_dir) / f"{rid}{SAMPLES_SUFFIX}"


def new_result(config: dict, *, suite: str, status: str = "failed", error: str | None = None,
               started_at: str | None = None, finished_at: str | None = None) -> dict:
    """The fields every result has (a failed run may have nothing more); callers add the rest."""
    digest = config_hash(config)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": digest[:16],
        "config_hash": digest,
        "suite": suite,
        "status": status,
        "error": error,
        "started_at": started_at or utc_now(),
        "finished_at": finished_at,
        "config": config,
    }


# ---- environment -----------------------------------------------------------------------------
def _package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(path: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout that holds the pefthub sources, or (None, None).

    Only a checkout whose top level contains the ``pefthub`` package counts (an install inside some
    unrelated repository must not report that repository). ``dirty`` ignores untracked files and
    ``leaderboards/`` (results written by runs would otherwise make every later run "dirty").
    """
    package_dir = Path(path) if path is not None else Path(__file__).resolve().parent
    top = _git(["rev-parse", "--show-toplevel"], package_dir)
    if not top or not (Path(top) / "pefthub" / "results.py").exists():
        return None, None
    commit = _git(["rev-parse", "HEAD"], Path(top))
    if commit is None:
        return None, None
    status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)leaderboards"], Path(top))
    return commit, (bool(status) if status is not None else None)


def environment() -> dict:
    """Where a run ran: versions, threads, CPU/GPU, git commit and dirty flag, host name."""
    from pefthub import __version__

    torch_threads = None
    gpu = None
    try:
        import torch  # lazy: keeps this module importable without torch's start-up cost

        torch_threads = torch.get_num_threads()
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            gpu = {"count": len(names), "names": names, "cuda": torch.version.cuda}
    except ImportError:
        pass
    commit, dirty = git_state()
    return {
        "pefthub": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _package_version(dist) for name, dist in TRACKED_PACKAGES.items()},
        "torch_threads": torch_threads,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu,
        "git_commit": commit,
        "git_dirty": dirty,
        "hostname": socket.gethostname(),
    }


# ---- validation ------------------------------------------------------------------------------
def _require(cond: bool, reason: str) -> None:
    if not cond:
        raise InvalidResult(reason)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate(doc: Any) -> None:
    """Raise :class:`InvalidResult` when ``doc`` is not a valid current-version result.

    Checked: the required keys and their types, that ``run_id``/``config_hash`` are the hash of
    ``config`` (a hand-edited config is caught), the status vocabulary, and for successful runs
    the evaluation block the leaderboard reads. Unknown extra keys are allowed.
    """
    _require(isinstance(doc, dict), "not a JSON object")
    _require(doc.get("schema_version") == SCHEMA_VERSION,
             f"schema_version is {doc.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    for key in ("run_id", "config_hash", "suite", "status", "config", "started_at"):
        _require(key in doc, f"missing required key '{key}'")
    config = doc["config"]
    _require(isinstance(config, dict), "'config' is not an object")
    for key in ("model", "method", "trainer"):
        _require(isinstance(config.get(key), str), f"config.{key} is missing or not a string")
    try:
        digest = config_hash(config)
    except ValueError as exc:  # NaN/inf inside the config
        raise InvalidResult(f"config is not canonical JSON: {exc}") from None
    _require(doc["config_hash"] == digest, "config_hash does not match config (edited by hand?)")
    _require(doc["run_id"] == digest[:16], "run_id does not match config")
    _require(isinstance(doc["suite"], str) and doc["suite"], "'suite' is not a non-empty string")
    _require(doc["status"] in STATUSES, f"status {doc['status']!r} is not one of {', '.join(STATUSES)}")
    _require(isinstance(doc["started_at"], str), "'started_at' is not a string")
    _require(doc.get("finished_at") is None or isinstance(doc["finished_at"], str), "'finished_at' is not a string")
    error = doc.get("error")
    _require(error is None or isinstance(error, str), "'error' is not a string")
    if "checkpoints" in doc:
        _validate_checkpoints(doc["checkpoints"])
    if doc["status"] != "success":
        _require(bool(error), f"status is {doc['status']} but 'error' is empty")
        return
    _require(isinstance(doc.get("method"), dict), "successful run without 'method' object")
    _require(_is_int(doc["method"].get("trainable_params")), "method.trainable_params is missing or not an integer")
    evaluation = doc.get("evaluation")
    _require(isinstance(evaluation, dict) and evaluation, "successful run without 'evaluation'")
    for split, block in evaluation.items():
        _require(isinstance(block, dict), f"evaluation.{split} is not an object")
        acc = block.get("accuracy")
        _require(_is_number(acc) and 0.0 <= acc <= 1.0, f"evaluation.{split}.accuracy is not a number in [0, 1]")
        _require(_is_int(block.get("n")) and block["n"] >= 0, f"evaluation.{split}.n is not a non-negative integer")
        for bound in ("ci_low", "ci_high"):
            value = block.get(bound)
            _require(value is None or _is_number(value), f"evaluation.{split}.{bound} is not a number")
    curves = doc.get("curves")
    _require(curves is None or isinstance(curves, list), "'curves' is not a list")
    training = doc.get("training")
    _require(training is None or isinstance(training, dict), "'training' is not an object")
    stopped = (training or {}).get("stopped_early")
    if stopped is not None:
        _require(isinstance(stopped, dict) and isinstance(stopped.get("reason"), str) and _is_int(stopped.get("step"))
                 and isinstance(stopped.get("detail"), str),
                 "training.stopped_early needs a string 'reason', an integer 'step' and a string 'detail'")


#: Fields of a ``checkpoints`` entry: required, and numbers (``None`` allowed where said) when present.
CHECKPOINT_REQUIRED = ("step", "split", "accuracy", "n", "correct", "seconds_train_so_far", "tokens_trained",
                       "tokens_generated")
CHECKPOINT_COUNTERS = ("seconds_train_so_far", "seconds_eval", "examples", "prompts", "prompts_trained",
                       "completions", "tokens_trained", "tokens_generated", "train_flops")
CHECKPOINT_OPTIONAL_NUMBERS = ("ci_low", "ci_high", "strict_accuracy")


def _validate_checkpoints(points: Any) -> None:
    """The shape of ``checkpoints`` (validation scored at optimizer steps inside the run): a list of
    objects with strictly increasing positive integer steps, a split, an accuracy in [0, 1] that is
    ``correct``/``n``'s, and non-negative budget counters (docs/results-schema.md)."""
    _require(isinstance(points, list), "'checkpoints' is not a list")
    last = 0
    for i, point in enumerate(points):
        where = f"checkpoints[{i}]"
        _require(isinstance(point, dict), f"{where} is not an object")
        for key in CHECKPOINT_REQUIRED:
            _require(key in point, f"{where} has no '{key}'")
        step = point["step"]
        _require(_is_int(step) and step > 0, f"{where}.step is not a positive integer")
        _require(step > last, f"{where}.step {step} does not come after step {last}")
        last = step
        _require(isinstance(point["split"], str) and point["split"], f"{where}.split is not a non-empty string")
        acc, n, correct = point["accuracy"], point["n"], point["correct"]
        _require(_is_number(acc) and 0.0 <= acc <= 1.0, f"{where}.accuracy is not a number in [0, 1]")
        _require(_is_int(n) and n >= 0, f"{where}.n is not a non-negative integer")
        _require(_is_int(correct) and 0 <= correct <= n, f"{where}.correct is not an integer in [0, n]")
        _require(n == 0 or abs(acc - correct / n) <= 1e-9, f"{where}.accuracy is not correct / n")
        for key in CHECKPOINT_COUNTERS:
            value = point.get(key, 0)
            _require(_is_number(value) and value >= 0, f"{where}.{key} is not a non-negative number")
        for key in CHECKPOINT_OPTIONAL_NUMBERS:
            value = point.get(key)
            _require(value is None or _is_number(value), f"{where}.{key} is not a number")


# ---- upgrades --------------------------------------------------------------------------------
#: version -> function taking a document of that version and returning one of version + 1.
UPGRADES: dict[int, Callable[[dict], dict]] = {}


def upgrader(from_version: int) -> Callable[[Callable[[dict], dict]], Callable[[dict], dict]]:
    """Register the function that moves documents from ``from_version`` to ``from_version + 1``."""

    def deco(fn: Callable[[dict], dict]) -> Callable[[dict], dict]:
        if from_version in UPGRADES:
            raise RuntimeError(f"two upgrades from schema version {from_version}")
        UPGRADES[from_version] = fn
        return fn

    return deco


@upgrader(0)
def _upgrade_v0_to_v1(doc: dict) -> dict:
    """Version 0, the pre-release draft described in docs/results-schema.md ("Older versions").

    It had no ``schema_version``, ``run_id`` or ``config_hash`` (identity was the file name),
    ``ok: bool`` instead of ``status``, ``results`` instead of ``evaluation``, and the trainable
    count at top level as ``trainable_params`` instead of under ``method``.
    """
    out = {k: v for k, v in doc.items() if k not in ("ok", "results", "trainable_params")}
    config = doc["config"]
    digest = config_hash(config)
    out["schema_version"] = 1
    out["run_id"] = digest[:16]
    out["config_hash"] = digest
    out.setdefault("suite", "adhoc")
    ok = doc.get("ok")
    out["status"] = "success" if ok is True else "failed"
    out["error"] = doc.get("error") or (None if ok is True else "failed (schema v0 recorded no error)")
    out.setdefault("started_at", doc.get("finished_at") or "1970-01-01T00:00:00Z")
    out.setdefault("finished_at", None)
    if "results" in doc:
        out["evaluation"] = doc["results"]
    method = dict(out.get("method") or {})
    method.setdefault("name", config.get("method"))
    if "trainable_params" in doc:
        method.setdefault("trainable_params", doc["trainable_params"])
    out["method"] = method
    return out


def document_version(doc: dict) -> int:
    """The schema version a document claims (0 for the draft that had no ``schema_version``)."""
    version = doc.get("schema_version", 0)
    if not _is_int(version) or version < 0:
        raise InvalidResult(f"schema_version {version!r} is not a non-negative integer")
    return version


def upgrade(doc: dict) -> dict:
    """Move a document of any known older version to :data:`SCHEMA_VERSION` (returns a new dict)."""
    if not isinstance(doc, dict):
        raise InvalidResult("not a JSON object")
    version = document_version(doc)
    if version > SCHEMA_VERSION:
        raise InvalidResult(f"schema_version {version} is newer than this pefthub understands "
                            f"({SCHEMA_VERSION}); upgrade pefthub")
    current = doc
    while version < SCHEMA_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            raise InvalidResult(f"no upgrade path from schema_version {version}")
        if version == 0 and not isinstance(current.get("config"), dict):
            raise InvalidResult("no schema_version and no 'config' object: not a pefthub result")
        try:
            current = step(dict(current))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResult(f"cannot upgrade from schema_version {version}: {type(exc).__name__}: {exc}") from None
        version += 1
    return current


# ---- writing ---------------------------------------------------------------------------------
def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: they are not JSON, and a browser's JSON.parse rejects them.
    (A diverged run says so in ``error``; its curve keeps the finite points.)"""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


#: Errors of a directory fsync that only say the filesystem does not sync directories.
_NO_DIR_SYNC = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF, errno.EACCES, errno.EPERM, errno.EISDIR)


def _fsync_dir(path: Path, strict: bool = False) -> None:
    """Make a rename in ``path`` durable. ``strict``: raise the errors that mean it is not (EIO,
    ENOSPC, a vanished directory), ignoring only filesystems that cannot sync a directory."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if strict and exc.errno not in _NO_DIR_SYNC:
            raise
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if strict and exc.errno not in _NO_DIR_SYNC:
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, *, sync_dir: bool = True) -> None:
    """Write ``text`` so that ``path`` holds either its old content or all of the new one.

    A temp file in the same directory (``.<name>.<random>.tmp``, ignored by every reader), flushed
    and fsynced, then ``os.replace``d over the target; a kill at any point leaves at most a temp
    file, which :func:`clean_temp_files` removes. ``sync_dir=False`` leaves the directory's fsync
    (which makes the rename durable) to the caller.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared and published
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def write_result(results_dir: str | os.PathLike, doc: dict, samples: Iterable[dict] | None = None) -> Path:
    """Validate ``doc`` and write it atomically as ``<results_dir>/<run_id>.json``.

    ``samples`` (per-sample evaluation records) go to ``<run_id>.samples.jsonl`` first, also
    atomically, so a result file never points at a samples file that does not exist yet. Each
    evaluation split that has records gets ``samples_file`` set if the caller did not set it.
    Returns the result file's path.

    A write that fails (full disk, read-only or vanished store) raises :class:`StoreWriteError`
    naming the store and the file, and leaves the run as if never written: the samples file and the
    document this call wrote are removed again, so no samples file is left without its document.
    """
    doc = _json_safe(doc)
    results_dir = Path(results_dir)
    written: list[Path] = []
    target = None
    try:
        if samples is not None:
            records = [_json_safe(dict(s)) for s in samples]
            rid = doc.get("run_id") if isinstance(doc, dict) else None
            if not isinstance(rid, str) or not rid:
                raise InvalidResult("cannot write samples for a document without run_id")
            target = samples_path(results_dir, rid)
            text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
            atomic_write_text(target, text, sync_dir=False)
            written.append(target)
            splits = {r.get("split") for r in records}
            for split, block in (doc.get("evaluation") or {}).items():
                if isinstance(block, dict) and split in splits:
                    block.setdefault("samples_file", target.name)
        validate(doc)
        target = result_path(results_dir, doc["run_id"])
        atomic_write_text(target, json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n",
                          sync_dir=False)
        written.append(target)
        _fsync_dir(results_dir, strict=True)
    except OSError as exc:
        for path in reversed(written):
            try:
                path.unlink()
            except OSError:
                pass
        raise StoreWriteError(results_dir, target if target is not None else results_dir, exc) from None
    except BaseException:
        if written and written[-1].name.endswith(SAMPLES_SUFFIX):  # the samples without their document
            try:
                written[-1].unlink()
            except OSError:
                pass
        raise
    return target


def remove_partial_files(results_dir: str | os.PathLike, rid: str, since: float) -> list[Path]:
    """Remove what an interrupted writer of run ``rid`` left: its temp files, and a samples file
    written at or after ``since`` (a time.time()) without a document as new (the document is
    written last). Returns what was removed."""
    results_dir = Path(results_dir)
    removed = []
    try:
        names = os.listdir(results_dir)
    except OSError:
        return removed
    for name in names:
        if name.startswith((f".{rid}{RESULT_SUFFIX}.", f".{rid}{SAMPLES_SUFFIX}.")) and name.endswith(TEMP_SUFFIX):
            try:
                (results_dir / name).unlink()
                removed.append(results_dir / name)
            except OSError:
                pass
    samples, doc = samples_path(results_dir, rid), result_path(results_dir, rid)
    try:
        fresh_samples = samples.stat().st_mtime >= since - 1.0
    except OSError:
        return removed
    try:
        fresh_doc = doc.stat().st_mtime >= since - 1.0
    except OSError:
        fresh_doc = False
    if fresh_samples and not fresh_doc:
        try:
            samples.unlink()
            removed.append(samples)
        except OSError:
            pass
    return removed


# ---- reading ---------------------------------------------------------------------------------
def read_result(path: str | os.PathLike) -> dict:
    """Read, upgrade and validate one result file; raise :class:`ResultFileError` saying why not."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(path, f"unreadable: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultFileError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        doc = upgrade(doc)
        validate(doc)
    except InvalidResult as exc:
        raise ResultFileError(path, str(exc)) from None
    return doc


def read_samples(path: str | os.PathLike, *, result: dict | None = None, lm_eval_ids: bool = True) -> list[dict]:
    """The records of a ``.samples.jsonl`` file (raises :class:`ResultFileError` on a bad line).

    With ``lm_eval_ids`` every object record carries lm-eval's ``doc_id``, ``doc_hash``,
    ``prompt_hash`` and ``target_hash``: files written before they were recorded get them derived
    from the stored fields (:mod:`pefthub.evaluation.sample_ids`); ``doc_hash`` of such a file needs
    the run's ``result`` document (its task config regenerates the documents) and is null without it.
    """
    path = Path(path)
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ResultFileError(path, f"invalid JSON on line {lineno}: {exc.msg}") from None
    except OSError as exc:
        raise ResultFileError(path, f"unreadable: {exc}") from None
    if lm_eval_ids and records:
        from pefthub.evaluation import sample_ids  # the one place lm-eval's identifiers are computed

        sample_ids.fill(records, _task_configs(result))
    return records


def _task_configs(result: dict | None) -> dict[str, dict]:
    """split -> the task config a result's evaluation of that split recorded."""
    out = {}
    for split, block in ((result or {}).get("evaluation") or {}).items():
        task = ((block or {}).get("protocol") or {}).get("task") if isinstance(block, dict) else None
        if isinstance(task, dict):
            out[split] = task
    return out


def is_temp_file(path: str | os.PathLike) -> bool:
    name = Path(path).name
    return name.startswith(".") or name.endswith(TEMP_SUFFIX)


def result_files(root: str | os.PathLike) -> Iterator[Path]:
    """Every candidate result file under ``root`` (recursively), sorted; temp and samples files skipped."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob(f"*{RESULT_SUFFIX}")):
        if path.is_file() and not is_temp_file(path) and not any(p.startswith(".") for p in path.relative_to(root).parts[:-1]):
            yield path


def read_results(root: str | os.PathLike, problems: list[tuple[Path, str]] | None = None) -> Iterator[tuple[Path, dict]]:
    """Each usable result under ``root`` as ``(path, doc)``, one file at a time; a file that cannot be
    read is appended to ``problems`` as ``(path, reason)`` and skipped, never raised."""
    if not Path(root).exists():
        return
    for path in result_files(root):
        try:
            doc = read_result(path)
        except ResultFileError as exc:
            if problems is not None:
                problems.append((path, exc.reason))
            continue
        yield path, doc


def load_results_dir(root: str | os.PathLike, *, with_paths: bool = False
                     ) -> tuple[list[dict], list[tuple[Path, str]]]:
    """All usable results under ``root`` and the (path, reason) of every file skipped.

    Corrupt files (invalid JSON, missing keys, unknown version) and foreign JSON files are
    reported, never raised, so one bad file cannot break the site build or a resumed sweep.
    With ``with_paths`` each document is returned as ``(path, doc)`` instead.
    """
    problems: list[tuple[Path, str]] = []
    docs: list[Any] = [(path, doc) if with_paths else doc for path, doc in read_results(root, problems)]
    return docs, problems


def clean_orphan_samples(results_dir: str | os.PathLike, *, in_flight: Callable[[str], bool] = lambda rid: False,
                         older_than: float = 60.0) -> list[Path]:
    """Delete samples files without their result document (a writer killed between the two, or a
    disk that filled), unless ``in_flight(run_id)`` says the run is being written now or the file is
    younger than ``older_than`` seconds. Returns what was removed."""
    results_dir = Path(results_dir)

    def orphan(path: Path) -> bool:
        if is_temp_file(path) or not path.name.endswith(SAMPLES_SUFFIX):
            return False
        rid = path.name[: -len(SAMPLES_SUFFIX)]
        return not result_path(results_dir, rid).exists() and not in_flight(rid)

    return _remove_stale(results_dir, orphan, older_than)


def clean_temp_files(results_dir: str | os.PathLike, *, older_than: float = 60.0) -> list[Path]:
    """Delete temp files a killed writer left behind (only those older than ``older_than`` seconds,
    so a writer in another process that is mid-write keeps its file). Returns what was removed."""
    return _remove_stale(Path(results_dir), lambda path: path.is_file() and path.name.startswith(".")
                         and path.name.endswith(TEMP_SUFFIX), older_than)


def _remove_stale(results_dir: Path, wanted: Callable[[Path], bool], older_than: float) -> list[Path]:
    """Delete the files of ``results_dir`` that ``wanted`` picks and that are at least ``older_than``
    seconds old; a file that vanishes or cannot be removed meanwhile is left to the next pass."""
    removed: list[Path] = []
    if not results_dir.is_dir():
        return removed
    now = time.time()
    for path in results_dir.iterdir():
        if not wanted(path):
            continue
        try:
            if now - path.stat().st_mtime >= older_than:
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    return removed

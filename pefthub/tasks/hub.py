"""Tasks backed by a dataset on the Hugging Face hub, loaded with ``datasets``.

Each task names its hub dataset (``path``, ``config``) and the columns it needs. Two ways to point
at a local copy, for machines without hub access:

* ``data_files``: a table of hub split name -> local file (``.parquet``, ``.json``/``.jsonl`` or
  ``.csv``) in the hub's schema, loaded with ``datasets``' generic builders;
* ``path``: a local directory holding the dataset repository (as ``git clone`` or
  ``huggingface-cli download --repo-type dataset`` leaves it).

When neither works the error names the dataset, the split and both options.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pefthub.errors import ConfigError
from pefthub.tasks.base import Example, Task, TaskParams, param

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


@dataclass
class HubSourceParams(TaskParams):
    """Where a hub task's data comes from."""

    path: str = param("", "hub dataset id or a local directory with its files (empty: the task's hub dataset)")
    data_files: dict[str, str] | None = param(
        None, "local files per hub split, e.g. {train = \"train.parquet\", test = \"test.parquet\"}; "
              "overrides path", nonempty=True)

    def validate(self) -> None:
        if self.data_files is not None:
            for split, file in self.data_files.items():
                suffix = Path(file).suffix.lower()
                self.require(suffix in _BUILDERS, "data_files",
                             f"has {split} = {file!r}: supported file types are {', '.join(sorted(_BUILDERS))}")


@dataclass
class HubParams(HubSourceParams):
    """A hub dataset with train and test splits; validation is carved out of train."""

    seed: int = param(0, "seed of the permutation that picks validation questions out of the hub's train split",
                      min=0)
    validation_size: int = param(200, "questions moved from the hub's train split to the validation split", min=0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class HubTask(Task):
    """Base of hub-backed tasks. Subclasses set ``hub_path``/``hub_config``/``hub_splits``/
    ``columns`` and implement :meth:`make_example`."""

    params_class: ClassVar[type[TaskParams]] = HubParams
    hub_path: ClassVar[str]
    hub_config: ClassVar[str | None] = None
    #: Which hub split each pefthub split comes from ("validation" is carved from "train").
    hub_splits: ClassVar[dict[str, str]] = {"train": "train", "test": "test"}
    columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: TaskParams | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._hub_rows: dict[str, list[dict[str, Any]]] = {}

    @property
    def source(self) -> str:
        return self.params.path or self.hub_path

    # ---- loading --------------------------------------------------------------------------------
    def _how_to_fix(self, hub_split: str) -> str:
        return (f"download it where the hub is reachable and pass the task parameter "
                f"data_files = {{{hub_split} = \"/path/to/{hub_split}.parquet\"}} (the hub's files, or JSON lines "
                f"with columns {', '.join(self.columns)}), or path = \"/path/to/local/copy\"")

    def _load_hub_split(self, hub_split: str) -> list[dict[str, Any]]:
        if hub_split in self._hub_rows:
            return self._hub_rows[hub_split]
        import datasets

        bars = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()
        try:
            return self._load_hub_split_quietly(hub_split)
        finally:
            if bars:
                datasets.utils.logging.enable_progress_bar()

    def _load_hub_split_quietly(self, hub_split: str) -> list[dict[str, Any]]:
        import datasets

        p = self.params
        where = f"dataset {self.source}" + (f" (config {self.hub_config})" if self.hub_config and not p.data_files else "")
        try:
            if p.data_files is not None:
                if hub_split not in p.data_files:
                    raise ConfigError(f"task '{self.name}': data_files has no file for split '{hub_split}' "
                                      f"(given: {', '.join(sorted(p.data_files))})")
                file = Path(p.data_files[hub_split]).expanduser()
                if not file.is_file():
                    raise ConfigError(f"task '{self.name}': data file for split '{hub_split}' not found: {file}")
                where = f"file {file}"
                builder = _BUILDERS[file.suffix.lower()]
                ds = datasets.load_dataset(builder, data_files={hub_split: str(file)}, split=hub_split)
            elif Path(self.source).expanduser().is_dir():
                file = self._local_file(Path(self.source).expanduser(), hub_split)
                where = f"file {file}"
                ds = datasets.load_dataset(_BUILDERS[file.suffix.lower()], data_files={hub_split: str(file)},
                                           split=hub_split)
            else:
                ds = datasets.load_dataset(self.source, self.hub_config, split=hub_split)
        except ConfigError:
            raise
        except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
            if where.startswith("file "):
                raise ConfigError(f"task '{self.name}': {where} could not be read ({_first_line(exc)})") from None
            raise ConfigError(f"task '{self.name}': {where}, split {hub_split} is not available here: the hub is "
                              f"unreachable or the dataset is not in the local cache ({_first_line(exc)}); "
                              f"{self._how_to_fix(hub_split)}") from None
        missing = [c for c in self.columns if c not in ds.column_names]
        if missing:
            raise ConfigError(f"task '{self.name}': {where} lacks column(s) {', '.join(missing)} "
                              f"(has: {', '.join(ds.column_names)}); expected the schema of {self.hub_path}")
        rows = [dict(row) for row in ds]
        self._hub_rows[hub_split] = rows
        return rows

    def _local_file(self, root: Path, hub_split: str) -> Path:
        """The file holding ``hub_split`` in a local copy of the dataset repository
        (``<config>/<split>-00000-of-00001.parquet``, ``<split>.jsonl``, ``data/<split>-*.parquet`` ...)."""
        prefixes = ([f"{self.hub_config}/"] if self.hub_config else []) + ["", "data/"]
        for prefix in prefixes:
            for pattern in (f"{hub_split}-*", f"{hub_split}.*"):
                found = sorted(p for p in root.glob(prefix + pattern) if p.suffix.lower() in _BUILDERS)
                if len(found) > 1:
                    raise ConfigError(f"task '{self.name}': {root} has several files for split '{hub_split}' "
                                      f"({', '.join(p.name for p in found)}); pass data_files to choose one")
                if found:
                    return found[0]
        raise ConfigError(f"task '{self.name}': no file for split '{hub_split}' in {root} (looked for "
                          f"{', '.join(pre + hub_split + '-*.parquet' for pre in prefixes)} and .jsonl/.json/.csv); "
                          f"pass data_files instead")

    def make_example(self, row: dict[str, Any], index: int) -> Example | None:
        raise NotImplementedError

    def _examples_of(self, hub_split: str) -> list[Example]:
        out = []
        for i, row in enumerate(self._load_hub_split(hub_split)):
            ex = self.make_example(row, i)
            if ex is not None:
                out.append(ex)
        return out

    # ---- splits -----------------------------------------------------------------------------------
    def _build_splits(self) -> dict[str, list[Example]]:
        """test from the hub's test split; validation (seeded pick) and train from the hub's train
        split; each question text appears in one split only (test first, then validation)."""
        splits: dict[str, list[Example]] = {}
        test = _dedupe(self._examples_of(self.hub_splits["test"]), set())
        seen = {_key(ex) for ex in test}
        splits["test"] = test
        if "train" in self.hub_splits:
            pool = _dedupe(self._examples_of(self.hub_splits["train"]), seen)
            order = list(range(len(pool)))
            random.Random(self.params.seed).shuffle(order)
            val_idx = set(order[:self.params.validation_size])
            splits["validation"] = [pool[i] for i in order[:self.params.validation_size]]
            splits["train"] = [ex for i, ex in enumerate(pool) if i not in val_idx]
        else:
            splits["validation"], splits["train"] = [], []
        return splits

    def load_split(self, split: str, n: int | None) -> list[Example]:
        if split not in self._splits:
            if split == "test":
                self._splits["test"] = _dedupe(self._examples_of(self.hub_splits["test"]), set())
            elif "train" not in self.hub_splits:
                return []  # nothing to draw from (and no need to load any file)
            else:
                self._splits.update(self._build_splits())
        chosen = self._splits[split] if n is None else self._splits[split][:n]
        return [dataclasses.replace(ex, id=f"{self.name}-{split}-{i}") for i, ex in enumerate(chosen)]

    def empty_split_hint(self, split: str) -> str:
        if split != "test" and "train" not in self.hub_splits:
            return f": {self.hub_path} has only a {self.hub_splits['test']} split (it is an evaluation set)"
        if split == "validation":
            return " (validation_size is 0)" if self.params.validation_size == 0 else f" ({self.source} gave no usable rows)"
        if self._splits.get("validation"):
            return (f": validation_size={self.params.validation_size} took all {len(self._splits['validation'])} "
                    f"usable rows of the hub's train split; lower validation_size")
        return f" ({self.source} gave no usable rows)"


def _key(ex: Example) -> str:
    return " ".join(ex.question.split())


def _dedupe(examples: list[Example], seen: set[str]) -> list[Example]:
    out = []
    for ex in examples:
        key = _key(ex)
        if key in seen:
            continue
        seen.add(key)
        out.append(ex)
    return out

"""A suite's per-run data in one file, ``data/<suite>/items.jsonl.gz``, which run pages read on demand.

Chosen over per-suite shards of gzip JSON because, measured on the 5,001-run benchmark directory
(docs/site.md, "Scale"), it is a third smaller (each distinct items table is stored once) and
faster to write, a page fetches only its own run's bytes (HTTP Range) where a shard costs every
run in it, and the file is a plain ``.jsonl.gz`` that any tool reads whole.

The file is a sequence of gzip members (RFC 1952 allows several; ``gzip``, ``zcat`` and pandas read
them as one stream), each holding JSON lines:

- an *items table*, one line ``{"table": "t0", "items": [[split, id, prompt, gold], ...]}``, written
  once for all the runs scored on exactly those items, prompts and answers;
- a *run*, two lines: ``{"run_id", "table", "result"}`` (the whole result document) and
  ``{"run_id", "records": [...]}``, its sample records as stored, less ``prompt`` and ``gold``
  when ``table`` names the table holding them (matched by ``split`` and ``id``).

A run page knows the byte ranges of its run member and of its table (:class:`Where`), fetches
them (a host that ignores ``Range`` sends the whole file once, which the page slices) and
decompresses them in the browser (``DecompressionStream``). The writer keeps only offsets and
each distinct table's items (a suite has a handful).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

FILE_NAME = "items.jsonl.gz"
#: Fields of a sample record kept in the items table instead of every run's member.
TABLE_FIELDS = ("prompt", "gold")
#: zlib's level: on the 1,001-run benchmark directory 1 wrote 29% more bytes than 6, and 9 saved 7% for 40% more time.
LEVEL = 6

_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


@dataclass(frozen=True)
class Where:
    """Byte ranges (offset, length) of a run's member and of its items table (None: no table)."""

    run: tuple[int, int]
    table: tuple[int, int] | None


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a JSON value, equal only to the same value of the same type."""
    return (type(value).__name__, json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value)


def table_items(records: list[dict]) -> list[tuple] | None:
    """``(split, id, prompt, gold)`` of each record, or None when some record has no usable
    ``(split, id)`` key (a string or an integer id) or a key repeats (such runs keep prompt and
    gold in their records)."""
    rows = [(r.get("split"), r.get("id"), r.get("prompt"), r.get("gold")) for r in records]
    if not all(type(i) is str or type(i) is int for _, i, _, _ in rows):
        return None
    if len({(s, i) for s, i, _, _ in rows}) != len(rows):
        return None
    return rows


def _key(rows: list[tuple]) -> tuple:
    """What tables are matched by: equal only for the same values of the same types (1 == True in Python)."""
    if all(type(p) is str and type(g) is str for _, _, p, g in rows):
        return tuple(rows)
    return tuple(tuple(map(_frozen, row)) for row in rows)


class ItemsWriter:
    """Appends run members (and items tables when new) to one suite's items file."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fh: BinaryIO = open(path, "wb")
        self._offset = 0
        self._tables: dict[tuple, tuple[str, tuple[int, int]]] = {}

    def _member(self, *objects: dict) -> tuple[int, int]:
        text = "".join(_ENCODE(obj) + "\n" for obj in objects)
        data = gzip.compress(text.encode("utf-8"), compresslevel=LEVEL, mtime=0)
        self._fh.write(data)
        where = (self._offset, len(data))
        self._offset += len(data)
        return where

    def add(self, doc: dict, records: list[dict]) -> Where:
        """Write one run (its whole result document and its sample records); return where it lies."""
        rid = doc["run_id"]
        rows = table_items(records) if records else None
        name = table = None
        if rows is not None:
            key = _key(rows)
            if key not in self._tables:
                name = f"t{len(self._tables)}"
                self._tables[key] = (name, self._member({"table": name, "items": [list(r) for r in rows]}))
            name, table = self._tables[key]
            records = [r.copy() for r in records]
            for r in records:
                for field in TABLE_FIELDS:
                    r.pop(field, None)
        run = self._member({"run_id": rid, "table": name, "result": doc}, {"run_id": rid, "records": records})
        return Where(run, table)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "ItemsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_run(path: Path, where: Where) -> tuple[dict, list[dict]]:
    """A run's result document and its sample records as stored (prompt and gold joined back from the
    table), read from its two byte ranges the way a run page does."""
    with open(path, "rb") as fh:
        def member(span: tuple[int, int]) -> list[dict]:
            fh.seek(span[0])
            return [json.loads(line) for line in gzip.decompress(fh.read(span[1])).decode("utf-8").splitlines()]

        head, body = member(where.run)
        records = body["records"]
        if where.table is not None:
            (table,) = member(where.table)
            texts = {(s, i): dict(zip(TABLE_FIELDS, rest)) for s, i, *rest in table["items"]}
            records = [{**r, **texts[(r.get("split"), r.get("id"))]} for r in records]
    return head["result"], records

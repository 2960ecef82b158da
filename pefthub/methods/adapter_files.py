"""Adapter files for the methods pefthub implements itself (not peft's format).

A directory with ``adapter_model.safetensors`` (the tensors) and ``pefthub_adapter.json`` (method
name, config, and which tensors are trained vs frozen), so a load can check it got the right method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pefthub.errors import ConfigError

TENSORS = "adapter_model.safetensors"
META = "pefthub_adapter.json"


def save(path: str | Path, method: str, config: dict[str, Any], tensors: dict[str, torch.Tensor],
         extra: dict[str, Any] | None = None) -> None:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path / TENSORS))
    meta = {"method": method, "config": config, **(extra or {})}
    (path / META).write_text(json.dumps(meta, indent=2, sort_keys=True))


def load(path: str | Path, method: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    if not (path / META).exists() or not (path / TENSORS).exists():
        raise ConfigError(f"{path} is not a pefthub adapter directory (needs {TENSORS} and {META})")
    meta = json.loads((path / META).read_text())
    if meta.get("method") != method:
        raise ConfigError(f"{path} holds a '{meta.get('method')}' adapter, not '{method}'")
    return meta, load_file(str(path / TENSORS))

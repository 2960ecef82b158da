"""Test-wide settings: never touch a hub, keep torch to the machine's two cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Reload plugins and registries around a test that changes them."""
    from pefthub import plugins

    plugins.reset()
    yield plugins
    plugins.reset()


@pytest.fixture
def lively():
    """Factory of tiny models whose layers outweigh the residual stream. At its random init the tied
    embedding makes every row greedily repeat its last token whatever attention computes, which would
    let a broken decoder pass; scaled-up projections give varied continuations that depend on it all."""
    from pefthub.models import load_model

    def make(name):
        lm = load_model(name, seed=0)
        with torch.no_grad():
            for key, p in lm.model.model.layers.named_parameters():
                if "proj" in key:
                    p.mul_(8.0)
        return lm

    return make

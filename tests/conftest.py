"""Shared fixtures: a tiny random Llama with the SmolLM2 tokenizer, built once per session."""

from __future__ import annotations

import copy
import os

# One torch thread: the tiny test model gains nothing from two, and two threads spinning on a
# busy 2-core machine slow everything down many times over. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apl_tui.config import ModelConfig


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model/tokenizer cache; APL_TEST_CACHE keeps it across sessions (skips the GGUF parse)."""
    kept = os.environ.get("APL_TEST_CACHE")
    return Path(kept) if kept else tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_model(model_cache: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of the tiny-random spec, seed 0, on the CPU. Do not mutate: copy."""
    from apl_tui.models import load_model

    return load_model("tiny-random", "cpu", model_cache, seed=0)


@pytest.fixture
def tiny_policy(tiny_model: tuple[Any, Any]) -> Iterator[Any]:
    """A fresh Policy over a private copy of the tiny model (tests may train and mutate it)."""
    from apl_tui.policy import Policy

    model, tokenizer = tiny_model
    cfg = ModelConfig(spec="tiny-random", device="cpu", max_prompt_tokens=32)
    yield Policy(copy.deepcopy(model), tokenizer, cfg=cfg, device="cpu", spec="tiny-random")

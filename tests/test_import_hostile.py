"""Hostile prompt files: stray quotes, CR-only endings, lone surrogates, a full disk. Each is refused
with file:line in one line, and the store keeps exactly what it had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.store import Store

runner = CliRunner()

BAD_FILES = [
    # (name, bytes, "file:line" expected in the message, words expected)
    ("unclosed.csv", b'prompt\nfine\n"never closed\nsecond\nthird\n', 3, "unbalanced quote"),
    ("stray.csv", b'prompt\nfine\n"He said hi, ok\nworld\nthe "best" movie\nlast\n', 3, "unbalanced quote"),
    ("stray-mid.csv", b'id,prompt\n1,ok\n2,"opens here\n3,swallowed row"\n4,after\n', 3, "swallows line 4"),
    ("crlf-stray.csv", b'prompt\r\nok\r\n"x\r\ny\r\n', 3, "unbalanced quote"),
    ("cr-only.csv", b"prompt\rone\rtwo\r", 1, "carriage return without line feed"),
    ("cr-only.txt", b"one\rtwo\rthree\r", 1, "carriage return without line feed"),
    ("cr-late.txt", b"one\ntwo\nthree\rfour\n", 3, "carriage return without line feed"),
    ("cr-only.jsonl", b'{"prompt": "a"}\r{"prompt": "b"}\r', 1, "carriage return without line feed"),
    ("surrogate.jsonl", b'{"prompt": "ok"}\n{"prompt": "bad \\ud800 here"}\n', 2, "lone surrogate"),
    ("low-surrogate.jsonl", b'{"prompt": "\\udc00"}\n', 1, "lone surrogate"),
    ("reversed-pair.jsonl", b'{"prompt": "ok"}\n{"prompt": "ok2"}\n{"prompt": "\\ude00\\ud83d"}\n', 3,
     "lone surrogate"),
]


def _store(tmp_path: Path) -> Path:
    root = tmp_path / "s"
    assert runner.invoke(app, ["init", "--store", str(root)]).exit_code == 0
    (tmp_path / "seed.txt").write_text("already here\n")
    assert runner.invoke(app, ["import", str(tmp_path / "seed.txt"), "--store", str(root)]).exit_code == 0
    return root


def _prompts(root: Path) -> list[tuple]:
    with Store(root, read_only=True) as s:
        return s.query("SELECT id, text, split FROM prompts ORDER BY id")[1]


@pytest.mark.parametrize(("name", "data", "line", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_is_refused_with_file_and_line(tmp_path, name, data, line, words):
    root = _store(tmp_path)
    before = _prompts(root)
    path = tmp_path / name
    path.write_bytes(data)
    r = runner.invoke(app, ["import", str(path), "--store", str(root)])
    assert r.exit_code == 1
    assert f"{path}:{line}: " in r.stderr and words in r.stderr and "nothing imported" in r.stderr
    assert "Traceback" not in r.stderr
    assert _prompts(root) == before


GOOD_FILES = [
    ("multiline.csv", b'prompt\nok\n"two\nlines"\nnext\n', ["ok", "two\nlines", "next"]),
    ("quotes.csv", b'prompt\r\n"say ""hi"""\r\nplain "inner" quote\r\n', ['say "hi"', 'plain "inner" quote']),
    ("two-cols.csv", b'id,prompt\n1,"a, b"\n2,"c\nd"\n', ["a, b", "c\nd"]),
    ("pair.jsonl", b'{"prompt": "smile \\ud83d\\ude00"}\n', ["smile \U0001F600"]),
    ("crlf.txt", b"one\r\ntwo\r\n", ["one", "two"]),
]


@pytest.mark.parametrize(("name", "data", "expected"), GOOD_FILES, ids=[g[0] for g in GOOD_FILES])
def test_valid_files_still_import(tmp_path, name, data, expected):
    root = _store(tmp_path)
    (tmp_path / name).write_bytes(data)
    r = runner.invoke(app, ["import", str(tmp_path / name), "--store", str(root)])
    assert r.exit_code == 0, r.stderr
    assert [t for _, t, _ in _prompts(root)] == ["already here", *expected]


def test_bulk_import_keeps_file_order_and_skips_duplicates(tmp_path):
    root = _store(tmp_path)
    texts = [f"prompt {i % 700}" for i in range(1000)] + ["already here"]
    (tmp_path / "many.jsonl").write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    r = runner.invoke(app, ["import", str(tmp_path / "many.jsonl"), "--store", str(root)])
    assert r.exit_code == 0 and "imported 700 train prompts" in r.stderr and "301 duplicates skipped" in r.stderr
    rows = _prompts(root)
    assert [t for _, t, _ in rows] == ["already here"] + [f"prompt {i}" for i in range(700)]
    assert [i for i, _, _ in rows] == sorted(i for i, _, _ in rows)
    again = runner.invoke(app, ["import", str(tmp_path / "many.jsonl"), "--split", "test", "--store", str(root)])
    assert "imported 0 test prompts" in again.stderr and "1,001 duplicates skipped" in again.stderr
    assert _prompts(root) == rows


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_disk_full_is_one_line_and_the_store_is_unchanged(tmp_path):
    import resource

    root = _store(tmp_path)
    before = _prompts(root)
    big = tmp_path / "big.txt"
    big.write_text("".join(f"prompt number {i} about a film that runs long enough\n" for i in range(30_000)))
    limit = (root / "apl.duckdb").stat().st_size + 64 * 1024  # the file may barely grow: a full disk

    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "apl_tui", "import", str(big), "--store", str(root)],
                          preexec_fn=cap, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    assert "cannot write to" in done.stderr and "nothing imported" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 2  # error + hint
    assert _prompts(root) == before
    # The store still works: a later import with room succeeds.
    assert runner.invoke(app, ["import", str(big), "--store", str(root)]).exit_code == 0
    assert len(_prompts(root)) == len(before) + 30_000


def test_bench_import_measurement_imports_then_reimports(tmp_path):
    from apl_tui.bench.storage import import_seconds

    first, again = import_seconds(tmp_path / "s", 500)
    assert first > 0 and again > 0
    with Store(tmp_path / "s", read_only=True) as s:
        assert s.prompt_counts() == {"train": 500}

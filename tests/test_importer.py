"""Bad input: one clear line naming file and line, non-zero exit, nothing imported."""

from __future__ import annotations

import json

import pytest

from apl_tui.errors import ImportDataError
from apl_tui.importer import MAX_PROMPT_CHARS, read_prompts


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name,data,match", [
    ("p.jsonl", b'{"prompt": "ok"}\nnot json\n', r"p.jsonl:2: not JSON"),
    ("p.jsonl", b'{"prompt": "ok"}\n{"text": "x"}\n', r"p.jsonl:2: no 'prompt' field"),
    ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "  "}\n', r"p.jsonl:2: empty prompt"),
    ("p.txt", b"fine\ncaf\xe9\n", r"p.txt:2: not UTF-8"),
    ("p.txt", b"", r"no prompts"),
    ("p.csv", b"text\nhello\n", r"p.csv:1: no 'prompt' column"),
    ("p.xlsx", b"x", r"unknown extension"),
    ("p.txt", b"x" * (MAX_PROMPT_CHARS + 1) + b"\n", r"p.txt:1: prompt of 20,001 characters"),
])
def test_bad_files_fail_with_file_and_line(tmp_path, name, data, match):
    path = _write(tmp_path / name, data)
    with pytest.raises(ImportDataError, match=match) as e:
        read_prompts(path)
    assert "nothing imported" in e.value.message or "unknown extension" in e.value.message
    assert e.value.hint


def test_missing_file(tmp_path):
    with pytest.raises(ImportDataError, match="no such file"):
        read_prompts(tmp_path / "gone.jsonl")


def test_every_format_reads_the_same_prompts(tmp_path):
    prompts = ["The film opens", 'He said "wow", then', "Line, with comma"]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (tmp_path / "p.txt").write_text("\n".join(prompts) + "\n")
    import csv
    with open(tmp_path / "p.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt"])
        w.writerows([[i, p] for i, p in enumerate(prompts)])
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"prompt": prompts}), tmp_path / "p.parquet")
    for ext in ("jsonl", "txt", "csv", "parquet"):
        assert read_prompts(tmp_path / f"p.{ext}") == prompts, ext

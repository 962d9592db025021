"""Read prompt files (.jsonl, .csv, .parquet, .txt) into a list, all or nothing.

Parsing finishes before anything touches the store, so a bad line anywhere leaves the store
unchanged; the error names the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apl_tui.chat import MessagesError, encode_messages, validate_messages
from apl_tui.errors import ImportDataError

MAX_PROMPT_CHARS = 20_000
"""Far past any model context we support (a few thousand tokens); longer is certainly a mistake."""

FORMATS = (".jsonl", ".csv", ".parquet", ".txt")

CHAT_HINT = 'a chat prompt is a list like [{"role": "user", "content": "..."}] ending with a user turn'


def _fail(path: Path, line: int | None, why: str, hint: str) -> ImportDataError:
    where = f"{path}:{line}" if line is not None else str(path)
    return ImportDataError(f"{where}: {why}; nothing imported", hint=hint)


def _check_prompt(path: Path, line: int, text: object) -> str:
    if isinstance(text, list):  # a chat prompt: its messages, stored as canonical JSON (see chat.py)
        try:
            text = encode_messages(validate_messages(text))
        except MessagesError as e:
            raise _fail(path, line, str(e), CHAT_HINT) from e
    if not isinstance(text, str):
        raise _fail(path, line, f"prompt must be text, got {type(text).__name__}", "quote the prompt as a string")
    if not text.strip():
        raise _fail(path, line, "empty prompt", "remove the line or give it text")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a JSON "\ud800" escape decodes to a lone surrogate
        raise _fail(path, line, f"invalid character U+{ord(text[e.start]):04X} (a lone surrogate) at column "
                    f"{e.start + 1} of the prompt", "fix the \\uXXXX escape: surrogates must come in pairs") from e
    if len(text) > MAX_PROMPT_CHARS:
        raise _fail(path, line, f"prompt of {len(text):,} characters is longer than any model context "
                    f"(limit {MAX_PROMPT_CHARS:,})", "shorten it or split it into several prompts")
    return text.strip()


def _bare_cr(data: bytes) -> int:
    """Offset of the first CR not followed by LF, or -1."""
    at = data.find(b"\r")
    while at >= 0:
        if data[at + 1:at + 2] != b"\n":
            return at
        at = data.find(b"\r", at + 2)
    return -1


def _decode_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file; a bad byte is reported with its line number."""
    data = path.read_bytes()
    bare_cr = _bare_cr(data)
    if bare_cr >= 0:
        # Classic-Mac line endings: split on LF, the whole file would read as one line (one prompt).
        raise _fail(path, data.count(b"\n", 0, bare_cr) + 1, "carriage return without line feed (CR-only line "
                    "endings would make the rest of the file one line)", "convert the file to LF or CRLF line endings")
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for i, raw in enumerate(lines, 1):
        try:
            out.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as e:
            raise _fail(path, i, f"not UTF-8 (byte {raw[e.start]:#x} at column {e.start + 1})",
                        "re-save the file as UTF-8") from e
    if out and out[0].startswith("\ufeff"):
        out[0] = out[0][1:]
    return out


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSONL file; bad JSON is one file:line error."""
    for i, line in enumerate(_decode_lines(path), 1):
        if not line.strip():
            continue
        try:
            yield i, json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, i, f"not JSON ({e.msg})", "each line must be one JSON object") from e


def _read_jsonl(path: Path, field: str) -> list[str]:
    prompts = []
    for i, obj in json_lines(path):
        key = field
        if isinstance(obj, dict) and field == "prompt" and field not in obj and "messages" in obj:
            key = "messages"  # TRL's conversational files name the message list "messages"
        if not isinstance(obj, dict) or key not in obj:
            raise _fail(path, i, f"no {field!r} field", f'each line needs {{"{field}": "..."}}')
        prompts.append(_check_prompt(path, i, obj[key]))
    return prompts


def _read_txt(path: Path) -> list[str]:
    return [_check_prompt(path, i, line) for i, line in enumerate(_decode_lines(path), 1)]


def _csv_records(path: Path, lines: list[str]) -> list[tuple[int, list[str]]]:
    """(first line, fields) of each record, read strictly so a stray quote is an error, not a merge.

    Python's lenient reader lets an unmatched `"` swallow every later line into one field (exit 0,
    one giant prompt); strict mode refuses the quote, and we name the line where the field opened.
    """
    reader = csv.reader(io.StringIO("\n".join(lines)), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            records.append((start, row))
            start = reader.line_num + 1
    except csv.Error as e:
        raise _fail(path, start, f"unbalanced quote: the quoted field that opens on this line is not closed "
                    f"properly (reading stopped at line {reader.line_num}: {e})",
                    'write a literal quote as "" inside a quoted field, or quote the whole field') from e
    return records


def _swallowed_row(lines: list[str], first: int, last: int, width: int) -> int | None:
    """A line inside a multi-line record that reads as a whole row of its own (a missing quote), or None."""
    if width < 2:
        return None  # one column: every line looks like a row, so this cannot tell
    for n in range(first + 1, last + 1):
        if len(next(csv.reader([lines[n - 1]]), [])) == width:
            return n
    return None


def _read_csv(path: Path, field: str) -> list[str]:
    lines = _decode_lines(path)
    records = _csv_records(path, lines)
    if not records:
        return []
    header = records[0][1]
    if field in header:
        col = header.index(field)
    elif len(header) == 1:
        raise _fail(path, 1, f"no {field!r} column (header is {header[0]!r})", f"name the column {field!r}")
    else:
        raise _fail(path, 1, f"no {field!r} column among {', '.join(header)}", f"name the column {field!r}")
    prompts = []
    for k, (line, row) in enumerate(records[1:], 1):
        last = records[k + 1][0] - 1 if k + 1 < len(records) else len(lines)
        if last > line:
            swallowed = _swallowed_row(lines, line, last, len(header))
            if swallowed is not None:
                raise _fail(path, line, f"a quoted field runs from here to line {last} and swallows line "
                            f"{swallowed}, which looks like a row of its own", "is a closing quote missing?")
        if col >= len(row):
            raise _fail(path, line, f"row has no {field!r} value", "every row needs the column")
        prompts.append(_check_prompt(path, line, row[col]))
    return prompts


def _read_parquet(path: Path, field: str) -> list[str]:
    import duckdb

    con = duckdb.connect()
    try:
        names = [r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(path)]).fetchall()]
        if field not in names:
            raise _fail(path, None, f"no {field!r} column among {', '.join(names)}", f"name the column {field!r}")
        values = [r[0] for r in con.execute(f'SELECT "{field}" FROM read_parquet(?)', [str(path)]).fetchall()]
    except duckdb.Error as e:
        raise _fail(path, None, f"cannot read Parquet ({str(e).splitlines()[0]})", "is it a Parquet file?") from e
    finally:
        con.close()
    # Parquet has no lines; report the 1-based row instead.
    return [_check_prompt(path, i, v) for i, v in enumerate(values, 1)]


def read_prompts(path: Path, *, field: str = "prompt") -> list[str]:
    """All prompts in a file, in order; raises ImportDataError naming the first bad line."""
    path = Path(path)
    if not path.exists():
        raise ImportDataError(f"{path}: no such file", hint="check the path")
    if path.is_dir():
        raise ImportDataError(f"{path}: is a folder", hint="give one file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ImportDataError(f"{path}: unknown extension {suffix or '(none)'!r}",
                              hint=f"use one of {', '.join(FORMATS)}")
    if suffix == ".jsonl":
        prompts = _read_jsonl(path, field)
    elif suffix == ".csv":
        prompts = _read_csv(path, field)
    elif suffix == ".parquet":
        prompts = _read_parquet(path, field)
    else:
        prompts = _read_txt(path)
    if not prompts:
        raise ImportDataError(f"{path}: no prompts in file; nothing imported", hint="is it empty?")
    return prompts

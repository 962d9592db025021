"""Bring your own completions and chat prompts: `apl import --completions`, chat rendering, TUI, exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from apl_tui.chat import MessagesError, decode_messages, encode_messages, validate_messages
from apl_tui.cli import app
from apl_tui.errors import ImportDataError, ModelError
from apl_tui.import_completions import read_completions
from apl_tui.store import Store

runner = CliRunner()
CHAT = [{"role": "system", "content": "You review films."}, {"role": "user", "content": "Was Alien good?"},
        {"role": "assistant", "content": "Yes."}, {"role": "user", "content": "Why?"}]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def new_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path) -> Path:
    monkeypatch.setenv("APL_CACHE_DIR", str(model_cache))
    root = tmp_path / "store"
    assert runner.invoke(app, ["init", "--store", str(root), "--model", "tiny-random"]).exit_code == 0
    return root


def cli(*args: str) -> Any:
    return runner.invoke(app, [*args])


def table(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with Store(root) as s:
        return s.query(sql)[1]


GOOD = [
    {"prompt": "The movie was", "completions": [" great fun.", " a waste of time.", " fine, I guess."]},
    {"prompt": "I watched this film", "chosen": " and loved it.", "rejected": " and fell asleep."},
    {"prompt": CHAT, "response_a": "The acting.", "response_b": "No idea.", "winner": "model_b"},
    {"prompt": "Honestly this", "response_a": " rocks.", "response_b": " is dull."},
]


def test_three_shapes_become_pairs_labels_and_queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   model_cache: Path) -> None:
    root = new_store(tmp_path, monkeypatch, model_cache)
    f = write_jsonl(tmp_path / "c.jsonl", GOOD)
    r = cli("import", str(f), "--completions", "--store", str(root))
    assert r.exit_code == 0, r.output
    assert "imported 6 pairs from 4 rows" in r.output and "2 imported labels" in r.output
    cands = table(root, "SELECT p.text, c.completion_a, c.completion_b, c.origin, c.eos_a, c.adapter_version "
                        "FROM candidates c JOIN prompts p ON p.id = c.prompt_id ORDER BY c.id")
    # 3 completions → 3 unordered pairs, in file order.
    assert [(a, b) for t, a, b, *_ in cands[:3]] == [(" great fun.", " a waste of time."),
                                                     (" great fun.", " fine, I guess."),
                                                     (" a waste of time.", " fine, I guess.")]
    assert {c[3] for c in cands} == {"imported"} and all(c[4] for c in cands) and {c[5] for c in cands} == {0}
    assert decode_messages(cands[4][0]) == CHAT
    labels = table(root, "SELECT c.completion_a, l.outcome, l.source FROM labels l "
                         "JOIN candidates c ON c.id = l.candidate_id ORDER BY l.id")
    assert labels == [(" and loved it.", "a", "imported"), ("The acting.", "b", "imported")]
    # Labeled pairs are out of the queue; the unlabeled ones (3 + the winner-less arena row) are in.
    assert table(root, "SELECT count(*) FROM queue WHERE NOT prompt_labeled") == [(4,)]
    # Importing the same file again changes nothing.
    again = cli("import", str(f), "--completions", "--store", str(root))
    assert again.exit_code == 0 and "6 already in the store" in again.output
    assert table(root, "SELECT count(*), (SELECT count(*) FROM labels) FROM candidates") == [(6, 2)]


def test_ignore_verdicts_imports_pairs_unlabeled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 model_cache: Path) -> None:
    root = new_store(tmp_path, monkeypatch, model_cache)
    f = write_jsonl(tmp_path / "c.jsonl", GOOD)
    assert cli("import", str(f), "--completions", "--ignore-verdicts", "--store", str(root)).exit_code == 0
    assert table(root, "SELECT count(*) FROM labels") == [(0,)]
    assert table(root, "SELECT count(*) FROM queue WHERE NOT prompt_labeled") == [(6,)]


@pytest.mark.parametrize(("row", "message"), [
    ({"prompt": "x", "completions": ["only one"]}, "c.jsonl:2: 1 completion; a pair needs 2"),
    ({"prompt": [{"role": "assistant", "content": "hi"}], "completions": ["a", "b"]},
     "c.jsonl:2: the messages have no user turn"),
    ({"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
      "completions": ["a", "b"]}, "the last message is a assistant turn"),
    ({"prompt": "x", "completions": ["same", "same "]}, "completions 1 and 2 are the same text"),
    ({"prompt": "x", "chosen": "a", "completions": ["b", "c"]}, "both completions and chosen"),
    ({"prompt": "x", "chosen": "a"}, "chosen without rejected"),
    ({"prompt": "x", "response_a": "a", "response_b": "b", "winner": "left"}, "winner 'left'"),
    ({"completions": ["a", "b"]}, "no 'prompt' field"),
    ("{not json", "c.jsonl:2: not JSON"),
])
def test_bad_row_is_one_line_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 model_cache: Path, row: Any, message: str) -> None:
    root = new_store(tmp_path, monkeypatch, model_cache)
    f = write_jsonl(tmp_path / "c.jsonl", [GOOD[0], row])
    r = cli("import", str(f), "--completions", "--store", str(root))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert message in r.output and "nothing imported" in r.output
    assert table(root, "SELECT (SELECT count(*) FROM prompts), (SELECT count(*) FROM candidates)") == [(0, 0)]


def test_long_completions_are_cut_with_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 model_cache: Path) -> None:
    root = new_store(tmp_path, monkeypatch, model_cache)
    long_a = " good" * 40
    f = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "It was", "completions": [long_a, " bad"]}])
    r = cli("import", str(f), "--completions", "--max-completion-tokens", "8", "--store", str(root))
    assert r.exit_code == 0, r.output
    assert "1 completion longer than 8 tokens cut" in r.output
    assert table(root, "SELECT completion_a, tokens_a, eos_a, completion_b, eos_b FROM candidates") == [
        (" good" * 8, 8, False, " bad", True)]


def test_completions_identical_after_the_cut_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         model_cache: Path) -> None:
    root = new_store(tmp_path, monkeypatch, model_cache)
    # Longer than tiny-random's context (512) minus the prompt's room (64): both cut to the same text.
    f = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "It was", "completions": [" good" * 600 + " end A",
                                                                               " good" * 600 + " end B"]}])
    r = cli("import", str(f), "--completions", "--store", str(root))
    assert r.exit_code == 1 and "c.jsonl:1: completions 1 and 2 are the same after cutting them to 448 tokens" \
        in r.output
    assert table(root, "SELECT count(*) FROM candidates") == [(0,)]


def test_parquet_rows_and_test_prompt_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            model_cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = new_store(tmp_path, monkeypatch, model_cache)
    f = tmp_path / "c.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "A", "chosen": "x", "rejected": "y"},
                                         {"prompt": "B", "chosen": "z", "rejected": "w"}]), f)
    assert [r.verdict for r in read_completions(f)] == ["a", "a"]
    with Store(root) as s:
        s.add_prompts(["B"], split="test", source="t")
    r = cli("import", str(f), "--completions", "--store", str(root))
    assert r.exit_code == 1 and "already a test prompt" in r.output
    assert table(root, "SELECT count(*) FROM candidates") == [(0,)]
    assert cli("import", str(f), "--completions", "--split", "test", "--store", str(root)).exit_code == 1


def test_read_completions_rejects_other_formats(tmp_path: Path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("prompt,chosen\n", encoding="utf-8")
    with pytest.raises(ImportDataError, match="reads .jsonl or .parquet"):
        read_completions(f)


# --- chat prompts --------------------------------------------------------------------------------


def test_messages_round_trip_and_validation() -> None:
    assert decode_messages(encode_messages(CHAT)) == CHAT
    assert decode_messages('[{"role": "user"') is None and decode_messages("plain") is None
    with pytest.raises(MessagesError, match="system turn after"):
        validate_messages([{"role": "user", "content": "a"}, {"role": "system", "content": "b"},
                           {"role": "user", "content": "c"}])


def test_plain_import_accepts_chat_prompts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           model_cache: Path) -> None:
    root = new_store(tmp_path, monkeypatch, model_cache)
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": CHAT}, {"messages": CHAT[1:2]}, {"prompt": "plain"}])
    assert cli("import", str(f), "--store", str(root)).exit_code == 0
    texts = [t for (t,) in table(root, "SELECT text FROM prompts ORDER BY id")]
    assert [decode_messages(t) for t in texts] == [CHAT, CHAT[1:2], None]
    bad = write_jsonl(tmp_path / "b.jsonl", [{"prompt": [{"role": "system", "content": "x"}]}])
    r = cli("import", str(bad), "--store", str(root))
    assert r.exit_code == 1 and "b.jsonl:1: the messages have no user turn" in r.output


def test_policy_renders_chat_prompts_with_the_template(tiny_policy: Any) -> None:
    tok = tiny_policy.tokenizer
    tiny_policy.cfg = type(tiny_policy.cfg)(spec="tiny-random", max_prompt_tokens=200)
    ids = tiny_policy.encode_prompts([encode_messages(CHAT), "plain text"])
    expected = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert tok.decode(ids[0]) == expected
    assert ids[1] == tok("plain text")["input_ids"]  # plain prompts untouched (use_chat_template off)
    # Without a system turn, none is injected (the template's default system prompt is cut).
    text = tok.decode(tiny_policy.encode_prompts([encode_messages(CHAT[1:])])[0])
    assert text.startswith("<|im_start|>user\nWas Alien good?<|im_end|>\n<|im_start|>assistant\nYes.")
    assert "system" not in text
    tok_without = type(tok).from_pretrained(tok.name_or_path) if tok.name_or_path else None
    if tok_without is not None:
        tok_without.chat_template = None
        tiny_policy.tokenizer = tok_without
        with pytest.raises(ModelError, match="need a chat template"):
            tiny_policy.encode_prompts([encode_messages(CHAT)])


async def test_tui_shows_a_chat_prompt_as_a_conversation(tmp_path: Path) -> None:
    from apl_tui.desk import LabelDesk
    from apl_tui.records import NewCandidate
    from apl_tui.tui.app import LabelApp

    store = Store.create(tmp_path / "s")
    store.add_prompts([encode_messages(CHAT)], split="train", source="t")
    store.add_candidates([NewCandidate(1, "Because of the alien.", "It was not.", 0, 0.7, 1.0, 24)])
    app = LabelApp(LabelDesk(store))
    async with app.run_test(size=(120, 40)):
        shown = app.screen.query_one("#prompt-text").content
        assert str(shown) == ("system  You review films.\nuser  Was Alien good?\nassistant  Yes.\nuser  Why?")
        last = [s for s in shown.spans if s.start >= len(str(shown)) - len("Why?")]
        assert last and all("bold" in str(s.style) for s in last)  # the last user turn stands out
        assert app.screen.query_one("#prompt-box").border_title == "conversation (4 turns)"
    store.close()


def test_shipped_example_files_parse() -> None:
    from apl_tui.importer import read_prompts

    examples = Path(__file__).resolve().parent.parent / "examples"
    rows = read_completions(examples / "imdb" / "completions.jsonl")
    assert len(rows) == 32 and sum(r.verdict == "a" for r in rows) == 16
    assert all(len(r.completions) == 3 for r in rows if r.verdict is None)
    used = {p.casefold() for name in ("train", "test") for p in read_prompts(examples / "imdb" / f"{name}.jsonl")}
    assert not {r.prompt.casefold() for r in rows} & used  # never a test prompt (the import would refuse it)
    chats = [decode_messages(p) for p in read_prompts(examples / "chat" / "conversations.jsonl")]
    assert len(chats) == 8 and all(c and c[-1]["role"] == "user" for c in chats)

"""`apl demo`, `apl serve`, `apl label` up to the point where the app would start, and the snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import apl_tui.cli.ui as ui
from apl_tui.cli.common import app
from apl_tui.desk import LabelDesk
from apl_tui.store import Store
from apl_tui.tui.app import LabelApp
from tests.test_tui import make_store


def test_prepare_demo_creates_store_and_imports_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    done = ui.prepare_demo(root, "tiny-random")
    assert done[0].startswith(f"created a new store in {root}/")
    assert any("train prompts" in d for d in done) and any("test prompts" in d for d in done)
    with Store(root) as s:
        counts = s.prompt_counts()
        assert counts["train"] > 0 and counts["test"] > 0
        assert s.load_config().model.spec == "tiny-random"
    assert ui.prepare_demo(root, "tiny-random") == []  # second run: nothing to do
    with Store(root) as s:
        assert s.prompt_counts() == counts


def test_demo_runs_the_app_on_the_prepared_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Any] = []
    monkeypatch.setattr(ui, "run_app", lambda engine, **kw: ran.append(engine))
    result = CliRunner().invoke(app, ["demo", "--store", str(tmp_path / "s"), "--model", "tiny-random"])
    assert result.exit_code == 0, result.output
    assert ran and ran[0].config.model.spec == "tiny-random"


def test_label_without_store_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["label", "--store", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "no store at" in result.output and "Traceback" not in result.output


def test_serve_refuses_a_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--store", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "no store at" in result.output


def test_serve_builds_the_label_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import textual_serve.server as server

    seen: dict[str, Any] = {}

    class FakeServer:
        def __init__(self, command: str, host: str, port: int, title: str) -> None:
            seen.update(command=command, host=host, port=port)

        def serve(self) -> None:
            seen["served"] = True

    monkeypatch.setattr(server, "Server", FakeServer)
    make_store(tmp_path / "s").close()
    result = CliRunner().invoke(app, ["serve", "--store", str(tmp_path / "s"), "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert seen["served"] and seen["host"] == "127.0.0.1" and seen["port"] == 8123
    assert "apl_tui label --browser --store" in seen["command"] and str((tmp_path / "s").resolve()) in seen["command"]


async def test_snapshot_follows_labels_for_other_processes(tmp_path: Path) -> None:
    import duckdb

    store = make_store(tmp_path / "s")
    labels_file = tmp_path / "s" / "snapshot" / "labels.parquet"
    app_ = LabelApp(LabelDesk(store), snapshot_interval_s=0.05)
    n = -1
    async with app_.run_test(size=(80, 24)) as pilot:
        await pilot.press("1", "2")
        for _ in range(200):  # the debounced snapshot lands within a few intervals
            await pilot.pause(0.02)
            try:
                n = duckdb.connect().execute("select count(*) from read_parquet(?)", [str(labels_file)]).fetchone()[0]
            except duckdb.IOException:  # not written yet, or being swapped in
                continue
            if n == 2:
                break
        assert n == 2
    store.close()


def test_apl_next_shows_the_pair_the_app_shows_and_records_nothing(tmp_path: Path) -> None:
    from tests.helpers import make_store as make_helper_store
    from tests.helpers import score_all

    store = make_helper_store(tmp_path / "s", prompts=6)
    score_all(store, {c["id"]: float(c["id"]) for c in store.candidates()})
    store.close()
    runner = CliRunner()
    first = runner.invoke(app, ["next", "--store", str(tmp_path / "s"), "--json"])
    again = runner.invoke(app, ["next", "--store", str(tmp_path / "s"), "--json"])
    assert first.exit_code == 0, first.output
    assert first.stdout == again.stdout
    with Store(tmp_path / "s") as s:
        assert s.impression_count() == 0  # peeking recorded nothing
        shown = LabelDesk(s).next_pair()  # what the app would show
    assert shown is not None
    assert f'"candidate_id": {shown.candidate_id}' in first.stdout and f'"left": "{shown.left}"' in first.stdout
    text = runner.invoke(app, ["next", "--store", str(tmp_path / "s")]).stdout
    assert "rank 1" in text and "None" not in text and "already on the labeling screen" in text

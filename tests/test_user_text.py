"""User text is never read as Rich markup (issue 15): [brackets] in errors, paths, prompts and
results are printed as they are, in the CLI and in the app.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from apl_tui.cli import app
from apl_tui.desk import LabelDesk
from apl_tui.events import WarningRaised
from apl_tui.records import NewCandidate
from apl_tui.store import Store
from apl_tui.tui.app import LabelApp
from apl_tui.tui.messages import LearnerReported, LearnerStepFinished
from apl_tui.tui.screens.error import ErrorDialog
from tests.helpers import make_store

runner = CliRunner()


def test_an_unknown_config_section_is_named_with_its_brackets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[trian]\nepochs = 2\n")
    r = runner.invoke(app, ["init", "--store", str(tmp_path / "s"), "--config", str(cfg)])
    assert r.exit_code == 1 and r.stderr.startswith("error: ") and "unknown section [trian]" in r.stderr
    assert "hint: sections: model," in r.stderr


def test_a_store_path_with_markup_is_printed_whole(tmp_path: Path) -> None:
    missing = tmp_path / "x" / "[bold]y" / "[/]z"
    for command in (["stats"], ["sql", "select 1"], ["export"], ["next"]):
        r = runner.invoke(app, [*command, "--store", str(missing)])
        assert r.exit_code == 1 and f"no store at {missing}" in r.stderr, command


def test_apl_next_and_apl_sql_print_bracketed_text_as_it_is(tmp_path: Path) -> None:
    store = Store.create(tmp_path / "s")
    store.add_prompts(["[bold]The film[/] [control] was"], split="train", source="t.txt")
    pid = store.sample_prompts(1)[0][0]
    store.add_candidates([NewCandidate(pid, "[red]great[/red]", "[link=x]bad[/link]", 0, 1.0, 1.0, 8)])
    store.close()
    r = runner.invoke(app, ["next", "--store", str(tmp_path / "s")])
    assert r.exit_code == 0, r.stderr
    for text in ("[bold]The film[/] [control] was", "[red]great[/red]", "[link=x]bad[/link]"):
        assert text in r.stdout
    r = runner.invoke(app, ["sql", "select text as \"[b]col\" from prompts", "--store", str(tmp_path / "s"),
                            "--format", "table"])
    assert r.exit_code == 0 and "[bold]The film[/] [control] was" in r.stdout and "[b]col" in r.stdout


def test_progress_warnings_keep_their_brackets(capsys) -> None:
    from apl_tui.cli.progress import RichSink

    with RichSink() as sink:
        sink(WarningRaised("prompt [train] 12 cut to 24 tokens"))
    assert "warning: prompt [train] 12 cut to 24 tokens" in capsys.readouterr().err


async def test_the_app_shows_bracketed_errors_and_warnings_whole(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    app_ = LabelApp(LabelDesk(store))
    async with app_.run_test(size=(120, 30)) as pilot:
        app_.push_screen(ErrorDialog("unknown section [train] in /x/[bold]y", "fix [train] in config.toml"))
        await pilot.pause()
        dialog = app_.screen
        assert str(dialog.query_one("#error-message").content) == "unknown section [train] in /x/[bold]y"
        assert str(dialog.query_one("#error-hint").content) == "hint: fix [train] in config.toml"
        await pilot.press("escape")
        app_.post_message(LearnerReported(WarningRaised("judge said [bold]no[/]")))
        await pilot.pause()
        shown = [str(n.message) for n in app_._notifications]
        assert "judge said [bold]no[/]" in shown
        app_.post_message(LearnerStepFinished("failed on /x/[bold]y"))
        await pilot.pause()
        assert "failed on /x/[bold]y" in str(app_.label_screen.query_one("#status").content)

"""`apl serve` end to end: a websocket client stands in for the browser (aiohttp, as textual-serve).

A session's app process must end when its connection goes (closed page, or a server that dies),
so the next session can open the store and label at once; a store that is busy says so in the page.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apl_tui.config import AplConfig
from apl_tui.store import Store
from tests.helpers import make_store

aiohttp = pytest.importorskip("aiohttp")
pytest.importorskip("textual_serve")

# Polling bounds, not timing assertions: each loop stops as soon as its condition holds.
WAIT_S = 120.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _label_processes(store: Path) -> list[int]:
    """Pids of `apl_tui label` processes on this store (the apps the server spawned)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"label" in cmd and str(store).encode() in cmd and b"apl_tui" in cmd:
            pids.append(int(entry.name))
    return pids


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting: {what}")
        time.sleep(0.2)


def _serve(store: Path, port: int, cache: Path) -> subprocess.Popen:
    env = os.environ | {"OMP_NUM_THREADS": "1", "APL_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "apl_tui", "serve", "--store", str(store), "--port", str(port)]
    # Its own process group, so a failed test can stop the server and whatever it spawned.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    _wait(lambda: _port_open(port), "the server to listen")
    return proc


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def _session(port: int, needle: str, keys: str = "") -> str:
    """Open a page's websocket, read the screen until `needle` shows, type `keys`, close the page."""
    seen = ""
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30") as ws:
            deadline = time.monotonic() + WAIT_S
            while needle not in seen:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the page never showed {needle!r}")
                msg = await ws.receive(timeout=WAIT_S)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    seen += msg.data.decode("utf-8", "replace")
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    seen += msg.data
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
            for key in keys:
                await ws.send_json(["stdin", key])
                await asyncio.sleep(1.0)  # let the app commit it before the page closes
    return seen


def _stop(proc: subprocess.Popen, store: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                continue
    for pid in _label_processes(store):
        os.kill(pid, signal.SIGKILL)


def _store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    cfg = AplConfig().replace("model", spec="tiny-random", device="cpu")
    make_store(root, prompts=12, config=cfg).close()
    return root


def _labels(root: Path) -> int:
    with Store(root, read_only=True) as s:
        return int(s.query("SELECT count(*) FROM labels")[1][0][0])


def test_closing_a_page_ends_its_app_and_the_next_page_labels_at_once(tmp_path: Path, model_cache: Path) -> None:
    root, port = _store(tmp_path), _free_port()
    proc = _serve(root, port, model_cache)
    try:
        # page 1: the app starts (its worker loads the model meanwhile); the page is closed
        asyncio.run(_session(port, "prompt"))
        _wait(lambda: not _label_processes(root), "the closed page's app to exit")
        # page 2 opens the store at once and labels
        asyncio.run(_session(port, "prompt", keys="1"))
        _wait(lambda: not _label_processes(root), "the second page's app to exit")
        assert _labels(root) == 1
        # a server that dies without closing its pages: the orphaned app notices and exits
        asyncio.run(_session_then_kill_server(port, proc))
        _wait(lambda: not _label_processes(root), "the orphaned app to exit")
    finally:
        _stop(proc, root)


async def _session_then_kill_server(port: int, proc: subprocess.Popen) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30") as ws:
            seen = ""
            while "prompt" not in seen:
                msg = await ws.receive(timeout=WAIT_S)
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                seen += msg.data.decode("utf-8", "replace")
            proc.send_signal(signal.SIGKILL)  # only the server: its app is left behind
            proc.wait(10)


def test_a_busy_store_says_so_in_the_page(tmp_path: Path, model_cache: Path) -> None:
    root, port = _store(tmp_path), _free_port()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from apl_tui.store import Store; "
                               "s = Store(sys.argv[1]); print('open', flush=True); time.sleep(600)", str(root)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    proc = None
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        proc = _serve(root, port, model_cache)
        seen = asyncio.run(_session(port, "cannot start"))
        assert "in use" in seen
    finally:
        holder.kill()
        if proc is not None:
            _stop(proc, root)

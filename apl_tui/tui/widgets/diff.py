"""Word-level differences between two completions, as Rich Text (pure functions, no widgets)."""

from __future__ import annotations

import difflib
import re

from rich.text import Text

_TOKEN = re.compile(r"\s+|[^\s]+")
DIFF_STYLE = "bold reverse"
"""Style of words that differ; reverse video survives 16-colour terminals and tmux."""


def tokens(text: str) -> list[str]:
    """Split into words and the whitespace between them, so joining gives the text back.

    >>> tokens("a  b")
    ['a', '  ', 'b']
    """
    return _TOKEN.findall(text)


def word_diff(left: str, right: str, style: str = DIFF_STYLE) -> tuple[Text, Text]:
    """Both texts with the words not shared by the other highlighted.

    Whitespace is compared too (so the texts stay intact) but never highlighted.

    >>> a, b = word_diff("the cat sat", "the dog sat")
    >>> [a.plain[s.start:s.end] for s in a.spans], [b.plain[s.start:s.end] for s in b.spans]
    (['cat'], ['dog'])
    """
    lt, rt = tokens(left), tokens(right)
    out_l, out_r = Text(), Text()
    matcher = difflib.SequenceMatcher(a=lt, b=rt, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        for toks, out, lo, hi in ((lt, out_l, i1, i2), (rt, out_r, j1, j2)):
            for tok in toks[lo:hi]:
                out.append(tok, style=None if op == "equal" or tok.isspace() else style)
    return out_l, out_r

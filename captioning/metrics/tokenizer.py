"""Caption tokenisation the way coco-caption's PTBTokenizer does it, in Python (no Java).

coco-caption runs Stanford's PTBTokenizer (``-preserveLines -lowerCase``) and then drops
its punctuation tokens. We reproduce the splitting rules that matter for captions:
lowercasing, clitics (``n't 's 're 've 'll 'd 'm``) split off, punctuation split off,
brackets and quotes turned into tokens that are then dropped; hyphenated words, numbers
such as ``3.5`` and ``1,000``, and abbreviations with inner periods stay whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# Tokens coco-caption removes after PTB tokenisation.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
     "-", "--", "...", ";"]
)  # fmt: skip
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}

_TOKEN = re.compile(
    r"""
    (?P<number>\d+(?:[.,:/]\d+)+)                 # 3.5  1,000  10:30  1/2
  | (?P<clitic>n't|'(?:s|re|ve|ll|d|m)\b)         # clitics split off the word before
  | (?P<word>(?:[a-z]\.){2,}                    # u.s.  e.g.
     | [^\W_]+(?:[-&'][^\W_]+)*?(?=n't\b)        # the word before n't ("does|n't")
     | [^\W_]+(?:(?:[-&]|'(?!(?:s|re|ve|ll|d|m|t)\b))[^\W_]+)*)  # hyphens, o'clock
  | (?P<ellipsis>\.\.\.+)
  | (?P<dashes>--+)
  | (?P<quote>``|''|["'`])
  | (?P<other>\S)
    """,
    re.VERBOSE,
)


def ptb_tokens(text: str) -> list[str]:
    """PTB tokens of lowercased text, punctuation still included."""
    tokens = []
    for match in _TOKEN.finditer(text.lower()):
        kind, token = match.lastgroup, match.group()
        if kind == "quote":
            token = (
                "``" if token in ("``", "`") or (token == '"' and _opening(text, match)) else "''"
            )
        elif kind == "other":
            token = _BRACKETS.get(token, token)
        tokens.append(token)
    return tokens


def _opening(text: str, match: re.Match) -> bool:
    start = match.start()
    return start == 0 or text[start - 1].isspace() or text[start - 1] in "([{"


def tokenize(text: str) -> list[str]:
    """Tokens coco-caption would score: lowercased PTB tokens without its punctuation."""
    return [t for t in ptb_tokens(text) if t not in PUNCTUATIONS]


def tokenize_corpus(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Like ``PTBTokenizer.tokenize``: id -> list of space-joined tokenised captions."""
    return {key: [" ".join(tokenize(c)) for c in caps] for key, caps in captions.items()}

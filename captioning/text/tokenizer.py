"""Caption tokenisation exactly as coco-caption's ``PTBTokenizer`` does it, without Java.

coco-caption runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` over all
captions (one per line) and then drops the tokens in its ``PUNCTUATIONS`` list. This module is
our own Python re-implementation of that lexer's behaviour: a JFlex-style scanner that, at each
position, takes the longest match over an ordered list of rules (trailing context counts towards
the length, ties go to the earlier rule), with the same token rewrites (``(`` -> ``-LRB-``,
LaTeX-style quotes, ``cannot`` -> ``can not``, dashes -> ``--``, ...), then lowercases.
The lexer's macros are in :mod:`captioning.text.ptb_grammar`, its rules and token rewrites in
:mod:`captioning.text.ptb_rules`; this module scans with them.

Quirks reproduced on purpose because the reference numbers depend on them:

* brackets become ``-lrb-``/``-rrb-`` *after* lowercasing, so coco-caption's filter (which lists
  ``-LRB-``) never removes them;
* ``?!``, ``!!``, ``&``, ``%``, ``$``, ``#`` and other symbols are kept as tokens;
* "fractions" and phone numbers such as ``2 1/2`` are one token with a non-breaking space inside;
* characters the lexer does not know (emoji, astral-plane symbols) are silently deleted.

Each caption is lexed as if followed by a newline and a lower-case line (how it sits inside
coco-caption's batch). The only outputs that depend on the next caption are a final one-letter
acronym ("... letter I." before a line starting "The ...") and a final ``1.jpg``-like file name
on the very last line; line separators other than ``\\n`` inside a caption (``\\r``, U+2028...)
shift coco-caption's line alignment, which we do not imitate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

from captioning.text.ptb_grammar import ABBREV1, ABBREV2, ABBREV3, ci
from captioning.text.ptb_rules import RULES, Rule

# Tokens coco-caption removes after PTB tokenisation (compared after lowercasing, hence the
# upper-case bracket names never match).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
     "-", "--", "...", ";"]
)  # fmt: skip

# Bump when tokenisation changes: cached tokenised records (captioning.data.cache) key on it.
TOKENIZER_VERSION = "ptb-coco-1"


_CANDIDATES: dict[str, tuple[Rule, ...]] = {}
# no other rule starts with " " or "\\t", so the whole run of spaces goes (no-break ones too)
_SPACES = re.compile("[ \\t][ \\t\u00a0\u2000-\u200a\u3000]*")
# Fast path for the common shapes of caption text, whose tokens no other rule can lengthen: an
# ASCII word before a space, a clitic ("dog|'s ") or a comma / full stop (unless the word is
# one the lexer splits, or "word." an abbreviation); a number before a space that starts no
# phone number or fraction ("2 1/2"); a clitic, comma or full stop before a space.
_FAST = re.compile(
    "([A-Za-z]+)(?=[ \\t\\n]|'(?:[sdm]|re|ve|ll)[ \\t\\n]|,[ \\t\\n]|(\\.)[ \\t\\n])"
    "|[0-9]+(?=[\\t\\n]| (?![0-9]))"
    "|(?:'(?:[sdm]|re|ve|ll)|,|\\.(?![ \u00a0]\\.))(?=[ \\t\\n])"
)
_SPLIT_WORDS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_ABBREVIATION = re.compile(f"{ABBREV1}|{ABBREV2}|{ABBREV3}|{ci('pt')}[eyEY]\\.|{ci('co')}\\.")
_PLAIN_BEFORE_STOP: dict[str, bool] = {}
# most captions: ASCII words separated by single spaces, perhaps a final full stop
_SIMPLE_CAPTION = re.compile("[A-Za-z]+(?: [A-Za-z]+)*( ?\\.)?")


def _plain_before_stop(word: str) -> bool:
    """Whether ``word.`` lexes as ``word`` + ``.`` (it is no abbreviation such as ``Mr.``)."""
    plain = _PLAIN_BEFORE_STOP.get(word)
    if plain is None:
        plain = _ABBREVIATION.fullmatch(word + ".") is None
        _PLAIN_BEFORE_STOP[word] = plain
    return plain


def _candidates(char: str) -> tuple[Rule, ...]:
    rules = _CANDIDATES.get(char)
    if rules is None:
        rules = tuple(r for r in RULES if r.first is None or r.first.match(char))
        _CANDIDATES[char] = rules
    return rules


@lru_cache(maxsize=1 << 16)
def _ptb_tokens(text: str) -> tuple[str, ...]:
    simple = _SIMPLE_CAPTION.fullmatch(text)
    if simple is not None:
        stop = simple.group(1)
        words = (text[: -len(stop)] if stop else text).lower().split(" ")
        if _SPLIT_WORDS.isdisjoint(words) and (
            stop != "." or _plain_before_stop(text[: -len(stop)].rpartition(" ")[2])
        ):
            return (*words, ".") if stop else tuple(words)
    # as inside coco-caption's one-caption-per-line file: a newline and (say) a lower-case word
    source = text + "\na"
    end = len(text)
    tokens: list[str] = []
    pos = 0
    while pos < end:
        spaces = _SPACES.match(source, pos)
        if spaces:
            pos = spaces.end()
            if pos >= end:
                break
        fast = _FAST.match(source, pos)
        if fast is not None:
            word = fast.group(1)
            if word is None or (
                word.lower() not in _SPLIT_WORDS
                and (fast.group(2) is None or _plain_before_stop(word))
            ):
                tokens.append(fast.group().lower())
                pos = fast.end()
                continue
        best, best_end = None, pos
        for rule in _candidates(source[pos]):
            match = rule.match(source, pos)
            if match is not None and match.end() > best_end:
                best, best_end = (rule, match), match.end()
        if best is None:  # untokenizable: the reference deletes it
            pos += 1
            continue
        rule, match = best
        text_matched = match.group(1)
        if rule.action is None:
            pos += len(text_matched)
            continue
        token, consumed = rule.action(text_matched)
        tokens.append(token.lower())
        pos += consumed
    return tuple(tokens)


def _utf16(text: str) -> str:
    """Astral characters as surrogate pairs: the reference lexes UTF-16 code units."""
    return _ASTRAL.sub(_surrogates, text)


def _surrogates(match: re.Match[str]) -> str:
    offset = ord(match.group()) - 0x10000
    return chr(0xD800 + (offset >> 10)) + chr(0xDC00 + (offset & 0x3FF))


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def ptb_tokens(text: str) -> list[str]:
    """Stanford PTB tokens of one caption, lowercased, punctuation still included."""
    text = text.replace("\n", " ")  # as coco-caption does before writing one caption per line
    if text and max(text) > "\uffff":
        tokens = _ptb_tokens(_utf16(text))
        return [t.encode("utf-16-le", "surrogatepass").decode("utf-16-le") for t in tokens]
    return list(_ptb_tokens(text))


def tokenize(text: str) -> list[str]:
    """Tokens coco-caption would score: lowercased PTB tokens without its punctuation."""
    tokens = ptb_tokens(text)
    if tokens and tokens[-1][-1:].isspace():
        # coco-caption rstrip()s each output line: a final token ending in a no-break space
        # loses it (and vanishes if nothing else is left)
        tokens = " ".join(tokens).rstrip().split(" ")
    return [t for t in tokens if t and t not in PUNCTUATIONS]


def tokenize_corpus(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Like ``PTBTokenizer().tokenize``: id -> list of space-joined tokenised captions.

    Captions may be plain strings or coco-style ``{"caption": ...}`` dicts.
    """
    return {
        key: [" ".join(tokenize(c["caption"] if isinstance(c, Mapping) else c)) for c in caps]
        for key, caps in captions.items()
    }

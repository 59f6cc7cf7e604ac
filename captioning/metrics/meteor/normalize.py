"""METEOR's ``-norm`` for English, and the few Java string behaviours it depends on.

``normalize`` follows ``edu.cmu.meteor.util.Normalizer.normalizeLine(line, LANG_EN,
keepPunctuation=True)`` step by step (Java regular expressions translated: ``\\s``,
``\\p{Digit}`` and ``\\p{Lower}`` are ASCII-only there), then lowercases as the scorer does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from captioning.metrics.meteor.resources import ANY, NUMERIC_ONLY

# Normalizer's letter ranges: Western European and Cyrillic
_ALPHA = "A-Za-z\u0160\u017d\u0161\u017e\u0178\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u017e" + (
    "\u0400-\u04ff\u0500-\u0527\ua640-\ua66e\ua67e-\ua697\u1d00-\u1d7f"
)
_ALNUM = "0-9" + _ALPHA
_JAVA_SPACE = " \t\n\x0b\f\r"  # Java's \s

_SEPARATE_OTHER = re.compile(f"([^{_ALNUM}{_JAVA_SPACE}.'`,\\-\u2018\u2019])")
_MULTI_DOT = re.compile(r"\.(\.+)")
_MULTI_DOT2 = re.compile(r"DOTMULTI\.([^.])")
_COMMA = re.compile(r"([^0-9]),([^0-9])")
_COMMA2 = re.compile(r"([0-9]),([^0-9])")
_COMMA3 = re.compile(r"([^0-9]),([0-9])")
_QUOTE = re.compile("[`\u2018\u2019]")
_QUOTE2 = re.compile("[\u201c\u201d]|''")
_REMOVE_DASH = re.compile(f"([{_ALNUM}.])-([{_ALNUM}])")
_CONTRACTION = re.compile(f"([^{_ALPHA}])'([^{_ALPHA}])")
_CONTRACTION2 = re.compile(f"([^{_ALPHA}0-9])'([{_ALPHA}])")
_CONTRACTION3 = re.compile(f"([{_ALPHA}])'([^{_ALPHA}])")
_CONTRACTION4 = re.compile(f"([{_ALPHA}])'([{_ALPHA}])")
_CONTRACTION5 = re.compile("([0-9])'(s)")
_LETTER = re.compile(f"[{_ALPHA}]")
_NUMBER_START = re.compile("^[0-9]+")
_WHITE = re.compile("[  \u2000-\u200a\u202f\u205f\u3000\u00a0]+")
_DELIMITERS = re.compile("[ \t\n\r\f]+")  # java.util.StringTokenizer's defaults
_PLAIN = re.compile("[a-z0-9 ]*")  # what PTB-tokenised captions mostly are


def java_tokens(line: str) -> list[str]:
    """``new StringTokenizer(line)``: split at space, tab, newline, CR, form feed."""
    return [token for token in _DELIMITERS.split(line) if token]


def java_trim(text: str) -> str:
    """``String.trim()``: strips every character up to U+0020, no other whitespace."""
    start, stop = 0, len(text)
    while start < stop and text[start] <= " ":
        start += 1
    while stop > start and text[stop - 1] <= " ":
        stop -= 1
    return text[start:stop]


def java_hash(word: str) -> int:
    """``String.hashCode()`` (over UTF-16 code units, as an unsigned 32-bit value)."""
    value = 0
    data = word.encode("utf-16-be", "surrogatepass")
    for k in range(0, len(data), 2):
        value = (31 * value + (data[k] << 8 | data[k + 1])) & 0xFFFFFFFF
    return value


def normalize(line: str, prefixes: Mapping[str, int]) -> str:
    """``line`` as METEOR 1.5 sees it under ``-l en -norm``: tokenised and lowercased."""
    if _PLAIN.fullmatch(line):  # no step below changes lowercase letters, digits and spaces
        return " ".join(line.split())
    text = _SEPARATE_OTHER.sub(r" \1 ", f" {line} ")
    text = _MULTI_DOT.sub(r" DOTMULTI\1", text)
    while "DOTMULTI." in text:
        text = _MULTI_DOT2.sub(r"DOTDOTMULTI \1", text)
        text = text.replace("DOTMULTI.", "DOTDOTMULTI")
    for comma in (_COMMA, _COMMA2, _COMMA3):
        text = comma.sub(r"\1 , \2", text)
    text = _QUOTE2.sub(' " ', _QUOTE.sub("'", text))
    text = text.replace("\u2013", "-").replace("--", "-")
    text = _REMOVE_DASH.sub(r"\1 \2", text)
    for contraction in (_CONTRACTION, _CONTRACTION2, _CONTRACTION3):
        text = contraction.sub(r"\1 ' \2", text)
    text = _CONTRACTION4.sub(r"\1 '\2", text)
    text = _CONTRACTION5.sub(r"\1 '\2", text)
    words = java_tokens(text)
    rebuilt = []
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else None
        if len(word) > 1 and word.endswith("."):
            prefix = word[:-1]
            kind = prefixes.get(prefix)
            if "." in prefix and _LETTER.search(prefix):
                word = word.replace(".", "")  # U.S. -> US
            elif kind == ANY or (following is not None and "a" <= following[0] <= "z"):
                pass  # a listed prefix, or followed by a lowercase word (Inc. ...)
            elif kind == NUMERIC_ONLY and following is not None and _NUMBER_START.match(following):
                pass
            else:
                word = prefix + " ."
        rebuilt.append(word)
    text = "".join(word + " " for word in rebuilt)
    while "DOTDOTMULTI" in text:
        text = text.replace("DOTDOTMULTI", "DOTMULTI.")
    text = text.replace("DOTMULTI", ".")
    return java_trim(_WHITE.sub(" ", text)).lower()

"""The lexer's rules in the reference's order, with the token each match becomes.

Each rule is (characters a match can start with, token, trailing context, action); the scanner
in :mod:`captioning.text.tokenizer` takes the longest match over the rules that can start at a
character, the earlier rule on ties, as the reference's JFlex lexer does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from captioning.text.ptb_grammar import (
    ABBREV1,
    ABBREV2,
    ABBREV3,
    ABBREV4,
    ACRO,
    ACRONYM,
    APOWORD,
    APOWORD2,
    ASIANSMILEY,
    DATE,
    DBLQUOT,
    DOLSIGN,
    DOLSIGN2,
    EMAIL,
    FILENAME,
    FRAC,
    FRAC2,
    FULLURL,
    HTHING,
    INSENTP,
    L0,
    LDOTS,
    LETTER_CHARS,
    LETTER_EXTRA_CHARS,
    LIKELYURL,
    MISCSYMBOL,
    NBSP,
    NEWLINE_CHARS,
    NUMBER,
    PHONE,
    QUOTES,
    REDAUX,
    SENTENCE_STARTS,
    SGML,
    SMILEY,
    SPACE,
    SPACENL,
    SPAMP,
    SPMDASH,
    SPPUNC,
    SREDAUX,
    SUBSUPNUM,
    SWORD,
    TBSPEC,
    TBSPEC2,
    THING,
    THING3,
    THINGA,
    TWITTER,
    UPPER,
    WORD,
    ci,
)

# ---------------------------------------------------------------------- token rewrites

_LEFT_SINGLE = re.compile("[\\x91\u2018\u201b\u2039]")
_RIGHT_SINGLE = re.compile("[\\x92\u2019\u203a]")
_LEFT_DOUBLE = re.compile("[\\x93\u201c\u00ab]")
_RIGHT_DOUBLE = re.compile("[\\x94\u201d\u00bb]")
_AMP = re.compile("(?i:&amp;)")
_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_CURRENCY = {
    "\u00a2": "cents",
    "\u00a3": "#",
    "\x80": "$",
    "\u00a4": "$",
    "\u20a0": "$",
    "\u20ac": "$",
}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "{": "-LCB-", "}": "-RCB-", "[": "-LSB-", "]": "-RSB-"}

Action = Callable[[str], tuple[str, int]]  # matched token text -> (token, characters consumed)


def _quotes(text: str, left: bool) -> str:
    """LaTeX-style quotes; ``left`` is the lexer's guess that an ASCII quote opens."""
    text = text.replace("&apos;", "'").replace("'", "`" if left else "'")
    text = text.replace("&quot;", '"').replace('"', "``" if left else "''")
    text = _LEFT_SINGLE.sub("`", text)
    text = _RIGHT_SINGLE.sub("'", text)
    text = _LEFT_DOUBLE.sub("``", text)
    return _RIGHT_DOUBLE.sub("''", text)


def _soft(text: str) -> str:
    """Soft hyphens are dropped (but a token never becomes empty)."""
    return text.replace("\u00ad", "") or "-"


def _parens(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


def _emit(rewrite: Callable[[str], str]) -> Action:
    return lambda text: (rewrite(text), len(text))


def _keep(text: str) -> tuple[str, int]:
    return text, len(text)


def _split_after(n: int) -> Action:
    """``cannot`` -> ``can`` now, ``not`` lexed next: keep the first ``n`` characters."""
    return lambda text: (text[:n], n)


def _period_again(text: str) -> tuple[str, int]:
    # "etc." before a capital: the token keeps its period and the period is lexed again
    return text, len(text) - 1


def _acronym(text: str) -> tuple[str, int]:
    # an acronym before a sentence-starting word: "U.S." + "."; a lone "I." -> "I" + "."
    return (text[:-1], 1) if len(text) == 2 else (text, len(text) - 1)


# (characters a match can start with, token, trailing context, action or None to skip), in the
# reference's order. A match's length includes its trailing context; the longest wins, the
# earlier rule on ties (JFlex semantics).
_WORD_START = f"[{LETTER_CHARS}{LETTER_EXTRA_CHARS}&]"
_ALNUM_START = f"[{LETTER_CHARS}{LETTER_EXTRA_CHARS}\\d&]"
_APOS_START = "['\\x92\u2019&]"
_QUOTE_CHARS = "'`\u2018-\u201f\\x91-\\x94\u2039\u203a\u00ab\u00bb"
_PUNCT = ".\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002"
_SKIP_CHARS = f"\\x00 \\t\u00a0\u2000-\u200b\u3000\u200e\u200f\ufeff{NEWLINE_CHARS}"
_RULES_SPEC: list[tuple[str | None, str, str | None, Action | None]] = [
    ("[cCfF]", ci("c++") + "|[cCfF]#", None, _keep),
    ("[cC]", ci("cannot"), None, _split_after(3)),
    ("'", ci("'twas"), None, _split_after(2)),
    ("'", ci("'tis"), None, _split_after(2)),
    ("[gGlLwW]", ci("gonna gotta lemme gimme wanna"), None, _split_after(3)),
    ("<", SGML, None, _emit(lambda t: t.replace(" ", NBSP))),
    ("[&\\x96\\x97\u2013\u2014\u2015]", SPMDASH, None, _emit(lambda t: "--")),
    ("&", SPAMP, None, _emit(lambda t: "&")),
    ("&", SPPUNC, None, _keep),
    (_WORD_START, WORD, REDAUX, _emit(_soft)),
    ("[A-Za-z\u00ad]", SWORD, SREDAUX, _emit(_soft)),
    (_WORD_START, WORD, None, _emit(_soft)),
    (f"[{LETTER_CHARS}'\\x92\u2019&]", APOWORD, None, _keep),
    ("[yY]", APOWORD2, L0, _keep),
    ("[hH]", FULLURL, None, _keep),
    (None, LIKELYURL, None, _keep),
    ("[<&a-zA-Z0-9]", EMAIL, None, _keep),
    ("[@#]", TWITTER, None, _keep),
    (_APOS_START, REDAUX, "[^A-Za-z]", _emit(lambda t: _quotes(t, False))),
    ("[nN]", SREDAUX, "[^A-Za-z]", _emit(lambda t: _quotes(t, False))),
    ("\\d", DATE, None, _keep),
    ("[\\-+\\d.:,\u00ad\u066b\u066c]", NUMBER, None, _emit(_soft)),
    ("[\u207a\u207b\u208a\u208b\u2070\u00b9\u00b2\u00b3\u2074-\u2079\u2080-\u2089]", SUBSUPNUM, None, _keep),
    ("\\d", FRAC, None, _emit(lambda t: t.replace(" ", NBSP))),
    (FRAC2, FRAC2, None, _emit(lambda t: _FRACTIONS.get(t, t))),
    ("[\\-cCpPaAsS]", TBSPEC, None, _emit(lambda t: _AMP.sub("&", t))),
    ("[A-Za-z0-9]", THING3, None, _keep),
    ("[A-Z$#]", DOLSIGN, None, _keep),
    (DOLSIGN2, DOLSIGN2, None, _emit(lambda t: _CURRENCY.get(t, t))),
    ("[A-Za-z]", ACRONYM, f"{SPACENL}+(?:{SENTENCE_STARTS}|{SGML}){SPACENL}", _acronym),
    ("[A-Za-z]", ABBREV3, f"{SPACENL}?\\d", _keep),
    ("[pPcC]", f"{ci('pt')}[eyEY]\\.|{ci('co')}\\.", f"{SPACE}{ci('ltd lim')}", _keep),
    ("[A-Za-z]", ABBREV1, f"{SPACENL}(?:{SPACENL}|{UPPER}|{SGML})", _period_again),
    ("[A-Za-z]", ABBREV1, "[\\s\\S][\\s\\S]", _keep),
    ("[A-Za-z]", ABBREV1, None, _period_again),
    ("[A-Za-z]", ABBREV2, None, _keep),
    ("[A-Za-z]", f"(?:{ABBREV4})", SPACE, _keep),
    ("[A-Za-z]", f"(?:{ACRO})", SPACENL, _keep),
    (_APOS_START, TBSPEC2, SPACENL, _keep),
    (_ALNUM_START, FILENAME, f"{SPACENL}|[.?!,]", _keep),
    (_WORD_START, f"(?:{WORD})\\.", INSENTP, _emit(_soft)),
    ("[\\d(+]", PHONE, None, _emit(lambda t: _parens(t.replace(" ", NBSP)))),
    ('["&]', DBLQUOT, "[A-Za-z0-9$]", _emit(lambda t: _quotes(t, True))),
    ('["&]', DBLQUOT, None, _emit(lambda t: _quotes(t, False))),
    ("\\x7f", "\\x7f", None, None),
    ("[<&]", f"<|{ci('&lt;')}", None, _emit(lambda t: "<")),
    ("[>&]", f">|{ci('&gt;')}", None, _emit(lambda t: ">")),
    ("[<>:;=]", SMILEY, "[^A-Za-z0-9]", _emit(_parens)),
    ("[\\^x=~<>'\\-(]", ASIANSMILEY, None, _emit(_parens)),
    ("[{}\\[\\]()]", "[{}\\[\\]()]", None, _emit(lambda t: _BRACKETS[t])),
    ("-", "-+", None, _emit(lambda t: "--" if 3 <= len(t) <= 4 else t)),
    ("[.\\x85\u2026]", LDOTS, None, _emit(lambda t: "...")),
    ("[@#_]", "@+|#+|_+", None, _keep),
    ("[*\\\\]", "\\*+|(?:\\\\\\*){1,3}", None, _keep),
    (INSENTP, INSENTP, None, _keep),
    ("[?!]", "[?!]+", None, _keep),
    (f"[{_PUNCT}]", f"[{_PUNCT}]", None, _keep),
    ("=", "=", None, _keep),
    ("/", "/", None, _keep),
    ("[A-Za-z0-9]", f"(?:{HTHING})\\.", INSENTP, _emit(_soft)),
    ("[A-Za-z0-9]", HTHING, None, _emit(_soft)),
    (f"[{LETTER_CHARS}\\d]", f"(?:{THING})\\.", INSENTP, _keep),
    (f"[{LETTER_CHARS}\\d]", THING, None, _keep),
    ("[A-Z]", f"(?:{THINGA})\\.", INSENTP, _emit(lambda t: _AMP.sub("&", t))),
    ("[A-Z]", THINGA, None, _emit(lambda t: _AMP.sub("&", t))),
    ("'", "'", "[A-Za-z][^ \\t\\n\\r\u00a0]", _emit(lambda t: _quotes(t, True))),
    (_APOS_START, REDAUX, None, _emit(lambda t: _quotes(t, False))),
    ("[nN]", SREDAUX, None, _emit(lambda t: _quotes(t, False))),
    (f"[{_QUOTE_CHARS}&]", QUOTES, None, _emit(lambda t: _quotes(t, False))),
    ("[<>]", "<<|>>", None, _keep),
    (MISCSYMBOL, MISCSYMBOL, None, _keep),
    (f"[{_SKIP_CHARS}]", f"\\x00|{SPACE}+|[\u200b\u200e\u200f\ufeff]|[{NEWLINE_CHARS}]", None, None),
    ("&", ci("&nbsp;"), None, None),
]  # fmt: skip


# Python's backtracking match is not always the longest one JFlex's DFA finds: for these rules
# we also try every longer end, up to the first character they can never contain.
_LONGEST_BEFORE = {
    LIKELYURL: re.compile('[ \\t\\n\\f\\r"<>|()]'),
    EMAIL: re.compile('[ \\t\\n\\f\\r"|(){}\u00a0]'),
}


class Rule:
    __slots__ = ("action", "first", "longest_before", "regex")

    def __init__(self, first: str | None, token: str, context: str | None, action: Action | None):
        self.first = re.compile(first) if first is not None else None
        # group 1 is the token; the trailing context is matched too, as it counts for length
        self.regex = re.compile(f"({token})" + (f"(?:{context})" if context else ""))
        self.action = action
        self.longest_before = _LONGEST_BEFORE.get(token)

    def match(self, source: str, pos: int) -> re.Match[str] | None:
        match = self.regex.match(source, pos)
        if match is not None and self.longest_before is not None:
            stop = self.longest_before.search(source, match.end())
            for end in range(stop.end() if stop else len(source), match.end(), -1):
                longer = self.regex.fullmatch(source, pos, end)
                if longer is not None:
                    return longer
        return match


RULES = [Rule(*spec) for spec in _RULES_SPEC]

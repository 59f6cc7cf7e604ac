"""Caption tokenisation exactly as coco-caption's ``PTBTokenizer`` does it, without Java.

coco-caption runs Stanford CoreNLP 3.4.1's ``PTBTokenizer -preserveLines -lowerCase`` over all
captions (one per line) and then drops the tokens in its ``PUNCTUATIONS`` list. This module is
our own Python re-implementation of that lexer's behaviour: a JFlex-style scanner that, at each
position, takes the longest match over an ordered list of rules (trailing context counts towards
the length, ties go to the earlier rule), with the same token rewrites (``(`` -> ``-LRB-``,
LaTeX-style quotes, ``cannot`` -> ``can not``, dashes -> ``--``, ...), then lowercases.

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
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

# Tokens coco-caption removes after PTB tokenisation (compared after lowercasing, hence the
# upper-case bracket names never match).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":",
     "-", "--", "...", ";"]
)  # fmt: skip

NBSP = "\u00a0"
# Bump when tokenisation changes: cached tokenised records (captioning.data.cache) key on it.
TOKENIZER_VERSION = "ptb-coco-1"


# ---------------------------------------------------------------------- character classes


def _bmp_class(keep: Callable[[str], bool]) -> str:
    """Body of a ``[...]`` class holding the BMP characters ``keep`` accepts."""
    parts, start = [], None
    for cp in range(0x10001):
        inside = cp < 0x10000 and not 0xD800 <= cp <= 0xDFFF and keep(chr(cp))
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            last = cp - 1
            parts.append(
                re.escape(chr(start)) + ("-" + re.escape(chr(last)) if last > start else "")
            )
            start = None
    return "".join(parts)


# JFlex's [:letter:] and [:uppercase:] are Java's Character.isLetter / isUpperCase; the
# reference's tables cover the BMP only (astral characters reach it as surrogate halves).
_LETTERS = _bmp_class(lambda c: unicodedata.category(c).startswith("L"))
_UPPER = _bmp_class(str.isupper)  # like Java, counts Other_Uppercase (e.g. roman numerals)
# the lexer's LETTER macro adds combining marks and other oddments to [:letter:]
_LETTER_EXTRA = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d"
    "\u0384\u0385\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525"
    "\u055a-\u055f\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a"
    "\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef\u06fa-\u06ff\u070f\u0711\u0730-\u074f"
    "\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903\u093c\u093e-\u094e"
    "\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd\u09d7"
    "\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82"
    "\u0bbe-\u0bc2\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44"
    "\u0d46-\u0d48\u0e30-\u0e3a\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)
L0 = f"[{_LETTERS}]"  # [:letter:]
LD0 = f"[{_LETTERS}\\d]"  # [:letter:] | [:digit:]
LETTER = f"(?:[{_LETTERS}{_LETTER_EXTRA}]|&[aeiouAEIOU](?ai:acute|grave|uml);)"
LETTER_OR_DIGIT = f"(?:{LETTER}|\\d)"
UPPER = f"[{_UPPER}]"

SPACE = "[ \\t\u00a0\u2000-\u200a\u3000]"
NEWLINE_CHARS = "\\r\\n\u2028\u2029\\x0b\\x0c\\x85"
SPACENL = f"[ \\t\u00a0\u2000-\u200a\u3000{NEWLINE_CHARS}]"


def ci(words: str) -> str:
    """Case-insensitive (ASCII) alternation of space-separated literal words.

    Like JFlex's %caseless literals (which, unlike Python's ``(?i)``, leave ``[...]`` classes
    case-sensitive, hence this helper instead of a global flag). Longest words first, so the
    first alternative that matches is the longest.
    """
    alternatives = sorted(words.split(), key=len, reverse=True)
    return "(?ai:" + "|".join(map(re.escape, alternatives)) + ")"


# ---------------------------------------------------------------------- grammar macros

APOS = f"(?:['\\x92\u2019]|{ci('&apos;')})"
APOSETC = f"(?:{APOS}|[`\\x91\u2018\u201b])"
SGML = (
    r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*"
    r"(?:[ ]+(?:[A-Za-z][A-Za-z0-9_:.\-]*[ ]*=[ ]*(?:'[^']*'|\"[^\"]*\")"
    r"|[A-Za-z][A-Za-z0-9_:.\-]*))*[ ]*/?|/[A-Za-z][A-Za-z0-9_:.\-]*)[ ]*>"
)
SPMDASH = f"{ci('&MD; &mdash; &ndash;')}|[\\x96\\x97\u2013\u2014\u2015]"
SPAMP = ci("&amp;")
SPPUNC = f"&(?:{ci('HT TL UR LR QC QL QR odq cdq')}|#[0-9]+);"
DATE = r"\d{1,2}[\-/]\d{1,2}[\-/]\d{2,4}"
NUM = "\\d*(?:[.:,\u00ad\u066b\u066c]\\d+)+|\\d+"
NUMBER = f"[\\-+]?(?:{NUM})"
SUBSUPNUM = (
    "[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)"
)
FRAC = "(?:\\d{1,4}[\\- \u00a0])?\\d{1,4}(?:\\\\?/|\u2044)\\d{1,4}"
FRAC2 = "[\u00bc\u00bd\u00be\u2153-\u215e]"
DOLSIGN = r"[A-Z]*\$|#"
DOLSIGN2 = "[\u00a2\u00a3\u00a4\u00a5\\x80\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]"
WORD = f"{LETTER}{LETTER_OR_DIGIT}*(?:[.!?]{LETTER}{LETTER_OR_DIGIT}*)*"
FILENAME_EXT = ci(
    "bat bmp c class cgi cpp dll doc docx exe gif gz h htm html jar java jpeg jpg mov mp3 "
    "pdf php pl png ppt ps py sql tar txt wav x xml zip"
)
FILENAME = f"{LETTER_OR_DIGIT}+(?:\\.{LETTER_OR_DIGIT}+)*\\.{FILENAME_EXT}"
HYPHEN = "[\\-_\u058a\u2010\u2011]"
THING_PART = f"(?:[dDoOlL]{APOSETC}{LD0})?{LD0}+"
THING = f"{THING_PART}(?:{HYPHEN}{THING_PART})*"
THINGA = f"[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+"
THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
ACRO_SPECIAL = (
    f"{ci('Canada Sino Korean EU Japan non')}-{ci('U.S')}|{ci('U.S.-')}{ci('U.K U.S.S.R')}"
)
ACRO = f"[A-Za-z](?:\\.[A-Za-z])*|{ACRO_SPECIAL}"
ACRO2 = f"[A-Za-z](?:\\.[A-Za-z])+|{ACRO_SPECIAL}"
HTHING = f"[A-Za-z0-9][A-Za-z0-9.,\u00ad]*(?:-(?:(?:{ACRO2})\\.|[A-Za-z0-9\u00ad]+))+"
REDAUX = f"{APOS}(?:[msdMSD]|{ci('re ve ll')})"
SWORD = "[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*"
SREDAUX = f"{ci('n')}{APOSETC}{ci('t')}"
APOWORD = "|".join(
    [
        f"{APOS}{ci('n')}{APOS}?",
        f"[lLdDjJ]{APOS}",
        f"{ci('Dunkin somethin ol')}{APOS}",
        f"{APOS}{ci('em')}",
        f"[A-HJ-XZn]{APOSETC}{L0}{{2}}{L0}*",
        f"{APOS}[2-9]{ci('0s')}",
        f"{APOS}{ci('till til')}",
        f"{L0}+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{L0}*",
        f"{APOS}{ci('cause')}",
        f"{ci('cont')}'{ci('d')}\\.?",
        ci("'twas nor'easter c'mon e'er s'mores ev'ry li'l nat'l"),
        f"{ci('O')}{APOSETC}{ci('o')}",
    ]
)
APOWORD2 = f"{ci('y')}{APOS}"
FULLURL = ci("http https") + r"://[^ \t\n\f\r\"<>|(){}]+[^ \t\n\f\r\"<>|.!?(){},-]"
# ",-_" in the reference's class is a *range* (it excludes digits and capitals): kept as is.
LIKELYURL = (
    f'(?:{ci("www")}\\.(?:[^ \\t\\n\\f\\r"<>|.!?(){{}},]+\\.)+[a-zA-Z]{{2,4}}'
    f"|(?:[^ \\t\\n\\f\\r\"`'<>|.!?(){{}},-_$]+\\.)+{ci('com net org edu')})"
    f'(?:/[^ \\t\\n\\f\\r"<>|()]+[^ \\t\\n\\f\\r"<>|.!?(){{}},-])?'
)
EMAIL = (
    f'(?:{ci("&lt;")}|<)?[a-zA-Z0-9][^ \\t\\n\\f\\r"<>|()\u00a0{{}}]*@'
    f'(?:[^ \\t\\n\\f\\r"<>|(){{}}.\u00a0]+\\.)*[^ \\t\\n\\f\\r"<>|(){{}}.\u00a0]+(?:{ci("&gt;")}|>)?'
)
TWITTER = f"@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+"
ABMONTH = ci("Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec")
ABDAYS = ci("Mon Tue Tues Wed Thu Thurs Fri")
# Some states are written [A]z in the reference: capital first letter required.
ABSTATE = "|".join(
    [
        ci("Ala Ariz Calif Colo Conn Ct Dak Fla Ga Ind Kan Kans Ky Md Mich Minn Mo Mont"),
        ci("Neb Nev Okla Penn Tenn Va Vt Wis Wisc Wyo"),
        f"A{ci('z rk')}|D{ci('el')}|I{ci('ll')}|L{ci('a')}|M{ci('ass iss')}",
        f"O{ci('re')}|P{ci('a')}|T{ci('ex')}|W{ci('ash')}",
    ]
)
ABCOMP = "|".join(
    [
        ci("Inc Co Cos Corp Ltd Plc Rt Bancorp Bhd Assn Univ Intl Sys"),
        f"{ci('P')}{ci('p')}?{ci('t')}[ye]{ci('s')}?",
    ]
)
ABNUM = ci("tel est ext sq")
ABPTIT = ci("Jr Sr Bros Ed.D Ph.D Blvd Rd Esq")
ABBREV1 = f"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|{ci('etc al seq Bldg')})\\."
ABTITLE = "|".join(
    [
        ci(
            "Mr Mrs Ms Dr Drs Prof Profs Sen Sens Rep Reps Atty Attys Lt Col Gen Messrs Gov Govs "
            "Adm Rev Maj Sgt Cpl Pvt Capt St Ste Ave Pres Lieut Hon Brig Cmdr Comdr Pfc Spc "
            "Supt Supts Det Mt Ft Adj Adv Asst Assoc Ens Insp Mlle Mme Msgr Sfc"
        ),
        f"M{ci('iss')}",
    ]
)
ABCOMP2 = f"{ci('Invt Elec Natl Dept')}|{ci('M')}[ft]{ci('g')}"
ABBREV4 = "|".join(
    [
        ABTITLE,
        ci("vs Alex Wm Jos Cie a.k.a cf TREAS Ph"),
        ACRO,
        ABCOMP2,
    ]
)
ABBREV2 = f"(?:{ABBREV4})\\."
ACRONYM = f"(?:{ACRO})\\."
ABBREV3 = ci("ca fig figs prop no nos art bldg pp op") + "\\."
# words after which an acronym's period also ends the sentence: capital first letter required
_SENTENCE_START_WORDS = (
    "About According Additionally After An A As At But Earlier He Her Here However If In It "
    "Last Many More Mr. Ms. Now Once One Other Our She Since So Some Such That The Their Then "
    "There These They This We When While What Yet You"
)
SENTENCE_STARTS = "|".join(
    re.escape(w[0]) + (ci(w[1:]) if len(w) > 1 else "") for w in _SENTENCE_START_WORDS.split()
)
PHONE = (
    "(?:\\([0-9]{2,3}\\)[ \u00a0]?|(?:\\+\\+?)?(?:[0-9]{2,4}[\\- \u00a0])?[0-9]{2,4}[\\- \u00a0])"
    "[0-9]{3,4}[\\- \u00a0]?[0-9]{3,5}"
    "|(?:(?:\\+\\+?)?[0-9]{2,4}\\.)?[0-9]{2,4}\\.[0-9]{3,4}\\.[0-9]{3,5}"
)
LDOTS = "\\.{3,5}|(?:\\.[ \u00a0]){2,4}\\.|[\\x85\u2026]"
INSENTP = "[,;:\u3001]"
# alternatives ordered so that Python's first match is the longest (JFlex's rule)
QUOTES = (
    f"''|{ci('&apos;')}|[`\u2018\u2019\u201a\u201b\u201c\u201d\\x91\\x92\\x93\\x94\u201e"
    "\u201f\u2039\u203a\u00ab\u00bb]{1,2}|'"
)
DBLQUOT = f'"|{ci("&quot;")}'
TBSPEC = "|".join(
    [
        f"-{ci('RRB LRB RCB LCB RSB LSB')}-",
        ci("C.D.s"),
        f"{ci('pro anti')}-",
        f"{ci('S')}(?:&|{SPAMP}){ci('P-500 Ls')}",
        f"{ci('Cap')}{APOS}{ci('n')}|{ci('c')}{APOS}{ci('est')}",
    ]
)
TBSPEC2 = f"{APOS}[0-9][0-9]"
SMILEY = r"[<>]?[:;=][\-o*']?[()DPdpO\\{@|\[\]]"
ASIANSMILEY = (
    r"[\^x=~<>]\.\[\^[xX]=~<>\]|[\-\^x=~<>']_[\-\^x=~<>']"
    r"|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)|\([\^x=~<>']-[\^x=~<>'`]\)"
)
MISCSYMBOL = (
    "[+%&~^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00ba\u00d7\u00f7\u0387"
    "\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e"
    "\u066a\u066d\u0703-\u070d\u07f6-\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023"
    "\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f"
    "\u2190-\u21ff\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
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
_WORD_START = f"[{_LETTERS}{_LETTER_EXTRA}&]"
_ALNUM_START = f"[{_LETTERS}{_LETTER_EXTRA}\\d&]"
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
    (f"[{_LETTERS}'\\x92\u2019&]", APOWORD, None, _keep),
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
    (f"[{_LETTERS}\\d]", f"(?:{THING})\\.", INSENTP, _keep),
    (f"[{_LETTERS}\\d]", THING, None, _keep),
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


class _Rule:
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


_RULES = [_Rule(*spec) for spec in _RULES_SPEC]
_CANDIDATES: dict[str, tuple[_Rule, ...]] = {}
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


def _candidates(char: str) -> tuple[_Rule, ...]:
    rules = _CANDIDATES.get(char)
    if rules is None:
        rules = tuple(r for r in _RULES if r.first is None or r.first.match(char))
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

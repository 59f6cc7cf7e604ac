"""The reference lexer's character classes and grammar macros as Python regular expressions.

CoreNLP 3.4.1's ``PTBTokenizer`` is a JFlex lexer; these are its macros (under its names where
it names them), in which the rules of :mod:`captioning.text.ptb_rules` are written. Where JFlex
and Python's ``re`` differ (case-insensitive literals, which alternative matches first), the
comment beside the macro says how it is bridged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

NBSP = "\u00a0"


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
LETTER_CHARS = _bmp_class(lambda c: unicodedata.category(c).startswith("L"))
UPPER_CHARS = _bmp_class(str.isupper)  # like Java, counts Other_Uppercase (e.g. roman numerals)
# the lexer's LETTER macro adds combining marks and other oddments to [:letter:]
LETTER_EXTRA_CHARS = (
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
L0 = f"[{LETTER_CHARS}]"  # [:letter:]
LD0 = f"[{LETTER_CHARS}\\d]"  # [:letter:] | [:digit:]
LETTER = f"(?:[{LETTER_CHARS}{LETTER_EXTRA_CHARS}]|&[aeiouAEIOU](?ai:acute|grave|uml);)"
LETTER_OR_DIGIT = f"(?:{LETTER}|\\d)"
UPPER = f"[{UPPER_CHARS}]"

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

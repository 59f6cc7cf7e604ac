"""METEOR 1.5's English data, read from the installed pycocoevalcap and cached on disk.

The function words, nonbreaking prefixes and WordNet synsets/exceptions come from inside
``meteor-1.5.jar``; the paraphrase table from ``data/paraphrase-en.gz`` beside it. Parsing the
table (5.3M entries) takes seconds, so the result is written once to one binary file under
``$XDG_CACHE_HOME/captioning/meteor/`` (``~/.cache/...``): a JSON header and flat numpy arrays,
no pickle, named after the jar's and the table's size and mtime, checked by length and CRC-32
when read (a partial or damaged file is rebuilt). Later processes map it in milliseconds.

Phrases of the table are stored as 64-bit rolling hashes of their words (``phrase_hash``): two
different phrases of at most 7 words share a hash with probability ~2^-64, so a spurious
paraphrase match is a ~1e-13 event per scored segment.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import logging
import mmap
import os
import re
import struct
import threading
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from captioning.files import write_atomic

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the cache layout or its parsing changes
MAGIC = b"captioning-meteor\n"
JAR_MEMBERS = {
    "function_words": "function/english.words",
    "prefixes": "nonbreaking/english.prefixes",
    "synsets": "synonym/english.synsets",
    "exceptions": "synonym/english.exceptions",
}
HASH_MULTIPLIER = 0x100000001B3  # the FNV-64 prime (odd: each step is invertible mod 2^64)
BYTE_MULTIPLIER = 0x9E3779B97F4A7C15  # odd too
MASK64 = (1 << 64) - 1
MAX_PHRASE = 7  # the longest phrase of paraphrase-en.gz, in words (checked when parsed)
NUMERIC_ONLY = 2  # a nonbreaking prefix that stays attached only before a number
ANY = 1
_DELIMITERS = re.compile("[ \t\n\r\f]+")


def _mix(value: int) -> int:
    """splitmix64's finaliser: spreads a word's polynomial hash over all 64 bits."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


def word_hash(word: str) -> int:
    """A stable 64-bit hash of one word: its UTF-8 bytes as a polynomial, then mixed."""
    value = 0
    for byte in word.encode("utf-8"):
        value = (value * BYTE_MULTIPLIER + byte) & MASK64
    return _mix(value)


def phrase_hash(hashes: list[int]) -> int:
    """The rolling hash of a phrase from its words' ``word_hash`` values."""
    value = 0
    for h in hashes:
        value = (value * HASH_MULTIPLIER + h) & MASK64
    return value


def pycocoevalcap_files() -> tuple[Path, Path]:
    """``(meteor-1.5.jar, paraphrase-en.gz)`` of the installed pycocoevalcap."""
    spec = importlib.util.find_spec("pycocoevalcap")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise FileNotFoundError(
            "METEOR reads its data from pycocoevalcap's meteor/meteor-1.5.jar and "
            "meteor/data/paraphrase-en.gz, and pycocoevalcap is not installed: "
            "pip install 'pycocoevalcap>=1.2'"
        )
    folder = Path(locations[0]) / "meteor"
    return _required(folder / "meteor-1.5.jar"), _required(folder / "data" / "paraphrase-en.gz")


def _required(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"METEOR needs {path} (shipped with pycocoevalcap): reinstall it with "
            "pip install --force-reinstall 'pycocoevalcap>=1.2'"
        )
    return path


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/captioning/meteor`` (``~/.cache/captioning/meteor`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "captioning" / "meteor"


@dataclass(frozen=True)
class Tables:
    """Everything METEOR's English modules look up; arrays may be memory-mapped."""

    function_words: frozenset[str]
    prefixes: dict[str, int]  # nonbreaking prefix -> ANY | NUMERIC_ONLY
    exceptions: dict[str, list[str]]  # irregular form -> its WordNet base forms
    synset_words: np.ndarray  # uint8: the synset file's words, "\n"-joined UTF-8
    synset_offsets: np.ndarray  # int64 (W + 1,): word w's synsets are ids[offsets[w]:offsets[w+1]]
    synset_ids: np.ndarray  # int32
    ref_keys: np.ndarray  # uint64, sorted, unique: phrase_hash of each reference phrase
    ref_offsets: np.ndarray  # int64 (R + 1,): its paraphrases' rows, in file order
    par_keys: np.ndarray  # uint64: phrase_hash of each paraphrase
    par_lengths: np.ndarray  # uint8: its number of words
    par_phrases: np.ndarray  # uint64, sorted, unique: every paraphrase key

    @cached_property
    def synset_index(self) -> dict[str, int]:
        """Synset-file word -> its row (built once, on first use)."""
        words = self.synset_words.tobytes().decode("utf-8").split("\n")
        return {word: row for row, word in enumerate(words)}

    def synsets(self, word: str) -> frozenset[int]:
        """The WordNet synset ids listed for ``word`` (empty when it has none)."""
        row = self.synset_index.get(word)
        if row is None:
            return frozenset()
        start, stop = self.synset_offsets[row], self.synset_offsets[row + 1]
        return frozenset(self.synset_ids[start:stop].tolist())


# ---------------------------------------------------------------------------- parsing


def _lines(data: bytes) -> list[str]:
    """Java ``BufferedReader.readLine`` over UTF-8 ``data``: \\n, \\r\\n or \\r ends a line."""
    text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _java_tokens(line: str) -> list[str]:
    """Java ``StringTokenizer``'s default split (space, tab, newline, CR, form feed)."""
    return [token for token in _DELIMITERS.split(line) if token]


def parse_jar(jar: Path) -> dict[str, Any]:
    """Function words, nonbreaking prefixes, exceptions and synsets from ``meteor-1.5.jar``."""
    try:
        with zipfile.ZipFile(jar) as archive:
            raw = {key: archive.read(member) for key, member in JAR_MEMBERS.items()}
    except (zipfile.BadZipFile, KeyError) as error:
        raise FileNotFoundError(
            f"{jar} is not METEOR 1.5's jar ({error}): reinstall pycocoevalcap"
        ) from None
    prefixes: dict[str, int] = {}
    for line in _lines(raw["prefixes"]):
        tokens = _java_tokens(line)
        if not tokens or tokens[0].startswith("#"):
            continue
        kind = NUMERIC_ONLY if len(tokens) > 1 and tokens[1] == "#NUMERIC_ONLY#" else ANY
        prefixes[tokens[0]] = kind
    exceptions: dict[str, list[str]] = {}
    lines = _lines(raw["exceptions"])
    for base, forms in zip(lines[0::2], lines[1::2], strict=False):
        for form in _java_tokens(forms):
            exceptions.setdefault(form, []).append(base)
    lines = _lines(raw["synsets"])
    synsets: dict[str, list[int]] = {}
    for word, ids in zip(lines[0::2], lines[1::2], strict=False):
        synsets[word] = [int(token) for token in _java_tokens(ids)]  # a later line replaces
    return {
        "function_words": _lines(raw["function_words"]),
        "prefixes": prefixes,
        "exceptions": exceptions,
        "synsets": synsets,
    }


def parse_paraphrases(table: Path, chunk_size: int = 1 << 23) -> dict[str, np.ndarray]:
    """The paraphrase table as hashed phrases grouped by reference phrase, in file order.

    The file repeats three lines per entry: a probability (unused by METEOR), the reference
    phrase, its paraphrase. It is read in chunks of whole entries and hashed with numpy.
    """
    ref_parts, par_parts, length_parts = [], [], []
    rest = b""
    with gzip.open(table, "rb") as handle:
        while True:
            block = handle.read(chunk_size)
            data = rest + block
            if not block:
                if data.strip():
                    data += b"" if data.endswith(b"\n") else b"\n"
                    rest = b""
                else:
                    break
            else:
                cut = _entries_end(data)
                data, rest = data[:cut], data[cut:]
            if data:
                keys, lengths = _hash_lines(data)
                if len(keys) % 3:
                    raise ValueError(f"{table}: an entry is not three lines (truncated file?)")
                if max(lengths[1::3].max(initial=0), lengths[2::3].max(initial=0)) > MAX_PHRASE:
                    raise ValueError(f"{table}: a phrase of more than {MAX_PHRASE} words")
                ref_parts.append(keys[1::3])
                par_parts.append(keys[2::3])
                length_parts.append(lengths[2::3].astype(np.uint8))
            if not block:
                break
    ref_keys, par_keys = np.concatenate(ref_parts), np.concatenate(par_parts)
    par_lengths = np.concatenate(length_parts)
    order = np.argsort(ref_keys, kind="stable")  # group by reference, file order within
    ref_keys, par_keys, par_lengths = ref_keys[order], par_keys[order], par_lengths[order]
    starts = np.flatnonzero(np.r_[True, ref_keys[1:] != ref_keys[:-1]])
    return {
        "ref_keys": ref_keys[starts],
        "ref_offsets": np.r_[starts, len(ref_keys)].astype(np.int64),
        "par_keys": par_keys,
        "par_lengths": par_lengths,
        "par_phrases": np.unique(par_keys),
    }


def _entries_end(data: bytes) -> int:
    """Where the last whole three-line entry of ``data`` ends (0 when there is none)."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    whole = len(newlines) // 3 * 3
    return int(newlines[whole - 1]) + 1 if whole else 0


def _hash_lines(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``phrase_hash`` and word count of every line of ``data`` (which ends with a newline),
    words split at spaces as the table writes them, vectorised over bytes then words."""
    text = np.frombuffer(data, dtype=np.uint8)
    is_newline = text == 10
    separator = is_newline | (text == 32) | (text == 9) | (text == 13) | (text == 12)
    n = len(text)
    position = np.arange(n, dtype=np.int64)
    # the next separator at or after each byte, found by a reversed running minimum
    next_separator = np.minimum.accumulate(np.where(separator, position, n)[::-1])[::-1]
    inside = ~separator
    exponent = (next_separator - 1 - position)[inside]
    byte_powers = _powers(BYTE_MULTIPLIER, int(exponent.max(initial=0)) + 1)
    with np.errstate(over="ignore"):  # arithmetic mod 2^64, as word_hash does
        terms = text[inside].astype(np.uint64) * byte_powers[exponent]
        word_start = np.flatnonzero(inside & np.r_[True, separator[:-1]])  # byte positions
        first = np.searchsorted(np.flatnonzero(inside), word_start)
        words = _mix_array(np.add.reduceat(terms, first) if len(first) else terms[:0])
    line_ends = np.flatnonzero(is_newline)
    line_of_word = np.searchsorted(line_ends, word_start)
    lengths = np.bincount(line_of_word, minlength=len(line_ends))
    first_word = np.r_[0, np.cumsum(lengths)[:-1]]
    rank = np.arange(len(words)) - first_word[line_of_word]
    word_powers = _powers(HASH_MULTIPLIER, int(lengths.max(initial=0)) + 1)
    keys = np.zeros(len(line_ends), dtype=np.uint64)
    with np.errstate(over="ignore"):
        terms = words * word_powers[lengths[line_of_word] - 1 - rank]
        nonempty = lengths > 0
        if nonempty.any():
            keys[nonempty] = np.add.reduceat(terms, first_word[nonempty])
    return keys, lengths


def _powers(base: int, count: int) -> np.ndarray:
    """``base ** k mod 2^64`` for k < count."""
    values, value = [], 1
    for _ in range(count):
        values.append(value)
        value = (value * base) & MASK64
    return np.array(values, dtype=np.uint64)


def _mix_array(values: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return values ^ (values >> np.uint64(31))


def build_tables(jar: Path, table: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse the jar and the table: (small tables for the JSON header, arrays)."""
    parsed = parse_jar(jar)
    synsets = parsed.pop("synsets")
    words = list(synsets)
    counts = np.fromiter((len(synsets[w]) for w in words), dtype=np.int64, count=len(words))
    arrays = {
        "synset_words": np.frombuffer("\n".join(words).encode("utf-8"), dtype=np.uint8),
        "synset_offsets": np.r_[0, np.cumsum(counts)].astype(np.int64),
        "synset_ids": np.fromiter(
            (i for w in words for i in synsets[w]), dtype=np.int32, count=int(counts.sum())
        ),
        **parse_paraphrases(table),
    }
    return parsed, arrays


# ---------------------------------------------------------------------------- cache file


def _source_key(jar: Path, table: Path) -> str:
    facts = [FORMAT]
    for path in (jar, table):
        stat = path.stat()
        facts += [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return hashlib.sha1(json.dumps(facts).encode()).hexdigest()[:16]


def write_cache(path: Path, small: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """One file: MAGIC, header length (u64), JSON header, then 8-byte-aligned arrays."""
    layout, offset = {}, 0
    for name, array in arrays.items():
        layout[name] = [array.dtype.str, int(array.size), offset]
        offset += -(-array.nbytes // 8) * 8
    crc = 0
    for array in arrays.values():
        crc = zlib.crc32(_padded(array), crc)
    header = json.dumps(
        {"format": FORMAT, "arrays": layout, "data_size": offset, "crc32": crc, **small}
    ).encode("utf-8")
    header += b" " * (-(len(MAGIC) + 8 + len(header)) % 8)

    def write(out) -> None:
        out.write(MAGIC + struct.pack("<Q", len(header)) + header)
        for array in arrays.values():
            out.write(_padded(array))

    write_atomic(path, write)


def _padded(array: np.ndarray) -> bytes:
    data = np.ascontiguousarray(array).tobytes()
    return data + b"\0" * (-len(data) % 8)


def read_cache(path: Path) -> Tables:
    """Map a cache file; ValueError when it is not whole and sound."""
    with open(path, "rb") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    if mapped[: len(MAGIC)] != MAGIC or len(mapped) < len(MAGIC) + 8:
        raise ValueError("not a METEOR cache file")
    (size,) = struct.unpack_from("<Q", mapped, len(MAGIC))
    start = len(MAGIC) + 8 + size
    try:
        header = json.loads(mapped[len(MAGIC) + 8 : start].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable header ({error})") from None
    if header.get("format") != FORMAT or len(mapped) != start + header["data_size"]:
        raise ValueError("wrong format or size (partial write?)")
    data = memoryview(mapped)[start:]
    if zlib.crc32(data) != header["crc32"]:
        raise ValueError("CRC-32 mismatch")
    arrays = {
        name: np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset)
        for name, (dtype, count, offset) in header["arrays"].items()
    }
    return _tables_from(header, arrays)


def load_tables(
    jar: Path | None = None, table: Path | None = None, folder: Path | None = None
) -> Tables:
    """The tables from the cache, built (and cached) first when there is none usable.

    Processes that find no cache take turns (a lock file beside it): the first builds it,
    the others then read it.
    """
    if jar is None or table is None:
        jar, table = pycocoevalcap_files()
    jar, table = _required(Path(jar)), _required(Path(table))
    folder = cache_folder() if folder is None else Path(folder)
    path = folder / f"tables-{_source_key(jar, table)}.bin"
    found = _read_if_sound(path, warn=True)
    if found is not None:
        return found
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(f"{path}.lock")
        lock.acquire()
    except OSError as error:  # a read-only cache folder: build in memory
        log.warning(
            "Cannot write the METEOR cache in %s (%s): building it in memory", folder, error
        )
        return _tables_from(*build_tables(jar, table))
    try:
        found = _read_if_sound(path, warn=False)  # built by another process meanwhile?
        if found is not None:
            return found
        log.info("Building the METEOR table cache %s from %s (once, ~20 s)", path, table)
        small, arrays = build_tables(jar, table)
        try:
            write_cache(path, small, arrays)
        except OSError as error:  # a full disk: keep the tables in memory
            log.warning("Cannot write the METEOR cache %s (%s): using it uncached", path, error)
            return _tables_from(small, arrays)
        for stale in folder.glob("tables-*.bin"):  # built from an earlier pycocoevalcap
            if stale != path:
                stale.unlink(missing_ok=True)
        return read_cache(path)
    finally:
        lock.release()


def _read_if_sound(path: Path, warn: bool) -> Tables | None:
    if not path.exists():
        return None
    try:
        return read_cache(path)
    except (OSError, ValueError) as error:
        if warn:
            log.warning("METEOR cache %s is unusable (%s): rebuilding it", path, error)
        return None


def _tables_from(small: dict[str, Any], arrays: dict[str, np.ndarray]) -> Tables:
    return Tables(
        function_words=frozenset(small["function_words"]),
        prefixes=small["prefixes"],
        exceptions=small["exceptions"],
        **arrays,
    )


_lock = threading.Lock()
_tables: Tables | None = None


def tables() -> Tables:
    """The process-wide tables, loaded on first use."""
    global _tables
    with _lock:
        if _tables is None:
            _tables = load_tables()
        return _tables

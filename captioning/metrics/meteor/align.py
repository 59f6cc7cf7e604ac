"""METEOR 1.5's aligner: exact, stem, synonym and paraphrase matches, then its beam search.

``align(test, reference)`` returns the 23 sufficient statistics of ``MeteorStats`` for one
test/reference pair of normalised word lists. It reproduces ``edu.cmu.meteor.aligner.Aligner``
including the behaviours that decide ties and change scores:

- words are compared by Java ``hashCode``; each matcher lists, for every reference position
  ``j``, its matches by test position ``i`` (paraphrases: by phrase length, then file order);
- a match that is alone at its position and whose words no other match covers is fixed first;
- the beam (40 partial alignments, Java's stable sort) ranks by the weighted number of matched
  words, then fewer chunks, then smaller distance, where the weights are 1 for exact and 0.5
  for the others and each addition is *truncated to an int* (``int += double``): a one-word
  stem, synonym or paraphrase match adds 0 to the ranking, so it wins only on chunks or order;
- a new partial alignment's distance is added to its parent (the path that skips the
  position) rather than to itself, as the Java code does.

Identical word lists use the exact module only, as METEOR does.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property, lru_cache
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import snowballstemmer

from captioning.metrics.meteor.normalize import java_hash
from captioning.metrics.meteor.resources import HASH_MULTIPLIER, MAX_PHRASE, Tables, word_hash

BEAM_SIZE = 40
EXACT, STEM, SYNONYM, PARAPHRASE = range(4)
SENTENCE_MEMO = 1 << 17  # prepared sentences kept (the references of the next epochs)
# a partial alignment's rank as one integer: -(weighted matches), chunks, distance
_CHUNK = 1 << 40
_MATCHED = 1 << 80
_rank = itemgetter(0)
_first = itemgetter(0)
_FILTER_MASK = (1 << 24) - 1  # the bitmaps that rule out most phrases before a search

# WordNet's morphology (from SynonymDictionary.morph): suffix -> replacement, in order
_MORPH = (
    ("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
    ("men", "man"), ("ies", "y"), ("s", ""), ("ies", "y"), ("es", "e"), ("es", ""),
    ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", ""), ("er", ""), ("est", ""),
    ("er", "e"), ("est", "e"),
)  # fmt: skip


class Match(NamedTuple):
    """Reference words ``start:start+length`` matched to test words ``test_start:...``."""

    start: int
    length: int
    test_start: int
    test_length: int
    module: int


class Word(NamedTuple):
    """What the matchers look up about one word."""

    key: int  # Java hashCode
    stem_key: int  # Java hashCode of its Snowball stem
    synsets: frozenset[int]
    phrase_key: int  # word_hash, for paraphrase phrases
    function: bool


class Sentence(NamedTuple):
    """A normalised word list with what the matchers need of it."""

    words: tuple[str, ...]
    keys: tuple[int, ...]
    info: tuple[Word, ...]
    with_synsets: tuple[int, ...]  # positions of the words that have WordNet synsets
    # the phrases that are a reference phrase of the table: (start, length, table row), by
    # start then length
    paraphrases: tuple[tuple[int, int, int], ...]
    # the phrases that are some entry's paraphrase: (key, start), by start then length
    phrases: tuple[tuple[int, int], ...]
    phrase_keys: frozenset[int]

    def starts_of(self, key: int) -> list[int]:
        """Where a phrase with ``key`` starts (ascending)."""
        return [start for k, start in self.phrases if k == key]


class Aligner:
    """Aligns normalised word lists with METEOR 1.5's English modules over ``tables``."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self._stemmer = snowballstemmer.stemmer("english")
        self.word = lru_cache(maxsize=None)(self._word)  # a caption vocabulary: small
        # word -> the words seen that share a synset with it (and differ in hashCode)
        self.partners: dict[str, set[str]] = {}
        self._words_of: dict[int, list[str]] = {}  # synset -> the words seen that have it
        # table row -> its entries: (paraphrase key, paraphrase length), in file order
        self.entries: dict[int, tuple[tuple[int, int], ...]] = {}
        self.entry_keys: dict[int, frozenset[int]] = {}  # table row -> its paraphrase keys
        self.sentences: dict[tuple[str, ...], Sentence] = {}
        self._positions: dict[tuple[str, ...], tuple[dict, dict]] = {}

    # ------------------------------------------------------------------ words

    def _word(self, word: str) -> Word:
        info = Word(
            key=java_hash(word),
            stem_key=java_hash(self._stemmer.stemWord(word)),
            synsets=self.tables.synsets(word) | self._stem_synsets(word),
            phrase_key=word_hash(word),
            function=word.lower() in self.tables.function_words,
        )
        # the synonym matcher's relation, kept between the words seen so far
        partners = self.partners[word] = set()
        for synset in info.synsets:
            for other in self._words_of.setdefault(synset, []):
                if other not in partners and java_hash(other) != info.key:
                    partners.add(other)
                    self.partners[other].add(word)
            self._words_of[synset].append(word)
        return info

    def _stem_synsets(self, word: str) -> frozenset[int]:
        bases = self.tables.exceptions.get(word)
        if bases is not None:
            return frozenset().union(*(self.tables.synsets(base) for base in bases))
        return self.tables.synsets(self._morph(word))

    def _morph(self, word: str) -> str:
        """WordNet's base form of ``word`` that has synsets ("" when none; ``word`` itself
        when it ends in "ss" or has at most two letters)."""
        if word.endswith("ss") or len(word) <= 2:
            return word
        for suffix, ending in _MORPH:
            if word.endswith(suffix):
                base = word[: len(word) - len(suffix)] + ending
                if self.tables.synset_index.get(base) is not None:
                    return base
        return ""

    # ------------------------------------------------------------------ sentences

    def prepare(self, sentences: Iterable[tuple[str, ...]]) -> None:
        """Look up every phrase of the sentences not seen yet in the paraphrase table, all at
        once: phrase keys of up to MAX_PHRASE words are rolled and searched with numpy."""
        todo = [words for words in dict.fromkeys(sentences) if words not in self.sentences]
        if not todo:
            return
        if len(self.sentences) + len(todo) > SENTENCE_MEMO:
            self.sentences.clear()
        infos = [tuple(map(self.word, words)) for words in todo]
        lengths = np.fromiter(map(len, todo), dtype=np.int64, count=len(todo))
        hashes = np.array([w.phrase_key for info in infos for w in info], dtype=np.uint64)
        sentence_of = np.repeat(np.arange(len(todo)), lengths)
        position = np.arange(len(hashes)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        left = lengths[sentence_of] - position  # words from each position to its sentence end
        # grams[x, L - 1]: the key of the L words from flat position x; row-major order is the
        # matchers' order (by start, then length)
        grams = np.zeros((len(hashes), MAX_PHRASE), dtype=np.uint64)
        rolled = hashes
        with np.errstate(over="ignore"):  # arithmetic mod 2^64, as phrase_hash does
            for size in range(1, MAX_PHRASE + 1):
                if size > 1:
                    rolled = rolled[:-1] * np.uint64(HASH_MULTIPLIER) + hashes[size - 1 :]
                grams[: len(rolled), size - 1] = rolled
        valid = left[:, None] > np.arange(MAX_PHRASE)
        first, size = np.nonzero(valid)
        key, size = grams[valid], size + 1
        table = self.tables
        # phrases that are a reference phrase of the table: their entries
        hits = self._find(key, table.ref_keys, self._ref_filter)
        rows = np.searchsorted(table.ref_keys, key[hits])
        self._gather_entries(rows)
        hit_bounds = np.searchsorted(sentence_of[first[hits]], np.arange(len(todo) + 1)).tolist()
        references = list(
            zip(position[first[hits]].tolist(), size[hits].tolist(), rows.tolist(), strict=True)
        )
        # phrases that are a paraphrase in the table: where they start
        hits = self._find(key, table.par_phrases, self._par_filter)
        phrase_bounds = np.searchsorted(sentence_of[first[hits]], np.arange(len(todo) + 1)).tolist()
        phrases = list(zip(key[hits].tolist(), position[first[hits]].tolist(), strict=True))
        for n, (words, info) in enumerate(zip(todo, infos, strict=True)):
            own = phrases[phrase_bounds[n] : phrase_bounds[n + 1]]
            self.sentences[words] = Sentence(
                words=words,
                keys=tuple([w.key for w in info]),
                info=info,
                with_synsets=tuple([i for i, w in enumerate(info) if w.synsets]),
                paraphrases=tuple(references[hit_bounds[n] : hit_bounds[n + 1]]),
                phrases=tuple(own),
                phrase_keys=frozenset(map(_first, own)),
            )

    @staticmethod
    def _find(keys: np.ndarray, table: np.ndarray, bitmap: np.ndarray) -> np.ndarray:
        """Indices of ``keys`` found in the sorted ``table``; a bitmap of the table's low bits
        rules most keys out before the binary search."""
        maybe = np.flatnonzero(bitmap[keys & np.uint64(_FILTER_MASK)])
        at = np.minimum(np.searchsorted(table, keys[maybe]), len(table) - 1)
        return maybe[table[at] == keys[maybe]]

    @cached_property
    def _ref_filter(self) -> np.ndarray:
        return _bitmap(self.tables.ref_keys)

    @cached_property
    def _par_filter(self) -> np.ndarray:
        return _bitmap(self.tables.par_phrases)

    def _gather_entries(self, rows: np.ndarray) -> None:
        """Read the entries of the table rows not read yet, in one numpy gather."""
        new = [row for row in np.unique(rows).tolist() if row not in self.entries]
        if not new:
            return
        table = self.tables
        new_rows = np.array(new, dtype=np.int64)
        starts, stops = table.ref_offsets[new_rows], table.ref_offsets[new_rows + 1]
        picked = _ranges(starts, stops)
        keys, sizes = table.par_keys[picked].tolist(), table.par_lengths[picked].tolist()
        ends = np.cumsum(stops - starts).tolist()
        begin = 0
        for row, end in zip(new, ends, strict=True):
            self.entries[row] = tuple(zip(keys[begin:end], sizes[begin:end], strict=True))
            self.entry_keys[row] = frozenset(keys[begin:end])
            begin = end

    def sentence(self, words: tuple[str, ...]) -> Sentence:
        """What the matchers need of ``words`` (prepared now unless ``prepare`` saw it)."""
        found = self.sentences.get(words)
        if found is None:
            self.prepare([words])
            found = self.sentences[words]
        return found

    def positions(self, test: Sentence) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        """Java hashCode -> the positions of ``test``'s words that have it; the same for the
        stems (built when a sentence is first a test: references never need it)."""
        found = self._positions.get(test.words)
        if found is None:
            exact: dict[int, list[int]] = {}
            stems: dict[int, list[int]] = {}
            for i, w in enumerate(test.info):
                exact.setdefault(w.key, []).append(i)
                stems.setdefault(w.stem_key, []).append(i)
            if len(self._positions) > SENTENCE_MEMO:
                self._positions.clear()
            found = self._positions[test.words] = (exact, stems)
        return found

    # ------------------------------------------------------------------ alignment

    def align(self, test_words: tuple[str, ...], reference_words: tuple[str, ...]) -> tuple:
        """The 23 ``MeteorStats`` numbers of ``test_words`` against ``reference_words``."""
        test, reference = self.sentence(test_words), self.sentence(reference_words)
        matches = self._matches(test, reference)
        chosen = _search(matches, len(test.words), len(reference.words))
        return _statistics(test, reference, chosen)

    def _matches(self, test: Sentence, reference: Sentence) -> list[list[tuple]]:
        """Every match, listed by reference start position in the Java matchers' order, each
        as the beam search reads it (see ``_step``)."""
        by_start: list[list[tuple]] = [[] for _ in reference.words]
        identical = test.keys == reference.keys

        def add(start: int, length: int, test_start: int, test_length: int, module: int) -> None:
            weight = 1.0 if module == EXACT else 0.5
            gain = int(test_length * weight) + int(length * weight)  # Java's int += double
            by_start[start].append(
                (
                    ((1 << test_length) - 1) << test_start, ((1 << length) - 1) << start,
                    gain * _MATCHED, test_start, start + length, test_start + test_length,
                    abs(start - test_start), Match(start, length, test_start, test_length, module),
                )
            )  # fmt: skip

        positions, stem_positions = self.positions(test)
        keys = test.keys
        for j, r in enumerate(reference.info):
            for i in positions.get(r.key, ()):
                add(j, 1, i, 1, EXACT)
        if identical:
            return by_start
        for j, r in enumerate(reference.info):
            for i in stem_positions.get(r.stem_key, ()):
                if keys[i] != r.key:
                    add(j, 1, i, 1, STEM)
        test_words = test.words
        for j in reference.with_synsets:
            partners = self.partners[reference.words[j]]
            if not partners.isdisjoint(test_words):
                for i in test.with_synsets:
                    if test_words[i] in partners:
                        add(j, 1, i, 1, SYNONYM)
        entries, entry_keys = self.entries, self.entry_keys
        common = _common(reference.paraphrases, entry_keys, test.phrase_keys)
        if common:
            for j, length, row in reference.paraphrases:
                for key, size in entries[row]:
                    if key in common:
                        for i in test.starts_of(key):
                            add(j, length, i, size, PARAPHRASE)
        common = _common(test.paraphrases, entry_keys, reference.phrase_keys)
        if common:
            for i, length, row in test.paraphrases:
                for key, size in entries[row]:
                    if key in common:
                        for j in reference.starts_of(key):
                            add(j, size, i, length, PARAPHRASE)
        return by_start


def _common(
    paraphrases: tuple[tuple[int, int, int], ...],
    entry_keys: dict[int, frozenset[int]],
    phrase_keys: frozenset[int],
) -> set[int]:
    """The paraphrase keys of ``paraphrases``' entries that are among ``phrase_keys``."""
    common: set[int] = set()
    if phrase_keys:
        for _, _, row in paraphrases:
            common |= entry_keys[row] & phrase_keys
    return common


def _bitmap(keys: np.ndarray) -> np.ndarray:
    """Which values of the low bits of a key occur in ``keys``."""
    bitmap = np.zeros(_FILTER_MASK + 1, dtype=bool)
    bitmap[keys & np.uint64(_FILTER_MASK)] = True
    return bitmap


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """The concatenated ``arange(start, stop)`` of each pair, in order."""
    counts = stops - starts
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - ends + counts, counts)


def _search(by_start: list[list[tuple]], n1: int, n2: int) -> list[Match]:
    """The matches of the best alignment: the fixed ones plus the beam search's choice.

    A match here is ``(test bits, reference bits, rank gain, test start, next position,
    end in the test, distance, Match)``; a path is ``(rank, next position, end of its last
    match in the test or -1, test words used, reference words used, chosen matches as a
    linked list)``.
    """
    test_cover, reference_cover = [0] * n1, [0] * n2
    for matches in by_start:
        for m in matches:
            start, length, test_start, test_length, _ = m[7]
            for k in range(test_start, test_start + test_length):
                test_cover[k] += 1
            for k in range(start, start + length):
                reference_cover[k] += 1
    fixed: list[tuple | None] = [None] * n2
    test_used = reference_used = 0
    open_choices = False
    for j, matches in enumerate(by_start):
        if len(matches) == 1:
            m = matches[0]
            start, length, test_start, test_length, _ = m[7]
            if all(reference_cover[k] == 1 for k in range(start, start + length)) and all(
                test_cover[k] == 1 for k in range(test_start, test_start + test_length)
            ):
                fixed[j] = m
                test_used |= m[0]
                reference_used |= m[1]
                continue
        open_choices = open_choices or bool(matches)
    result = [m[7] for m in fixed if m is not None]
    if not open_choices:
        return result
    paths: list[tuple] = [(0, 0, -1, test_used, reference_used, None)]
    for current in range(n2):
        paths.sort(key=_rank)
        paths = _step(paths[:BEAM_SIZE], current, by_start[current], fixed) or paths[:1]
    paths.sort(key=_rank)
    best = min(
        ((rank + _CHUNK if last_end != -1 else rank), order, chosen)
        for order, (rank, _, last_end, _, _, chosen) in enumerate(paths[:BEAM_SIZE])
    )
    node = best[2]
    while node is not None:
        result.append(node[0])
        node = node[1]
    return result


def _step(paths: list[tuple], current: int, matches: list[tuple], fixed: list) -> list[tuple]:
    """Extend each path over reference position ``current``, in METEOR's order."""
    extended: list[tuple] = []
    append = extended.append
    bit = 1 << current
    for path in paths:
        rank, position, last_end, used1, used2, chosen = path
        if used2 & bit:
            if current < position:
                append(path)
            elif (m := fixed[position]) is not None:
                rank -= m[2]
                if last_end != -1 and m[3] != last_end:
                    rank += _CHUNK
                append((rank + m[6], m[4], m[5], used1, used2, chosen))
            continue
        for m in matches:
            if m[0] & used1 or m[1] & used2:
                continue
            new_rank = rank - m[2]
            if last_end != -1 and m[3] != last_end:
                new_rank += _CHUNK
            append((new_rank, m[4], m[5], used1 | m[0], used2 | m[1], (m[7], chosen)))
            rank += m[6]  # METEOR adds the distance to the path that skips, not the new one
        if last_end != -1:
            rank += _CHUNK
        append((rank, position + 1, -1, used1, used2, chosen))
    return extended


def _statistics(test: Sentence, reference: Sentence, chosen: list[Match]) -> tuple:
    """``MeteorStats.toString`` order: lengths, function words, per module (test content,
    reference content, test function, reference function), chunks, matched words."""
    per_module = [0] * 16
    for m in chosen:
        base = 4 * m.module
        for k in range(m.test_start, m.test_start + m.test_length):
            per_module[base + (2 if test.info[k].function else 0)] += 1
        for k in range(m.start, m.start + m.length):
            per_module[base + (3 if reference.info[k].function else 1)] += 1
    chunks, last_end, test_matched, reference_matched = 0, -1, 0, 0
    position = 0
    at_start = {m.start: m for m in chosen}
    n2 = len(reference.words)
    while position < n2:
        m = at_start.get(position)
        if m is None:
            if last_end != -1:
                chunks += 1
                last_end = -1
            position += 1
            continue
        test_matched += m.test_length
        reference_matched += m.length
        if last_end != -1 and m.test_start != last_end:
            chunks += 1
        position = m.start + m.length
        last_end = m.test_start + m.test_length
    if last_end != -1:
        chunks += 1
    return (
        len(test.words),
        len(reference.words),
        sum(w.function for w in test.info),
        sum(w.function for w in reference.info),
        *per_module,
        chunks,
        test_matched,
        reference_matched,
    )

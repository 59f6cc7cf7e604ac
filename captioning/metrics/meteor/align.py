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

from functools import cached_property, lru_cache
from operator import itemgetter
from typing import NamedTuple

import snowballstemmer

from captioning.metrics.meteor.normalize import java_hash
from captioning.metrics.meteor.resources import HASH_MULTIPLIER, MASK64, Tables, word_hash

BEAM_SIZE = 40
EXACT, STEM, SYNONYM, PARAPHRASE = range(4)
MAX_PHRASE = 7  # the longest phrase in paraphrase-en.gz
# a partial alignment's rank as one integer: -(weighted matches), chunks, distance
_CHUNK = 1 << 40
_MATCHED = 1 << 80
_rank = itemgetter(0)

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
    gain: int  # what it adds to the beam's (truncated) weighted match count
    test_bits: int
    reference_bits: int

    @property
    def distance(self) -> int:
        return abs(self.start - self.test_start)


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
    positions: dict[int, list[int]]  # Java hashCode -> positions of the words that have it
    stem_positions: dict[int, list[int]]  # same for the stems
    with_synsets: tuple[int, ...]  # positions of the words that have WordNet synsets
    # each phrase (of up to MAX_PHRASE words) as (start, key), by start then length
    phrases: tuple[tuple[int, int], ...]
    phrase_keys: frozenset[int]
    # table entries of the phrases starting at each position: (length, entries), by length;
    # ``entries`` are (paraphrase key, paraphrase length) in file order
    paraphrases: tuple[list[tuple[int, tuple[tuple[int, int], ...]]], ...]
    paraphrase_keys: frozenset[int]  # every paraphrase key in ``paraphrases``

    def starts_of(self, key: int) -> list[int]:
        """Where the phrase with ``key`` starts, in order."""
        return [start for start, k in self.phrases if k == key]


class Aligner:
    """Aligns normalised word lists with METEOR 1.5's English modules over ``tables``."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self._stemmer = snowballstemmer.stemmer("english")
        self.word = lru_cache(maxsize=1 << 18)(self._word)
        self.sentence = lru_cache(maxsize=1 << 17)(self._sentence)
        self.entries = lru_cache(maxsize=1 << 17)(self._entries)

    @cached_property
    def reference_rows(self) -> dict[int, int]:
        """Reference phrase key -> its row in the table (built on first use, ~0.1 s)."""
        keys = self.tables.ref_keys.tolist()
        return dict(zip(keys, range(len(keys)), strict=True))

    def _entries(self, row: int) -> tuple[tuple[tuple[int, int], ...], frozenset[int]]:
        """(paraphrase key, its length) of a reference phrase's entries in file order, and the
        set of those keys."""
        first, stop = self.tables.ref_offsets[row : row + 2].tolist()
        keys = self.tables.par_keys[first:stop].tolist()
        entries = tuple(zip(keys, self.tables.par_lengths[first:stop].tolist(), strict=True))
        return entries, frozenset(keys)

    # ------------------------------------------------------------------ words

    def _word(self, word: str) -> Word:
        return Word(
            key=java_hash(word),
            stem_key=java_hash(self._stemmer.stemWord(word)),
            synsets=self.tables.synsets(word) | self._stem_synsets(word),
            phrase_key=word_hash(word),
            function=word.lower() in self.tables.function_words,
        )

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

    def _sentence(self, words: tuple[str, ...]) -> Sentence:
        info = tuple(self.word(w) for w in words)
        n = len(words)
        hashes = [w.phrase_key for w in info]
        phrases: list[tuple[int, int]] = []
        for start in range(n):
            key = 0
            for stop in range(start, min(n, start + MAX_PHRASE)):
                key = (key * HASH_MULTIPLIER + hashes[stop]) & MASK64
                phrases.append((start, key))
        paraphrases: tuple[list, ...] = tuple([] for _ in range(n))
        paraphrase_keys: frozenset[int] = frozenset()
        rows = self.reference_rows
        previous, length = -1, 0
        for start, key in phrases:
            length = length + 1 if start == previous else 1
            previous = start
            row = rows.get(key)
            if row is not None:
                entries, keys = self.entries(row)
                paraphrases[start].append((length, entries))
                paraphrase_keys |= keys
        positions: dict[int, list[int]] = {}
        stem_positions: dict[int, list[int]] = {}
        for i, w in enumerate(info):
            positions.setdefault(w.key, []).append(i)
            stem_positions.setdefault(w.stem_key, []).append(i)
        return Sentence(
            words=words,
            keys=tuple(w.key for w in info),
            info=info,
            positions=positions,
            stem_positions=stem_positions,
            with_synsets=tuple(i for i, w in enumerate(info) if w.synsets),
            phrases=tuple(phrases),
            phrase_keys=frozenset(key for _, key in phrases),
            paraphrases=paraphrases,
            paraphrase_keys=paraphrase_keys,
        )

    # ------------------------------------------------------------------ alignment

    def align(self, test_words: tuple[str, ...], reference_words: tuple[str, ...]) -> tuple:
        """The 23 ``MeteorStats`` numbers of ``test_words`` against ``reference_words``."""
        test, reference = self.sentence(test_words), self.sentence(reference_words)
        matches = self._matches(test, reference)
        chosen = _search(matches, len(test.words), len(reference.words))
        return _statistics(test, reference, chosen)

    def _matches(self, test: Sentence, reference: Sentence) -> list[list[Match]]:
        """Every match, listed by reference start position in the Java matchers' order."""
        n1, n2 = len(test.words), len(reference.words)
        by_start: list[list[Match]] = [[] for _ in range(n2)]
        identical = test.keys == reference.keys

        def add(start: int, length: int, test_start: int, test_length: int, module: int) -> None:
            weight = 1.0 if module == EXACT else 0.5
            gain = int(test_length * weight) + int(length * weight)
            by_start[start].append(
                Match(
                    start, length, test_start, test_length, module, gain,
                    ((1 << test_length) - 1) << test_start, ((1 << length) - 1) << start,
                )
            )  # fmt: skip

        for j, r in enumerate(reference.info):
            for i in test.positions.get(r.key, ()):
                add(j, 1, i, 1, EXACT)
        if not identical:
            for j, r in enumerate(reference.info):
                for i in test.stem_positions.get(r.stem_key, ()):
                    if test.keys[i] != r.key:
                        add(j, 1, i, 1, STEM)
            for j in reference.with_synsets:
                r = reference.info[j]
                for i in test.with_synsets:
                    t = test.info[i]
                    if t.key != r.key and not r.synsets.isdisjoint(t.synsets):
                        add(j, 1, i, 1, SYNONYM)
            common = reference.paraphrase_keys & test.phrase_keys
            if common:
                for j in range(n2):
                    for length, entries in reference.paraphrases[j]:
                        for key, size in entries:
                            if key in common:
                                for i in test.starts_of(key):
                                    add(j, length, i, size, PARAPHRASE)
            common = test.paraphrase_keys & reference.phrase_keys
            if common:
                for i in range(n1):
                    for length, entries in test.paraphrases[i]:
                        for key, size in entries:
                            if key in common:
                                for j in reference.starts_of(key):
                                    add(j, size, i, length, PARAPHRASE)
        return by_start


def _search(by_start: list[list[Match]], n1: int, n2: int) -> list[Match]:
    """The matches of the best alignment: the fixed ones plus the beam search's choice."""
    test_cover, reference_cover = [0] * n1, [0] * n2
    for matches in by_start:
        for m in matches:
            for k in range(m.test_start, m.test_start + m.test_length):
                test_cover[k] += 1
            for k in range(m.start, m.start + m.length):
                reference_cover[k] += 1
    fixed: list[Match | None] = [None] * n2
    test_used = reference_used = 0
    open_choices = False
    for j, matches in enumerate(by_start):
        if len(matches) == 1:
            m = matches[0]
            if all(reference_cover[j + k] == 1 for k in range(m.length)) and all(
                test_cover[m.test_start + k] == 1 for k in range(m.test_length)
            ):
                fixed[j] = m
                test_used |= m.test_bits
                reference_used |= m.reference_bits
                continue
        open_choices = open_choices or bool(matches)
    if not open_choices:
        return [m for m in fixed if m is not None]
    # a path: (rank, next position, end of the last match in the test or -1, test words used,
    # reference words used, chosen matches as a linked list)
    paths: list[tuple] = [(0, 0, -1, test_used, reference_used, None)]
    for current in range(n2 + 1):
        paths.sort(key=_rank)
        extended: list[tuple] = []
        for path in paths[:BEAM_SIZE]:
            rank, position, last_end, used1, used2, chosen = path
            if current == n2:
                if last_end != -1:
                    rank += _CHUNK
                extended.append((rank, position, last_end, used1, used2, chosen))
                continue
            if used2 >> current & 1:
                if current < position:
                    extended.append(path)
                elif (m := fixed[position]) is not None:
                    rank -= m.gain * _MATCHED
                    if last_end != -1 and m.test_start != last_end:
                        rank += _CHUNK
                    extended.append(
                        (
                            rank + m.distance, m.start + m.length, m.test_start + m.test_length,
                            used1, used2, chosen,
                        )
                    )  # fmt: skip
                continue
            for m in by_start[current]:
                if m.test_bits & used1 or m.reference_bits & used2:
                    continue
                new_rank = rank - m.gain * _MATCHED
                if last_end != -1 and m.test_start != last_end:
                    new_rank += _CHUNK
                extended.append(
                    (
                        new_rank, m.start + m.length, m.test_start + m.test_length,
                        used1 | m.test_bits, used2 | m.reference_bits, (m, chosen),
                    )
                )  # fmt: skip
                rank += m.distance  # METEOR adds it to the path that skips, not the new one
            if last_end != -1:
                rank += _CHUNK
            extended.append((rank, position + 1, -1, used1, used2, chosen))
        paths = extended or paths[:1]
    paths.sort(key=_rank)
    result = [m for m in fixed if m is not None]
    node = paths[0][5]
    while node is not None:
        result.append(node[0])
        node = node[1]
    return result


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

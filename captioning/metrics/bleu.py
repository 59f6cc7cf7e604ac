"""Corpus BLEU-1..4 exactly as coco-caption's ``Bleu(4)``, and the n-gram tables CIDEr-D shares.

coco-caption's quirks are kept on purpose: words are ``str.split()`` pieces, the reference
length is the one closest to the candidate's (ties to the shorter), the brevity penalty is
corpus-level, and every precision carries its epsilons (``TINY`` = 1e-15 added to the matches,
``SMALL`` = 1e-9 to the guesses).

Speed: instead of a Counter per caption, all captions' n-grams become integer ids (one
``np.unique`` per order) and the per-image work is a handful of sorted-array operations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np

TINY, SMALL = 1e-15, 1e-9
MAX_N = 4


@dataclass(frozen=True)
class NgramRows:
    """One row per distinct n-gram of each caption: which caption, which n-gram, how often."""

    caption: np.ndarray  # (R,) caption index, rows sorted by (order, caption, gram)
    gram: np.ndarray  # (R,) n-gram id, unique over all orders
    order: np.ndarray  # (R,) n - 1
    count: np.ndarray  # (R,) occurrences in the caption
    lengths: np.ndarray  # (C,) words per caption
    n_grams: int  # number of n-gram ids


def ngram_rows(captions: Sequence[str], n: int = MAX_N) -> NgramRows:
    """Count the 1..n-grams of whitespace-split captions (``str.split()``, as coco-caption)."""
    # C-level loops only (map / dict.fromkeys): this is most of the Python-side cost
    words = list(map(str.split, captions))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    all_words = list(chain.from_iterable(words))
    index = {word: i for i, word in enumerate(dict.fromkeys(all_words))}
    flat = np.fromiter(map(index.__getitem__, all_words), dtype=np.int64, count=len(all_words))
    vocab = max(len(index), 1)
    caption_of = np.repeat(np.arange(len(words), dtype=np.int64), lengths)
    end_of = np.repeat(np.cumsum(lengths), lengths)  # one past the caption's last word
    positions = np.arange(flat.size, dtype=np.int64)

    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    n_grams = 0
    dense = np.zeros(0, dtype=np.int64)
    starts = positions
    for k in range(n):
        if k == 0:
            codes = flat
        else:
            # an n-gram is the (n-1)-gram at the same start followed by one more word; dense
            # ids keep the codes small (< total words x vocabulary) whatever n is
            starts = starts[starts + k < end_of[starts]]
            codes = dense[starts] * vocab + flat[starts + k]
        if k == 0:  # word ids are dense already
            size, inverse = vocab, flat
        else:
            unique, inverse = np.unique(codes, return_inverse=True)
            size = unique.size
        dense = np.zeros(flat.size, dtype=np.int64)
        dense[starts] = inverse
        # (caption, gram) pairs -> distinct rows with their counts
        keys, counts = np.unique(caption_of[starts] * size + inverse, return_counts=True)
        parts.append((keys // size, keys % size + n_grams, np.full(keys.size, k), counts))
        n_grams += size
    caption, gram, order, count = (np.concatenate(column) for column in zip(*parts, strict=True))
    return NgramRows(caption, gram, order, count, lengths, n_grams)


@dataclass(frozen=True)
class Corpus:
    """Predictions (captions 0..I-1) and references (captions I.., grouped by image) as rows."""

    keys: list[Any]
    rows: NgramRows
    ref_image: np.ndarray  # (R,) image of each reference caption
    ref_offsets: np.ndarray  # (I + 1,) first reference caption of each image (after the I hyps)
    is_ref: np.ndarray  # (rows,) the row belongs to a reference caption

    @property
    def n_images(self) -> int:
        return len(self.keys)

    def row_image(self) -> np.ndarray:
        """Image of every row's caption."""
        image = self.rows.caption.copy()
        image[self.is_ref] = self.ref_image[self.rows.caption[self.is_ref] - self.n_images]
        return image

    def max_ref_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted ``image * n_grams + gram`` keys of the references' n-grams, max count of each."""
        image = self.row_image()[self.is_ref]
        keys = image * self.rows.n_grams + self.rows.gram[self.is_ref]
        order = np.argsort(keys)
        keys, counts = keys[order], self.rows.count[self.is_ref][order]
        if keys.size == 0:
            return keys, counts
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        return keys[first], np.maximum.reduceat(counts, first)


def build_corpus(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str], n: int = MAX_N
) -> Corpus:
    """The n-gram rows of ``predictions`` and of their images' references (same keys)."""
    keys = list(predictions)
    refs = [references[k] for k in keys]
    counts = np.fromiter(map(len, refs), dtype=np.int64, count=len(refs))
    captions = [predictions[k] for k in keys]
    captions.extend(chain.from_iterable(refs))
    rows = ngram_rows(captions, n)
    return Corpus(
        keys=keys,
        rows=rows,
        ref_image=np.repeat(np.arange(len(keys), dtype=np.int64), counts),
        ref_offsets=np.r_[0, np.cumsum(counts)],
        is_ref=rows.caption >= len(keys),
    )


def corpus_bleu(
    references: Mapping[Any, Sequence[str]] | None = None,
    predictions: Mapping[Any, str] | None = None,
    n: int = MAX_N,
    corpus: Corpus | None = None,
) -> list[float]:
    """BLEU-1..n of tokenised, space-joined captions (or of a prebuilt ``corpus``)."""
    if corpus is None:
        if references is None or predictions is None:
            raise ValueError("corpus_bleu needs references and predictions, or a corpus")
        corpus = build_corpus(references, predictions, n)
    rows, images = corpus.rows, corpus.n_images
    hyp_len = rows.lengths[:images]
    ref_len = rows.lengths[images:]

    # clipped matches: each hypothesis n-gram counts at most its max count in one reference
    ref_keys, ref_max = corpus.max_ref_counts()
    hyp = ~corpus.is_ref
    hyp_keys = rows.caption[hyp] * rows.n_grams + rows.gram[hyp]
    found = np.searchsorted(ref_keys, hyp_keys)
    found = np.minimum(found, max(ref_keys.size - 1, 0))
    clip = (
        np.where(ref_keys[found] == hyp_keys, np.minimum(rows.count[hyp], ref_max[found]), 0)
        if ref_keys.size
        else np.zeros(hyp_keys.size, dtype=np.int64)
    )
    correct = np.bincount(rows.order[hyp], weights=clip, minlength=n).astype(np.int64)
    guess = [int(np.maximum(hyp_len - k, 0).sum()) for k in range(n)]

    # "closest" reference length, ties to the shorter one: smallest (|ref - hyp|, ref)
    gap = np.abs(ref_len - hyp_len[corpus.ref_image])
    ranked = gap * (int(ref_len.max(initial=0)) + 1) + ref_len
    closest = np.minimum.reduceat(ranked, corpus.ref_offsets[:-1]) % (
        int(ref_len.max(initial=0)) + 1
    )
    test_total, ref_total = int(hyp_len.sum()), int(closest.sum())

    scores, product = [], 1.0
    for k in range(n):
        product *= float(int(correct[k]) + TINY) / (guess[k] + SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_total + TINY) / (ref_total + SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores

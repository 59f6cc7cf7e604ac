"""Corpus BLEU-1..4 exactly as coco-caption's ``Bleu(4)``, and the n-gram table CIDEr-D shares.

coco-caption's quirks are kept on purpose: words are ``str.split()`` pieces, the reference
length is the one closest to the candidate's (ties to the shorter), the brevity penalty is
corpus-level, and every precision carries its epsilons (``TINY`` = 1e-15 added to the matches,
``SMALL`` = 1e-9 to the guesses).

Speed: instead of a Counter per caption, all n-grams of the corpus become integer ids (one
sort per order) in a table sorted by (order, n-gram, image, caption), so everything
"per image and n-gram" (clipping, document frequency, hypothesis/reference matches) is a run of
consecutive rows and costs a few whole-array operations.
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
class Corpus:
    """Every distinct n-gram of every caption, one row each.

    Captions are numbered image by image, the prediction first: image ``i`` owns captions
    ``offsets[i]`` (its prediction) to ``offsets[i + 1] - 1`` (its references). Rows are
    sorted by (order, n-gram, image, caption), so the rows of one image's n-gram form a run
    that starts with the prediction's row when the prediction has that n-gram.
    """

    keys: list[Any]  # image ids, in prediction order
    n: int  # largest n-gram order
    lengths: np.ndarray  # (C,) words per caption
    offsets: np.ndarray  # (I + 1,) first caption of each image
    caption: np.ndarray  # (R,) caption of the row
    image: np.ndarray  # (R,) image of the row
    is_hyp: np.ndarray  # (R,) the row is the prediction's
    gram: np.ndarray  # (R,) n-gram id, unique across orders
    order: np.ndarray  # (R,) n-gram order - 1
    count: np.ndarray  # (R,) occurrences of the n-gram in the caption
    run: np.ndarray  # (R,) index of the row's (image, n-gram) run
    run_starts: np.ndarray  # (runs,) first row of each run
    n_grams: int  # number of n-gram ids
    gram_start: np.ndarray | None = None  # (n_grams,) word position of one occurrence of each
    words: list[str] | None = None  # every word of the corpus, in caption order

    def gram_texts(self) -> list[str]:
        """Each n-gram id's words, space-joined (needs ``build_corpus(..., keep_grams=True)``)."""
        if self.gram_start is None or self.words is None:
            raise ValueError("build the corpus with keep_grams=True to name its n-grams")
        orders = np.zeros(self.n_grams, dtype=np.int64)
        orders[self.gram] = self.order
        return [
            " ".join(self.words[start : start + order + 1])
            for start, order in zip(self.gram_start.tolist(), orders.tolist(), strict=True)
        ]

    @property
    def n_images(self) -> int:
        return len(self.keys)

    @property
    def hyp_captions(self) -> np.ndarray:
        return self.offsets[:-1]

    def per_run(self, values: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``values`` of the given (prediction) rows spread over runs, 0 where absent."""
        out = np.zeros(self.run_starts.size, dtype=values.dtype)
        out[self.run[rows]] = values[rows]
        return out

    def ref_max_counts(self) -> np.ndarray:
        """Per run, the largest count of the n-gram in one reference (0: in none)."""
        if self.run_starts.size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.maximum.reduceat(np.where(self.is_hyp, 0, self.count), self.run_starts)


def build_corpus(
    references: Mapping[Any, Sequence[str]],
    predictions: Mapping[Any, str],
    n: int = MAX_N,
    keep_grams: bool = False,
) -> Corpus:
    """The n-gram table of ``predictions`` and their images' (non-empty) reference lists.

    ``keep_grams`` also records where each n-gram occurs, so ``Corpus.gram_texts`` can name
    them (CIDEr-D with document frequencies from elsewhere, e.g. the training set).

    About 90 lines in one function because its loop over n carries the dense n-gram ids of
    order n-1 into order n; the arrays it builds are what :class:`Corpus` documents.
    """
    keys = list(predictions)
    captions: list[str] = []
    sizes = np.empty(len(keys), dtype=np.int64)
    for i, key in enumerate(keys):
        refs = references[key]
        captions.append(predictions[key])
        captions.extend(refs)
        sizes[i] = len(refs) + 1
    if len(keys) and sizes.min() < 2:
        raise ValueError("every image needs at least one reference caption")
    offsets = np.r_[0, np.cumsum(sizes)]

    # word ids; C-level loops only (map / dict.fromkeys): most of the Python-side cost
    words = list(map(str.split, captions))
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    all_words = list(chain.from_iterable(words))
    index = {word: i for i, word in enumerate(dict.fromkeys(all_words))}
    flat = np.fromiter(map(index.__getitem__, all_words), dtype=np.int64, count=len(all_words))
    vocab = max(len(index), 1)
    caption_of = np.repeat(np.arange(len(captions), dtype=np.int64), lengths)  # per word
    end_of = np.repeat(np.cumsum(lengths), lengths)  # one past the word's caption

    columns: list[tuple[np.ndarray, ...]] = []
    gram_starts: list[np.ndarray] = []
    n_grams = 0
    dense = flat
    starts = np.arange(flat.size, dtype=np.int64)
    for k in range(n):
        if k:
            # an n-gram is the (n-1)-gram starting at the same word plus the next word; dense
            # ids keep these codes below (words x vocabulary) whatever n is
            starts = starts[starts + k < end_of[starts]]
        codes = dense[starts] * vocab + flat[starts + k] if k else flat
        if codes.size and codes.max() < 1 << 16:
            codes = codes.astype(np.uint16)  # radix sort
        # One stable sort does it all: equal n-grams become neighbours (-> dense ids), and
        # since captions are laid out in order, so do the occurrences of an n-gram in one
        # caption (-> counts). Rows come out sorted by (n-gram, image, caption).
        by_code = np.argsort(codes, kind="stable")
        position = starts[by_code]
        sorted_codes = codes[by_code]
        new_gram = np.ones(by_code.size, dtype=bool)
        new_gram[1:] = sorted_codes[1:] != sorted_codes[:-1]
        gram_of = np.cumsum(new_gram) - 1
        if k + 1 < n:
            dense = np.zeros(flat.size, dtype=np.int64)
            dense[position] = gram_of
        caption = caption_of[position]
        new_row = new_gram.copy()
        new_row[1:] |= caption[1:] != caption[:-1]
        first = np.flatnonzero(new_row)
        count = np.diff(np.append(first, by_code.size))
        columns.append((caption[first], gram_of[first] + n_grams, np.full(first.size, k), count))
        if keep_grams:
            start_of = np.zeros(int(gram_of[-1]) + 1 if gram_of.size else 0, dtype=np.int64)
            start_of[gram_of] = position
            gram_starts.append(start_of)
        n_grams += int(gram_of[-1]) + 1 if gram_of.size else 0
    caption, gram, order, count = (np.concatenate(c) for c in zip(*columns, strict=True))
    image = np.repeat(np.arange(len(keys), dtype=np.int64), sizes)[caption]

    new_run = np.ones(image.size, dtype=bool)
    new_run[1:] = (image[1:] != image[:-1]) | (gram[1:] != gram[:-1])
    return Corpus(
        keys=keys,
        n=n,
        lengths=lengths,
        offsets=offsets,
        caption=caption,
        image=image,
        is_hyp=caption == offsets[image],
        gram=gram,
        order=order,
        count=count,
        run=np.cumsum(new_run) - 1,
        run_starts=np.flatnonzero(new_run),
        n_grams=n_grams,
        gram_start=np.concatenate(gram_starts) if keep_grams and gram_starts else None,
        words=all_words if keep_grams else None,
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
    n = corpus.n
    hyp_len = corpus.lengths[corpus.hyp_captions]

    # clipped matches: a prediction's n-gram counts at most as often as in one reference
    hyp_count = corpus.per_run(corpus.count, corpus.is_hyp)
    clipped = np.minimum(hyp_count, corpus.ref_max_counts())
    run_order = corpus.order[corpus.run_starts]
    correct = np.bincount(run_order, weights=clipped, minlength=n).astype(np.int64)
    guess = [int(np.maximum(hyp_len - k, 0).sum()) for k in range(n)]

    # "closest" reference length, ties to the shorter: the smallest (|ref - hyp|, ref) pair,
    # encoded as one integer; each image's prediction is masked out with a huge value
    lengths = corpus.lengths
    base = int(lengths.max(initial=0)) + 1
    gap = np.abs(lengths - np.repeat(hyp_len, np.diff(corpus.offsets)))
    ranked = gap * base + lengths
    ranked[corpus.hyp_captions] = np.iinfo(np.int64).max
    closest = np.minimum.reduceat(ranked, corpus.hyp_captions) % base
    test_total, ref_total = int(hyp_len.sum()), int(closest.sum())

    scores, product = [], 1.0
    for k in range(n):
        product *= float(int(correct[k]) + TINY) / (guess[k] + SMALL)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_total + TINY) / (ref_total + SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def sentence_bleu_array(corpus: Corpus) -> np.ndarray:
    """Per-image BLEU-n (the last order) as coco-caption's ``Bleu`` lists it per image: each
    prediction's own clipped precisions and brevity penalty, with the same epsilons."""
    n, images = corpus.n, corpus.n_images
    hyp_len = corpus.lengths[corpus.hyp_captions]
    hyp_count = corpus.per_run(corpus.count, corpus.is_hyp)
    clipped = np.minimum(hyp_count, corpus.ref_max_counts())
    starts = corpus.run_starts
    cell = corpus.image[starts] * n + corpus.order[starts]
    correct = np.bincount(cell, weights=clipped, minlength=images * n).reshape(images, n)
    guess = np.maximum(hyp_len[:, None] - np.arange(n)[None, :], 0)
    precision = (correct + TINY) / (guess + SMALL)
    bleu = np.exp(np.log(precision).sum(axis=1) / n)  # the product's n-th root
    lengths = corpus.lengths
    base = int(lengths.max(initial=0)) + 1
    gap = np.abs(lengths - np.repeat(hyp_len, np.diff(corpus.offsets)))
    ranked = gap * base + lengths
    ranked[corpus.hyp_captions] = np.iinfo(np.int64).max
    closest = np.minimum.reduceat(ranked, corpus.hyp_captions) % base
    ratio = (hyp_len + TINY) / (closest + SMALL)
    penalty = np.where(ratio < 1, np.exp(1 - 1 / np.maximum(ratio, 1e-300)), 1.0)
    return bleu * penalty

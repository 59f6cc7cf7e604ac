"""CIDEr-D exactly as coco-caption's ``Cider()`` computes it, vectorised with numpy.

Definition (Vedantam et al. 2015, the "-D" variant coco-caption ships): tf-idf vectors of
1..4-grams, document frequencies counted over the references of the evaluated corpus
(``idf = log(images) - log(max(1, df))``), the candidate's weights clipped by the reference's
(``min``), cosine normalisation per n, a gaussian length penalty with sigma 6, x10, averaged
over n and over the references, then over images. Kept quirks: a caption's "length" is its
number of *bigrams* (it only matters for captions of 0 or 1 words), and a corpus of one image
scores 0 (every idf is log(1) - log(1)).

All (hypothesis, reference) pairs are scored at once: every reference n-gram row looks up the
same image's hypothesis weight in a sorted key array, and sums are ``np.bincount`` calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from captioning.metrics.bleu import MAX_N, Corpus, build_corpus

SIGMA = 6.0


def cider_d_array(corpus: Corpus, n: int = MAX_N, sigma: float = SIGMA) -> np.ndarray:
    """Per-image CIDEr-D, in the order of ``corpus.keys``."""
    rows, images = corpus.rows, corpus.n_images
    image = corpus.row_image()
    n_captions = rows.lengths.size

    # document frequency: in how many images' reference sets each n-gram occurs
    ref_keys, _ = corpus.max_ref_counts()
    doc_freq = np.bincount(ref_keys % rows.n_grams, minlength=rows.n_grams).astype(np.float64)
    idf = np.log(float(images)) - np.log(np.maximum(1.0, doc_freq))
    weight = rows.count * idf[rows.gram]
    slot = rows.caption * n + rows.order  # (caption, n) cell of each row
    norm = np.sqrt(np.bincount(slot, weights=weight * weight, minlength=n_captions * n))
    norm = norm.reshape(n_captions, n)
    bigrams = np.maximum(rows.lengths - 1, 0)  # coco-caption's "length"

    # every reference row meets its image's hypothesis weight for the same n-gram (or 0)
    hyp = ~corpus.is_ref
    hyp_keys = image[hyp] * rows.n_grams + rows.gram[hyp]  # sorted: one hypothesis per image
    hyp_order = np.argsort(hyp_keys, kind="stable")
    hyp_keys, hyp_weight = hyp_keys[hyp_order], weight[hyp][hyp_order]
    ref = corpus.is_ref
    ref_keys_rows = image[ref] * rows.n_grams + rows.gram[ref]
    found = np.minimum(np.searchsorted(hyp_keys, ref_keys_rows), max(hyp_keys.size - 1, 0))
    if hyp_keys.size:
        matched = hyp_keys[found] == ref_keys_rows
        hyp_w = np.where(matched, hyp_weight[found], 0.0)
    else:
        hyp_w = np.zeros(ref_keys_rows.size)
    ref_w = weight[ref]
    dot = np.bincount(
        slot[ref] - images * n, weights=np.minimum(hyp_w, ref_w) * ref_w, minlength=(n_captions - images) * n
    ).reshape(-1, n)

    ref_image = corpus.ref_image
    denominator = norm[ref_image] * norm[images:]  # (refs, n): hypothesis norm x reference norm
    similarity = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)
    delta = (bigrams[ref_image] - bigrams[images:]).astype(np.float64)
    penalty = np.exp(-(delta**2) / (2 * sigma**2))
    per_ref = (similarity * penalty[:, None]).sum(axis=1)
    per_image = np.bincount(ref_image, weights=per_ref, minlength=images)
    refs_per_image = np.diff(corpus.ref_offsets)
    return per_image / n / refs_per_image * 10.0


def cider_d_scores(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]
) -> dict[Any, float]:
    """Per-image CIDEr-D of tokenised, space-joined captions (the corpus is ``predictions``)."""
    corpus = build_corpus(references, predictions)
    return dict(zip(corpus.keys, cider_d_array(corpus).tolist(), strict=True))


def corpus_cider_d(
    references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str]
) -> float:
    """Mean CIDEr-D over the images of ``predictions``."""
    return float(np.mean(cider_d_array(build_corpus(references, predictions))))

"""CIDEr-D exactly as coco-caption's ``Cider()`` computes it, vectorised with numpy.

Definition (Vedantam et al. 2015, the "-D" variant coco-caption ships): tf-idf vectors of
1..4-grams, document frequencies counted over the references of the evaluated corpus
(``idf = log(images) - log(max(1, df))``), the candidate's weights clipped by the reference's
(``min``), cosine normalisation per n, a gaussian length penalty with sigma 6, x10, averaged
over n and over the references, then over images. Kept quirks: a caption's "length" is its
number of *bigrams* (it only matters for captions of 0 or 1 words), and a corpus of one image
scores 0 (every idf is log(1) - log(1)).

All (prediction, reference) pairs are scored at once on the shared n-gram table: a reference
row meets its image's prediction weight through their common (image, n-gram) run, and every
sum is an ``np.bincount``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from captioning.metrics.bleu import Corpus, build_corpus

SIGMA = 6.0


class DocumentFrequencies(NamedTuple):
    """In how many images' reference sets each n-gram (space-joined) occurs, of ``images``."""

    counts: Mapping[str, int]
    images: int


def document_frequencies(
    references: Mapping[Any, Sequence[str]], n: int = 4
) -> DocumentFrequencies:
    """Document frequencies of tokenised, space-joined references (e.g. the training set's),
    counted as coco-caption counts them over the evaluated corpus."""
    counts: Counter[str] = Counter()
    for refs in references.values():
        grams = set()
        for ref in refs:
            words = ref.split()
            for k in range(1, n + 1):
                grams.update(" ".join(words[i : i + k]) for i in range(len(words) - k + 1))
        counts.update(grams)
    return DocumentFrequencies(dict(counts), len(references))


def cider_d_array(
    corpus: Corpus, sigma: float = SIGMA, frequencies: DocumentFrequencies | None = None
) -> np.ndarray:
    """Per-image CIDEr-D, in the order of ``corpus.keys``.

    Document frequencies are counted over the corpus's references (coco-caption), or taken
    from ``frequencies`` (the corpus then needs ``keep_grams=True``), as SCST rewards do.
    """
    n, images = corpus.n, corpus.n_images
    n_captions = corpus.lengths.size

    if frequencies is None:
        # document frequency: in how many images' reference sets each n-gram occurs
        in_refs = corpus.ref_max_counts() > 0
        doc_freq = np.bincount(corpus.gram[corpus.run_starts][in_refs], minlength=corpus.n_grams)
        documents = images
    else:
        table = frequencies.counts
        texts = corpus.gram_texts()
        doc_freq = np.fromiter((table.get(t, 0) for t in texts), dtype=np.int64, count=len(texts))
        documents = frequencies.images
    idf = np.log(float(max(documents, 1))) - np.log(np.maximum(1.0, doc_freq.astype(np.float64)))
    weight = corpus.count * idf[corpus.gram]
    cell = corpus.caption * n + corpus.order  # (caption, order) of each row
    norm = np.sqrt(np.bincount(cell, weights=weight * weight, minlength=n_captions * n))
    norm = norm.reshape(n_captions, n)

    # sum over shared n-grams of min(prediction weight, reference weight) x reference weight
    hyp_weight = corpus.per_run(weight, corpus.is_hyp)[corpus.run]
    ref = ~corpus.is_hyp
    product = np.minimum(hyp_weight[ref], weight[ref]) * weight[ref]
    dot = np.bincount(cell[ref], weights=product, minlength=n_captions * n)
    dot = dot.reshape(n_captions, n).astype(np.float64)  # (bincount of nothing is integer)

    is_ref = np.ones(n_captions, dtype=bool)
    is_ref[corpus.hyp_captions] = False
    refs_per_image = np.diff(corpus.offsets) - 1
    ref_image = np.repeat(np.arange(images), refs_per_image)
    hyp_of_ref = corpus.hyp_captions[ref_image]
    denominator = norm[hyp_of_ref] * norm[is_ref]  # (refs, n)
    dot = dot[is_ref]
    similarity = np.divide(dot, denominator, out=dot.copy(), where=denominator != 0)

    bigrams = np.maximum(corpus.lengths - 1, 0).astype(np.float64)  # coco-caption's "length"
    delta = bigrams[hyp_of_ref] - bigrams[is_ref]
    penalty = np.exp(-(delta**2) / (2 * sigma**2))
    per_ref = (similarity * penalty[:, None]).sum(axis=1)
    per_image = np.bincount(ref_image, weights=per_ref, minlength=images)
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

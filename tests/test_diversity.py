"""Diversity metrics on hand-made caption sets, and mBLEU-4 against coco-caption's Bleu."""

from __future__ import annotations

import math

import numpy as np
import pytest

from captioning.metrics.cider import build_corpus, cider_d_array, document_frequencies
from captioning.metrics.diversity import (
    distinct_ngrams,
    mbleu4,
    self_cider,
    set_diversity,
    split_usage,
)

SETS = {
    1: ["a red circle", "a red circle", "a blue square"],
    2: ["two small dogs run", "a dog runs on grass", "dogs run"],
}
REFS = {1: ["a red circle on the left", "a circle"], 2: ["a dog runs", "two dogs on grass"]}


def test_div_n_counts_distinct_ngrams_over_the_words_of_each_set() -> None:
    # image 1: 9 words; unigrams a red circle blue square = 5; bigrams: a-red red-circle
    # a-blue blue-square = 4. image 2: 4+5+2 = 11 words; unigrams two small dogs run a dog
    # runs on grass = 9; bigrams 3 + 4 + 0 = 7 distinct (dogs-run twice)
    assert distinct_ngrams(SETS, 1) == pytest.approx((5 / 9 + 9 / 11) / 2)
    assert distinct_ngrams(SETS, 2) == pytest.approx((4 / 9 + 7 / 11) / 2)


def test_mbleu4_is_coco_caption_bleu4_of_each_caption_against_the_others() -> None:
    from pycocoevalcap.bleu.bleu import Bleu

    expected = []
    for i in range(3):
        refs = {k: [c for j, c in enumerate(caps) if j != i] for k, caps in SETS.items()}
        value, _ = Bleu(4).compute_score(refs, {k: [caps[i]] for k, caps in SETS.items()})
        expected.append(value[3])
    assert mbleu4(SETS) == pytest.approx(float(np.mean(expected)), rel=1e-9, abs=1e-12)
    # identical captions: every caption matches the others exactly
    assert mbleu4({1: ["a red circle on the left"] * 4}) == pytest.approx(1.0)


def test_self_cider_is_zero_for_one_caption_repeated_and_one_for_disjoint_ones() -> None:
    refs = {1: ["a b c d"], 2: ["e f g h"], 3: ["i j k l"]}
    repeated = {1: ["a b c d"] * 3, 2: ["e f g h"] * 3}
    assert self_cider(repeated, refs) == pytest.approx(0.0, abs=1e-6)
    # no shared n-gram, equal lengths: K is 1 x identity, equal eigenvalues, -log(1/n)/log(n) = 1
    assert self_cider({1: ["a b c d", "e f g h", "i j k l"]}, refs) == pytest.approx(1.0)


def test_self_cider_of_two_captions_from_their_kernel_by_hand() -> None:
    captions = {1: ["a red circle", "a red square"]}
    refs = {1: ["a red circle"], 2: ["a blue square"], 3: ["two circles"]}
    frequencies = document_frequencies(refs)
    # the kernel's entries one pair at a time: K = [[s, x], [x', s']] (lower triangle read)
    pair = {}
    for i in range(2):
        for j in range(2):
            corpus = build_corpus({0: [captions[1][j]]}, {0: captions[1][i]}, keep_grams=True)
            pair[i, j] = float(cider_d_array(corpus, frequencies=frequencies)[0]) / 10
    kernel = np.array([[pair[0, 0], pair[1, 0]], [pair[1, 0], pair[1, 1]]])
    roots = np.sqrt(np.clip(np.linalg.eigvalsh(kernel), 0, None))
    expected = -math.log(roots[-1] / roots.sum()) / math.log(2)
    assert 0.0 < expected < 1.0
    assert self_cider(captions, refs) == pytest.approx(expected, rel=1e-9)


def test_set_diversity_names_its_keys_and_refuses_uneven_sets() -> None:
    scores = set_diversity(SETS, REFS)
    assert set(scores) == {"mBLEU-4", "div-1", "div-2", "self-CIDEr"}
    with pytest.raises(ValueError, match="same number"):
        set_diversity({1: ["a", "b"], 2: ["c"]}, REFS)
    with pytest.raises(ValueError, match=">= 2"):
        set_diversity({1: ["a"]}, REFS)


def test_split_usage_counts_words_novel_captions_and_length() -> None:
    predictions = {1: "a red circle", 2: "a blue circle", 3: "a red circle"}
    scores = split_usage(predictions, vocabulary_size=10, training_captions={"a red circle"})
    assert scores == {"vocab_usage": 4 / 10, "mean_length": 3.0, "novel": pytest.approx(1 / 3)}
    assert "novel" not in split_usage(predictions, 10)
    with pytest.raises(ValueError, match="vocabulary_size"):
        split_usage(predictions, 0)

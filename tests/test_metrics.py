"""coco-caption metrics: our numbers against pycocoevalcap's, the tokenizer against Stanford's."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import pytest
import torch

from captioning.metrics import (
    METRIC_NAMES,
    CaptionMetric,
    meteor_score,
    per_image_cider,
    score,
    tokenize,
    tokenize_corpus,
)
from captioning.metrics.rouge import lcs_length
from captioning.text import ptb_tokens

FIXTURE = Path(__file__).parent / "fixtures" / "ptb_tokenizer_cases.json"
TOLERANCE = 1e-9
KEYS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"]  # without METEOR


def pycoco(name: str):
    """A pycocoevalcap scorer module (the reference; the tests using it skip without it)."""
    return pytest.importorskip(f"pycocoevalcap.{name}.{name}")


def reference_scores(
    references: dict[str, list[str]], predictions: dict[str, str]
) -> tuple[dict[str, float], list[float]]:
    """pycocoevalcap's Bleu(4), Rouge() and Cider() on tokenised captions (+ per-image CIDEr)."""
    listed = {key: [caption] for key, caption in predictions.items()}
    bleu, _ = pycoco("bleu").Bleu(4).compute_score(references, listed, verbose=0)
    rouge, _ = pycoco("rouge").Rouge().compute_score(references, listed)
    cider, per_image = pycoco("cider").Cider().compute_score(references, listed)
    scores = {f"BLEU-{k + 1}": value for k, value in enumerate(bleu)}
    scores.update({"ROUGE-L": rouge, "CIDEr-D": cider})
    return {k: float(v) for k, v in scores.items()}, [float(v) for v in per_image]


def assert_matches_pycocoevalcap(references: dict[str, list[str]], predictions: dict[str, str]):
    ours = score(references, predictions, tokenized=True, meteor=False)
    theirs, per_image = reference_scores(references, predictions)
    assert list(ours) == KEYS
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=TOLERANCE, rel=0), key
    ours_per_image = per_image_cider(references, predictions, tokenized=True)
    assert list(ours_per_image) == list(predictions)
    assert list(ours_per_image.values()) == pytest.approx(per_image, abs=TOLERANCE, rel=0)
    return ours


def random_corpus(
    seed: int, n_images: int = 200, vocab_size: int = 30
) -> tuple[dict[str, list[str]], dict[str, str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(vocab_size)]

    def caption() -> str:
        return " ".join(rng.choices(vocab, k=rng.choice([0, 1, 2, 3, 5, 8, 11, 15, 20])))

    references = {f"img{i}": [caption() for _ in range(rng.randint(1, 5))] for i in range(n_images)}
    return references, {key: caption() for key in references}


# ---------------------------------------------------------------------- tokenizer


def fixture_cases() -> list[dict]:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", fixture_cases(), ids=lambda case: repr(case["input"])[:40])
def test_tokenizer_matches_stanford_ptb(case: dict) -> None:
    assert tokenize(case["input"]) == case["expected"]


def test_tokenizer_fixture_covers_the_quirks() -> None:
    by_input = {case["input"]: case["expected"] for case in fixture_cases()}
    assert len(by_input) >= 40
    assert by_input[""] == []
    # brackets are lowercased before coco-caption's filter, so they survive it
    assert "-lrb-" in by_input["A man (wearing a hat) and a woman [in red] {braces}"]
    assert by_input["cannot gonna gotta wanna gimme lemme"][:4] == ["can", "not", "gon", "na"]
    assert "2\u00a01/2" in by_input["\u00bd cup and 2 1/2 cups"]


def test_ptb_tokens_keep_punctuation_and_tokenize_drops_it() -> None:
    assert ptb_tokens('He said "hi" (twice).') == [
        "he", "said", "``", "hi", "''", "-lrb-", "twice", "-rrb-", ".",
    ]  # fmt: skip
    assert tokenize('He said "hi" (twice).') == ["he", "said", "hi", "-lrb-", "twice", "-rrb-"]
    assert tokenize("Line one\nline two") == ["line", "one", "line", "two"]


def test_tokenize_corpus_has_pycocoevalcaps_shape() -> None:
    captions = {"1": ["A dog's bone.", ""], 7: [{"caption": "Two cats, sleeping!"}]}
    assert tokenize_corpus(captions) == {"1": ["a dog 's bone", ""], 7: ["two cats sleeping"]}


# ---------------------------------------------------------------------- scores vs pycocoevalcap


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_corpora_match_pycocoevalcap(seed: int) -> None:
    references, predictions = random_corpus(seed)
    ours = assert_matches_pycocoevalcap(references, predictions)
    assert 0 < ours["BLEU-1"] < 1 and ours["CIDEr-D"] > 0


def test_large_vocabulary_corpus_matches_pycocoevalcap() -> None:
    references, predictions = random_corpus(seed=7, n_images=150, vocab_size=2000)
    assert_matches_pycocoevalcap(references, predictions)


def test_empty_predictions() -> None:
    references, predictions = random_corpus(seed=4, n_images=50)
    all_empty = dict.fromkeys(predictions, "")
    ours = assert_matches_pycocoevalcap(references, all_empty)
    assert ours["BLEU-1"] == pytest.approx(0, abs=1e-12) and ours["CIDEr-D"] == 0
    some_empty = {k: ("" if i % 3 == 0 else v) for i, (k, v) in enumerate(predictions.items())}
    assert_matches_pycocoevalcap(references, some_empty)


def test_one_word_captions() -> None:
    rng = random.Random(5)
    words = ["dog", "cat", "bird", "car"]
    references = {str(i): rng.choices(words, k=rng.randint(1, 4)) for i in range(40)}
    predictions = {key: rng.choice(words) for key in references}
    assert_matches_pycocoevalcap(references, predictions)


def test_identical_predictions_and_references() -> None:
    references, _ = random_corpus(seed=6, n_images=60)
    references = {k: [r for r in refs if r] or ["a dog"] for k, refs in references.items()}
    single = {k: refs[:1] for k, refs in references.items()}
    predictions = {k: refs[0] for k, refs in single.items()}
    ours = assert_matches_pycocoevalcap(single, predictions)
    assert ours["BLEU-1"] == pytest.approx(1.0) and ours["ROUGE-L"] == pytest.approx(1.0)
    assert_matches_pycocoevalcap(references, predictions)


def test_single_image_corpus() -> None:
    references = {"only": ["a dog runs on the grass", "a brown dog running"]}
    ours = assert_matches_pycocoevalcap(references, {"only": "a dog runs"})
    assert ours["CIDEr-D"] == 0.0  # every idf is log(1) - log(1)
    # every word matches; brevity penalty against the closest reference length (4)
    assert ours["BLEU-1"] == pytest.approx(math.exp(1 - 4 / 3))


def test_irregular_spacing_is_split_like_pycocoevalcap() -> None:
    # BLEU / CIDEr split on any whitespace (no-break space included), ROUGE-L on " " only
    references = {1: ["a b", "c"], 2: ["d  e ", "2\u00a01/2 cups"], 3: ["f"]}
    predictions = {1: " a  b", 2: "e\u00a0d", 3: "f "}
    assert_matches_pycocoevalcap(references, predictions)


def test_no_reference_ngrams_at_all() -> None:
    # pycocoevalcap's Cider() crashes here (max() of no document frequencies): we give 0
    references, predictions = {1: ["", ""], 2: [""]}, {1: "", 2: "a"}
    ours = score(references, predictions, tokenized=True)
    listed = {key: [caption] for key, caption in predictions.items()}
    bleu, _ = pycoco("bleu").Bleu(4).compute_score(references, listed, verbose=0)
    rouge, _ = pycoco("rouge").Rouge().compute_score(references, listed)
    assert [ours[f"BLEU-{k}"] for k in range(1, 5)] == pytest.approx(bleu, abs=TOLERANCE)
    assert ours["ROUGE-L"] == pytest.approx(rouge) == 0.5
    assert ours["CIDEr-D"] == 0.0


def test_untokenized_captions_go_through_the_tokenizer() -> None:
    references = {
        1: ["A man's dog (big) isn't happy.", "Two cups: 2 1/2 of them!"],
        2: ["A well-known café, in Paris.", "The U.S. flag... waving?!"],
        3: ["cannot go", "DON'T STOP"],
    }
    predictions = {1: "a man's big dog", 2: "A café in Paris!", 3: ""}
    ours = score(references, predictions)
    tokenized_refs = tokenize_corpus(references)
    tokenized_preds = {k: " ".join(tokenize(p)) for k, p in predictions.items()}
    theirs, _ = reference_scores(tokenized_refs, tokenized_preds)
    assert {k: ours[k] for k in KEYS} == pytest.approx(theirs, abs=TOLERANCE, rel=0)
    assert ours == score(tokenized_refs, tokenized_preds, tokenized=True)  # METEOR included


def test_lcs_length() -> None:
    rng = random.Random(8)
    for _ in range(300):
        a = rng.choices("abcd", k=rng.randint(0, 12))
        b = rng.choices("abcd", k=rng.randint(0, 12))
        assert lcs_length(a, b) == pycoco("rouge").my_lcs(a, b)


# ---------------------------------------------------------------------- errors and options


def test_score_rejects_mismatched_ids() -> None:
    references = {"a": ["x y"], "b": ["y z"], "c": ["z"]}
    with pytest.raises(ValueError, match=r"1 images have no prediction: 'c'"):
        score(references, {"a": "x", "b": "y"})
    with pytest.raises(ValueError, match=r"predicted images have no references: 'd'"):
        score(references, {"a": "x", "b": "y", "c": "z", "d": "w"})


def test_score_rejects_images_without_references() -> None:
    with pytest.raises(ValueError, match=r"empty reference list: 'b'"):
        score({"a": ["x"], "b": []}, {"a": "x", "b": "y"})
    with pytest.raises(ValueError, match="no predictions"):
        score({}, {})


def test_java_meteor_without_java_is_skipped_with_a_warning(monkeypatch, caplog) -> None:
    monkeypatch.setattr("captioning.metrics.scores.shutil.which", lambda name: None)
    with caplog.at_level(logging.WARNING):
        scores = score({"a": ["a dog"]}, {"a": "a dog"}, meteor="java")
    assert list(scores) == KEYS
    assert sum("METEOR" in record.message for record in caplog.records) == 1


def test_meteor_is_scored_by_default_in_python() -> None:
    references = {"a": ["A dog runs on the grass."], "b": ["two cats sleep", "cats sleeping"]}
    predictions = {"a": "dogs running on grass", "b": "a cat sleeps"}
    scores = score(references, predictions)
    assert list(scores) == list(METRIC_NAMES)
    assert scores["METEOR"] == meteor_score(references, predictions)[0]
    assert 0 < scores["METEOR"] < 1
    assert score(references, predictions, meteor="python") == scores
    assert "METEOR" not in score(references, predictions, meteor=False)
    with pytest.raises(ValueError, match=r"meteor must be True or 'python'.*got 'jav'"):
        score(references, predictions, meteor="jav")
    with pytest.raises(ValueError, match="meteor must be"):
        CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS, meteor="JAVA")


# ---------------------------------------------------------------------- CaptionMetric

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "dog", "cat", "runs", "sleeps"]
PAD, EOS = 0, 2


def decode(ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in ids)


def test_caption_metric_cuts_at_eos_drops_padding_and_dedupes() -> None:
    references = {0: ["a dog runs"], 1: ["a cat sleeps"], 2: ["a dog sleeps"]}
    metric = CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS)
    # batch 1, L = 5: image 0 twice (the second one must be ignored)
    metric.update(
        torch.tensor([0, 1, 0]),
        torch.tensor([[4, 5, 7, EOS, PAD], [4, 6, EOS, 8, 8], [6, 6, 6, 6, 6]]),
    )
    # batch 2, L = 2 (another length): no <eos> at all, padding in the middle
    metric.update(torch.tensor([2]), torch.tensor([[PAD, 5]]))
    scores = metric.compute()
    assert metric.last_predictions == {0: "a dog runs", 1: "a cat", 2: "dog"}
    expected = score({i: references[i] for i in (0, 1, 2)}, metric.last_predictions, True)
    assert list(scores) == list(METRIC_NAMES)
    for key, value in expected.items():
        assert isinstance(scores[key], torch.Tensor) and scores[key].is_floating_point()
        assert scores[key].item() == pytest.approx(value, abs=1e-12)

    metric.reset()
    metric.update(torch.tensor([1]), torch.tensor([[EOS, 4, 4]]))
    assert metric.compute()["BLEU-1"].item() == pytest.approx(0.0, abs=1e-12)
    assert metric.last_predictions == {1: ""}


def test_caption_metric_gathers_states_of_different_lengths() -> None:
    # what DDP's "cat" reduction does, with two "ranks" whose captions have different L
    references = {0: ["a dog runs"], 1: ["a cat sleeps"], 2: ["a cat"], 3: ["a dog"]}
    rank0 = CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS)
    rank1 = CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS)
    rank0.update(torch.tensor([0, 1]), torch.tensor([[4, 5, 7, 2, 0, 0], [4, 6, 8, EOS, 0, 0]]))
    rank1.update(torch.tensor([2, 3, 0]), torch.tensor([[4, 6, EOS], [4, 5, EOS], [4, 5, 7]]))
    rank0.merge_state(rank1)
    scores = rank0.compute()
    assert sorted(rank0.last_predictions) == [0, 1, 2, 3]  # image 0 scored once
    assert rank0.last_predictions[0] == "a dog runs"
    assert {rank0.last_predictions[i] for i in (1, 2, 3)} == {"a cat sleeps", "a cat", "a dog"}
    expected = score({i: references[i] for i in range(4)}, rank0.last_predictions, True)
    assert {k: v.item() for k, v in scores.items()} == pytest.approx(expected)


def test_caption_metric_scores_only_predicted_images() -> None:
    references = {0: ["a dog runs"], 1: ["a cat sleeps"], 5: ["a dog"]}
    metric = CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS)
    metric.update(torch.tensor([5, 1]), torch.tensor([[4, 5], [4, 6]]))
    scores = metric.compute()
    expected = score({5: ["a dog"], 1: ["a cat sleeps"]}, {5: "a dog", 1: "a cat"}, True)
    assert {k: v.item() for k, v in scores.items()} == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_caption_metric_errors() -> None:
    metric = CaptionMetric({0: ["a dog"]}, decode=decode, pad_id=PAD, eos_id=EOS)
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match=r"token_ids \(B, L\)"):
        metric.update(torch.tensor([0]), torch.tensor([4, 5]))
    metric.update(torch.tensor([3]), torch.tensor([[4, 5]]))
    with pytest.raises(ValueError, match="no references"):
        metric.compute()

import pytest

from captioning.text import SPECIALS, Vocabulary


def test_round_trip_and_specials() -> None:
    vocab = Vocabulary.build([["a", "red", "circle"], ["a", "blue", "square"], ["a", "red", "dot"]])
    assert vocab.tokens[:4] == list(SPECIALS)
    assert vocab.tokens[4:6] == ["a", "red"]  # most frequent first
    ids = vocab.encode(["a", "red", "square"])
    assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
    assert vocab.decode(ids) == "a red square"
    assert vocab.decode([*ids, vocab.pad_id, vocab.tokens.index("a")]) == "a red square"
    assert Vocabulary(vocab.tokens) == vocab


def test_min_freq_maps_rare_words_to_unk() -> None:
    vocab = Vocabulary.build([["a", "cat"], ["a", "dog"]], min_freq=2)
    assert vocab.tokens == [*SPECIALS, "a"]
    assert vocab.encode(["a", "cat"], add_specials=False) == [4, vocab.unk_id]
    assert vocab.decode(vocab.encode(["a", "cat"])) == "a <unk>"


def test_invalid_token_lists() -> None:
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([*SPECIALS, "a", "a"])

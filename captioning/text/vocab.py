"""Word vocabulary: built on the train split, stored in every checkpoint as a token list."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocabulary:
    """Token <-> id mapping with ``<pad> <bos> <eos> <unk>`` at ids 0..3."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}, got {list(tokens[:4])}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("vocabulary tokens must be unique")
        self.tokens: list[str] = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = range(len(SPECIALS))

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_freq: int = 1) -> Vocabulary:
        """Words seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        counts = Counter(token for caption in captions for token in caption)
        words = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in SPECIALS),
            key=lambda w: (-counts[w], w),
        )
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def encode(self, tokens: Sequence[str], add_specials: bool = True) -> list[int]:
        ids = [self.index.get(t, self.unk_id) for t in tokens]
        return [self.bos_id, *ids, self.eos_id] if add_specials else ids

    def decode_ids(self, ids: Iterable[int]) -> list[str]:
        """Words up to the first ``<eos>``, without ``<bos>``/``<pad>``."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.bos_id, self.pad_id):
                continue
            words.append(self.tokens[i])
        return words

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.decode_ids(ids))

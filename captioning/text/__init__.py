"""Text handling shared by data and metrics: the PTB tokenizer, the vocabulary, word forms.

``tokenize`` reproduces coco-caption's Stanford PTBTokenizer step in pure Python; the data
tokenises captions with it before building the ``Vocabulary``, the metrics before scoring.
"""

from captioning.text.tokenizer import TOKENIZER_VERSION, ptb_tokens, tokenize, tokenize_corpus
from captioning.text.vocab import SPECIALS, Vocabulary
from captioning.text.words import plural

__all__ = [
    "SPECIALS",
    "TOKENIZER_VERSION",
    "Vocabulary",
    "plural",
    "ptb_tokens",
    "tokenize",
    "tokenize_corpus",
]

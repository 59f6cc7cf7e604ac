"""coco-caption-exact metrics without Java, object F1 and the torchmetrics wrapper.

``score`` gives BLEU-1..4, ROUGE-L and CIDEr-D equal to pycocoevalcap's (to float rounding);
``tokenize`` (from ``captioning.text``) is coco-caption's PTBTokenizer step in pure Python.
"""

from captioning.metrics.objects import object_f1
from captioning.metrics.scores import METRIC_NAMES, per_image_cider, score
from captioning.metrics.torchmetric import CaptionMetric
from captioning.text import tokenize, tokenize_corpus

__all__ = [
    "METRIC_NAMES",
    "CaptionMetric",
    "object_f1",
    "per_image_cider",
    "score",
    "tokenize",
    "tokenize_corpus",
]

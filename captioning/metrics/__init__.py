"""coco-caption-exact metrics without Java, object F1 and the torchmetrics wrapper.

``score`` gives BLEU-1..4, ROUGE-L, CIDEr-D and METEOR equal to pycocoevalcap's (to float
rounding; METEOR by ``meteor_score``, a pure-Python METEOR 1.5); ``tokenize`` (from
``captioning.text``) is coco-caption's PTBTokenizer step in pure Python.
"""

from captioning.metrics.meteor import meteor_score
from captioning.metrics.objects import object_f1
from captioning.metrics.scores import METRIC_NAMES, per_image_cider, score
from captioning.metrics.torchmetric import CaptionMetric
from captioning.text import tokenize, tokenize_corpus

__all__ = [
    "METRIC_NAMES",
    "CaptionMetric",
    "meteor_score",
    "object_f1",
    "per_image_cider",
    "score",
    "tokenize",
    "tokenize_corpus",
]

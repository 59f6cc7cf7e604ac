"""coco-caption-exact metrics without Java, object F1 and the torchmetrics wrapper."""

from captioning.metrics.objects import object_f1
from captioning.metrics.scores import per_image_cider, score
from captioning.metrics.tokenizer import tokenize, tokenize_corpus
from captioning.metrics.torchmetric import CaptionMetric

__all__ = ["CaptionMetric", "object_f1", "per_image_cider", "score", "tokenize", "tokenize_corpus"]

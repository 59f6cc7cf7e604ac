"""The training objectives the LightningModule calls: cross-entropy (with the attention
regulariser) and self-critical sequence training, each a plain callable over a batch."""

from captioning.objectives.cross_entropy import CrossEntropy
from captioning.objectives.scst import SelfCritical

__all__ = ["CrossEntropy", "SelfCritical"]

"""METEOR 1.5 in pure Python, equal to the Java scorer coco-caption runs.

``meteor_score`` reproduces ``java -jar meteor-1.5.jar - - -stdio -l en -norm`` as
pycocoevalcap's ``Meteor`` drives it: normalisation, exact / Snowball stem / WordNet synonym /
paraphrase matching, the aligner's beam search with its tie-breaking, the ``rank`` task's
parameters, best reference per image and the corpus aggregate. Its data (function words,
synonyms, nonbreaking prefixes, paraphrase table) is read from the installed pycocoevalcap and
cached on disk (``resources``).
"""

from captioning.metrics.meteor.scorer import meteor_score

__all__ = ["meteor_score"]

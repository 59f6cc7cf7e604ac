"""The browsable report of an evaluated split (``python -m captioning.eval ckpt=... report=true``).

:class:`ReportCollector` (a Lightning callback) keeps each decoded image's words, attention and
boxes; :func:`build_entries` adds the captions, references and per-image scores; and
:func:`write_report` writes one self-contained folder (``report.html`` with the data inline,
``images/`` with downsized copies of the pictures) that any browser opens offline.
"""

from captioning.browse.collect import Decoded, ReportCollector, build_entries, per_image_scores
from captioning.browse.page import REPORT_FILE, write_report

__all__ = [
    "REPORT_FILE",
    "Decoded",
    "ReportCollector",
    "build_entries",
    "per_image_scores",
    "write_report",
]

"""Bottom-up region features: ``python -m captioning.extract data=... out=DIR``.

Each image's regions (a torchvision detector's boxes, or the data's own annotated boxes) are
pooled with ``roi_align`` from a frozen encoder's feature map and written as ``DIR/<key>.npz``:

- ``feat`` (N, D) float32 (float16 with ``extract.dtype=float16``),
- ``boxes`` (N, 4) float32, x1, y1, x2, y2 in the original image's pixels,
- ``image_w``, ``image_h``: the original size, ``scores`` (N,) float32 (1 for given boxes),
- ``labels`` (N,) int64: the detector's class, or the object's index in the boxes file
  (-1 for a distractor),

plus ``DIR/extract.json``, the settings (the same dict :meth:`RegionExtractor.from_settings`
takes and a checkpoint keeps). ``<key>`` is the record's COCO id where it has one, else the
image file's stem (:func:`region_key`).
"""

from captioning.extract.extractor import RegionExtractor, Regions
from captioning.extract.folder import SETTINGS_FILE, ExtractFolderError, RegionFolder, region_key
from captioning.extract.settings import ExtractSettings

__all__ = [
    "SETTINGS_FILE",
    "ExtractFolderError",
    "ExtractSettings",
    "RegionExtractor",
    "RegionFolder",
    "Regions",
    "region_key",
]

"""Pick the reader for a dataset folder: ``data.layout=auto`` looks at the files present."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from captioning.data.coco import read_coco, read_karpathy
from captioning.data.formats import (
    TOKEN_FILES,
    BadData,
    DataError,
    ImageRecord,
    read_flickr8k_kaggle,
    read_flickr_token,
    read_folder,
)

log = logging.getLogger(__name__)

READERS: dict[str, Callable[..., list[ImageRecord]]] = {
    "kaggle": read_flickr8k_kaggle,
    "token": read_flickr_token,
    "karpathy": read_karpathy,
    "coco": read_coco,
    "folder": read_folder,
}


def detect_layout(root: Path) -> str:
    """The layout whose files are present in root; COCO's official annotations win over a
    Karpathy file beside them (which then only maps the splits)."""
    if not root.is_dir():
        raise DataError(f"data.root={root}: no such directory")
    checks: dict[str, list[Path]] = {
        "coco": sorted((root / "annotations").glob("captions_*.json")),
        "kaggle": [root / "captions.txt"],
        "token": [root / name for name in TOKEN_FILES],
        "karpathy": sorted(root.glob("dataset_*.json")),
        "folder": [root / "captions.csv", root / "captions.jsonl"],
    }
    for layout, paths in checks.items():
        if any(path.is_file() for path in paths):
            return layout
    looked_for = ", ".join(
        ("annotations/captions_*.json", "captions.txt", *TOKEN_FILES, "dataset_*.json")
    )
    raise DataError(
        f"data.root={root}: no known layout (looked for {looked_for}, captions.csv, "
        "captions.jsonl); "
        "point data.root at the folder that holds the caption files, or set data.layout"
    )


def read_dataset(
    root: str | Path,
    layout: str = "auto",
    image_dir: str | None = None,
    errors: BadData | None = None,
    **options: Any,
) -> list[ImageRecord]:
    """Read any supported layout; ``options`` the chosen reader does not take are ignored
    (one config serves every layout: ``val_size`` means nothing to a Karpathy file)."""
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
        log.info("Data %s: %s layout", root, layout)
    if layout not in READERS:
        raise DataError(f"data.layout={layout!r}: expected auto or one of {', '.join(READERS)}")
    reader = READERS[layout]
    accepted = inspect.signature(reader).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    return reader(root, image_dir=image_dir, errors=errors or BadData(), **kwargs)

"""The dataset-reader check: records as :class:`~captioning.data.CaptionDataModule` reads them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from captioning.testing._common import fail_unless

if TYPE_CHECKING:
    from captioning.data.formats import ImageRecord


def check_reader(
    reader: Callable[..., Sequence[ImageRecord]],
    root: str | Path,
    *,
    layout: str = "auto",
    image_dir: str | None = None,
    on_error: str = "raise",
    allow_outside_root: bool = False,
    splits: Sequence[str] = ("train", "val", "test"),
) -> list[ImageRecord]:
    """Call a dataset reader as :class:`~captioning.data.CaptionDataModule` does (see
    :class:`DatasetReader`) and check its records: ImageRecords with unique non-empty ids,
    image files that exist, non-empty string captions, a split of train/val/test, and images
    in every split of ``splits``. Returns the records."""
    from captioning.data.formats import SPLITS, BadData, ImageRecord

    name = getattr(getattr(reader, "func", reader), "__name__", repr(reader))
    records = list(
        reader(
            root=Path(root), layout=layout, image_dir=image_dir, errors=BadData(on_error),
            allow_outside_root=allow_outside_root,
        )
    )  # fmt: skip
    seen: set[str] = set()
    for number, record in enumerate(records):
        where = f"{name}: record {number}"
        fail_unless(
            isinstance(record, ImageRecord),
            f"{where} is a {type(record).__name__}, not a captioning.data.ImageRecord",
        )
        fail_unless(
            isinstance(record.image_id, str) and bool(record.image_id),
            f"{where}: image_id {record.image_id!r} is not a non-empty string",
        )
        fail_unless(record.image_id not in seen, f"{where}: image_id {record.image_id!r} repeats")
        seen.add(record.image_id)
        fail_unless(
            isinstance(record.path, Path) and record.path.is_file(),
            f"{where} ({record.image_id}): the image {record.path} is not a file",
        )
        fail_unless(
            isinstance(record.captions, tuple)
            and bool(record.captions)
            and all(isinstance(c, str) and c.strip() for c in record.captions),
            f"{where} ({record.image_id}): captions must be a non-empty tuple of non-empty "
            f"strings, got {record.captions!r}",
        )
        fail_unless(
            record.split in SPLITS,
            f"{where} ({record.image_id}): split {record.split!r} is not one of {SPLITS}",
        )
    counts = {split: sum(r.split == split for r in records) for split in splits}
    empty = [split for split, count in counts.items() if not count]
    fail_unless(not empty, f"{name}({root}): no images in the {'/'.join(empty)} split ({counts})")
    return records

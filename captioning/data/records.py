"""The records every dataset reader returns, its errors and the bad-data policy they share.

A reader collects captions in a :class:`CaptionTable` (file and line of each, repeats dropped)
and turns the images it assigned to splits into :class:`ImageRecord` s with
:func:`build_records`, which keeps image paths inside ``data.root``. Errors name the file and,
where there is one, the line; the :class:`BadData` policy decides whether a bad record stops
the run or is dropped and counted. :mod:`captioning.data.formats` re-exports all of it.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Bad input data; the message names the file (and line) and what to change."""


@dataclass(frozen=True)
class ImageRecord:
    """One image: a unique ``image_id``, its file, raw captions, split and, where the layout
    gives one (COCO's ``id``, Karpathy's ``cocoid``), its COCO id (``data.region_key``)."""

    image_id: str
    path: Path
    captions: tuple[str, ...]
    split: str
    coco_id: int | None = None


@dataclass
class BadData:
    """What to do with a bad record (``data.on_error``): ``raise`` it or ``skip`` and count it.

    ``kind`` names the case (``missing image``, ``empty caption``, ...): the counts per kind
    and the first message of each are reported at the end of setup. A harmless repeat
    (:meth:`drop`) is dropped and counted under either policy.
    """

    on_error: str = "raise"
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)

    SHOWN = 3  # dropped records named in the summary, per kind

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise DataError(f"data.on_error={self.on_error!r}: expected raise or skip")

    def __call__(self, kind: str, message: str) -> None:
        if self.on_error == "raise":
            raise DataError(message + " (data.on_error=skip drops such records)")
        self.counts[kind] += 1
        self.examples.setdefault(kind, message)

    def drop(self, kind: str, message: str) -> None:
        """Count a record that is dropped whatever the policy, since keeping it adds nothing."""
        self.counts[kind] += 1
        self.examples.setdefault(kind, message)
        shown = self.dropped.setdefault(kind, [])
        if len(shown) < self.SHOWN:
            shown.append(message)

    def summary(self) -> str:
        parts = []
        for kind, n in sorted(self.counts.items()):
            if kind in self.dropped:
                more = ", ..." if n > len(self.dropped[kind]) else ""
                plural = "s" if n != 1 else ""
                parts.append(f"{n} {kind}{plural} dropped ({', '.join(self.dropped[kind])}{more})")
            else:
                parts.append(f"{n} {kind} (first: {self.examples[kind]})")
        return "; ".join(parts)


def short_place(where: str) -> tuple[str, str]:
    """``(file name, place)`` of a ``path:line`` or ``path: images[3]`` location."""
    file, sep, place = where.partition(": ")
    if not sep:
        file, _, line = where.rpartition(":")
        place = f"line {line}"
    return Path(file).name, place


def repeat_message(where: str, first: str) -> str:
    """``captions.csv:14 repeats line 9`` (the file is named again only when it differs)."""
    file, place = short_place(where)
    first_file, first_place = short_place(first)
    line = place.removeprefix("line ")
    here = f"{file}:{line}" if line != place else f"{file}: {place}"
    there = first_place if first_file == file else f"{first_file} {first_place}"
    return f"{here} repeats {there}"


def inside(path: Path, folders: Sequence[Path]) -> bool:
    """Whether ``path`` lies in one of ``folders``, by its name alone: links are not followed,
    since an image folder that is a link to another disk is the user's own choice."""
    target = os.path.abspath(path)
    for folder in folders:
        base = os.path.abspath(folder)
        if os.path.commonpath([target, base]) == base:
            return True
    return False


class CaptionTable:
    """Image name -> captions in file order, with where each came from (``file:line``).

    Empty captions go through the bad-data policy; a repeated (image, caption) row is kept
    once and counted (real caption files repeat themselves: it is not worth stopping for).
    """

    def __init__(self, errors: BadData) -> None:
        self.errors = errors
        self.captions: dict[str, list[str]] = {}
        self.where: dict[str, str] = {}
        self._seen: dict[tuple[str, str], str] = {}

    def add(self, image: str, caption: str, where: str) -> bool:
        """Add one row; False when it was dropped (bad, or a repeat)."""
        caption = caption.strip()
        if not image:
            self.errors("empty image name", f"{where}: empty image name")
            return False
        if not caption:
            self.errors("empty caption", f"{where}: empty caption for {image}")
            return False
        first = self._seen.setdefault((image, caption), where)
        if first != where:
            self.errors.drop("duplicate caption", repeat_message(where, first))
            return False
        self.captions.setdefault(image, []).append(caption)
        self.where.setdefault(image, where)
        return True

    def __len__(self) -> int:
        return len(self.captions)


def build_records(
    table: CaptionTable,
    assignment: dict[str, str],
    image_path: Callable[[str], Path],
    errors: BadData,
    *,
    within: Sequence[Path],
    allow_outside_root: bool = False,
    coco_ids: Mapping[str, int] | None = None,
    require_images: bool = True,
) -> list[ImageRecord]:
    """Records of the assigned images, in split order then by id; missing images are bad data.

    ``image_path(name) -> Path`` resolves an image name to its file, which must lie in one of
    ``within`` (data.root and the image folder) unless ``allow_outside_root``: a caption file
    is data, and ``../`` or an absolute path in it should not reach the rest of the disk.
    ``coco_ids`` gives images their COCO id. Without ``require_images`` an image file need
    not exist (``data.region_features`` serves its regions instead).
    """
    coco_ids = coco_ids or {}
    records = []
    for name, split in assignment.items():
        if split not in SPLITS:
            errors("unknown split", f"{table.where[name]}: unknown split {split!r} for {name}")
            continue
        path = image_path(name)
        if not allow_outside_root and not inside(path, within):
            errors(
                "image outside root",
                f"{table.where[name]}: image path {name!r} leads outside data.root "
                f"({within[0]}) to {os.path.normpath(path)}; data.allow_outside_root=true "
                "reads such paths",
            )
            continue
        if require_images and not path.is_file():
            errors("missing image", f"{table.where[name]}: image {name} not found at {path}")
            continue
        records.append(
            ImageRecord(name, path, tuple(table.captions[name]), split, coco_ids.get(name))
        )
    return sorted(records, key=lambda r: (SPLITS.index(r.split), r.image_id))

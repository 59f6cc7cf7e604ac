"""The preprocessing cache: parsed, checked and tokenised records, so a second start is instant.

The cache is one JSON file (nothing to unpickle) keyed by the reader settings, the
tokenizer and the size and modification time of every caption/annotation file in the
dataset folder. It also records the modification times of the image folders, since the
records it holds passed the image checks: adding, removing or renaming images invalidates it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from captioning.data.formats import ImageRecord

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SOURCE_SUFFIXES = (".txt", ".csv", ".json", ".jsonl", ".token")


def source_files(root: Path) -> list[Path]:
    """The files a reader may parse: caption, split and annotation files (not images)."""
    files = [p for p in root.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES]
    if (root / "annotations").is_dir():
        files += [p for p in (root / "annotations").iterdir() if p.suffix == ".json"]
    return sorted(files)


def _stamp(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


class RecordCache:
    """``load()`` the records cached for these settings and sources, or ``save()`` them.

    Args:
        root: the dataset folder.
        cache_dir: where cache files go (default ``root/.cache``).
        settings: everything besides the source files that changes the records.
    """

    def __init__(self, root: Path, cache_dir: str | None, settings: dict[str, Any]) -> None:
        self.root = root
        sources = [_stamp(p) for p in source_files(root)] if root.is_dir() else []
        payload = json.dumps(
            {"version": CACHE_VERSION, "root": str(root.resolve()), "settings": settings,
             "sources": sources},
            sort_keys=True,
        )  # fmt: skip
        self.key = hashlib.sha256(payload.encode()).hexdigest()[:16]
        folder = Path(cache_dir) if cache_dir else root / ".cache"
        self.path = folder / f"records-{self.key}.json"

    def load(
        self,
    ) -> tuple[list[ImageRecord], list[list[list[str]]], dict[str, int]] | None:
        if not self.path.is_file():
            return None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if any(Path(d).stat().st_mtime_ns != t for d, t in data["image_dirs"].items()):
                log.info("Image folders changed since %s was written: parsing again", self.path)
                return None
            records = [
                ImageRecord(image_id, Path(path), tuple(captions), split)
                for image_id, path, split, captions in data["records"]
            ]
            return records, data["tokens"], data["skipped"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Ignoring the unreadable record cache %s (%s)", self.path, error)
            return None

    def save(
        self,
        records: list[ImageRecord],
        tokens: list[list[list[str]]],
        skipped: dict[str, int],
        examples: dict[str, str],
    ) -> bool:
        """Write atomically; False (with a warning) where the folder is not writable."""
        dirs = sorted({str(r.path.parent) for r in records})
        data = {
            "image_dirs": {d: Path(d).stat().st_mtime_ns for d in dirs},
            "records": [[r.image_id, str(r.path), r.split, list(r.captions)] for r in records],
            "tokens": tokens,
            "skipped": skipped,
            "skipped_examples": examples,
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(data, out)
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning(
                "Cannot write the record cache %s (%s); set paths.cache_dir to a writable folder",
                self.path,
                error,
            )
            return False
        for old in self.path.parent.glob("records-*.json"):
            if old != self.path:
                old.unlink(missing_ok=True)  # one cache per folder: stale keys only take space
        return True

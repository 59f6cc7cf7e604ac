"""The preprocessing cache: parsed, checked and tokenised records, so a second start is instant.

The cache is one JSON file (nothing to unpickle) keyed by the reader settings, the
tokenizer and the size and modification time of every caption/annotation file in the
dataset folder. It also records the modification times of the image folders, since the
records it holds passed the image checks: adding, removing or renaming images invalidates it.

Cache writes go through ``captioning.files.write_atomic`` (a temporary file renamed over the
cache) under a file lock, so concurrent runs never read a half-written cache; :func:`locked`
and :func:`remove_stale_temporaries` serve the feature cache and the Shapes generator too.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from captioning.data.formats import ImageRecord
from captioning.files import DiskFullError, write_atomic

log = logging.getLogger(__name__)

# 2: images fully decoded at the check; empty split cells are bad rows. 3: records carry their
# COCO id (data.region_key)
CACHE_VERSION = 3
SOURCE_SUFFIXES = (".txt", ".csv", ".json", ".jsonl", ".token")
# mkstemp/mkdtemp's random part: how our own temporary files and folders are told apart from a
# user's files that happen to share a prefix
TEMP_TOKEN = r"[a-z0-9_]{8}"


# one lock object per file: FileLock counts re-entries of the same object, so a process that
# holds a lock and asks for it again goes on instead of waiting for itself
_LOCKS: dict[str, FileLock] = {}


@contextmanager
def locked(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an inter-process lock on ``lock_file``; says so (INFO) when another process has it."""
    lock = _LOCKS.setdefault(os.path.abspath(lock_file), FileLock(lock_file))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("Waiting for another process %s (lock %s)", what, lock_file)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def is_no_space(error: OSError) -> bool:
    """A full disk or an exhausted quota: both mean nothing more can be written there."""
    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def no_space_message(path: Path) -> str:
    return DiskFullError(path).strerror


def remove_stale_temporaries(folder: Path, prefix: str = "") -> None:
    """Remove the temporary files of ``write_atomic`` that a killed run left in ``folder``.

    Only call it holding the lock every writer of the folder holds: then no live writer has one.
    """
    prefix = "." + prefix  # write_atomic's temporary files are hidden: .<name>.<token>.tmp
    ours = re.compile(re.escape(prefix) + r".*\." + TEMP_TOKEN + r"\.tmp")
    for path in folder.glob(f"{prefix}*.tmp"):
        if ours.fullmatch(path.name) and path.is_file():
            log.info("Removing %s, left by an interrupted run", path)
            path.unlink(missing_ok=True)


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
                ImageRecord(image_id, Path(path), tuple(captions), split, coco_id)
                for image_id, path, split, captions, coco_id in data["records"]
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
        """Write atomically; False (with a warning) where the folder is not writable or full.

        A full disk warns and carries on: the records are in memory already and the cache only
        saves the next start's parsing, so it is no reason to stop a run.
        """
        # an absent folder holds no checked images (region features need none)
        dirs = sorted({str(r.path.parent) for r in records if r.path.parent.is_dir()})
        data = {
            "image_dirs": {d: Path(d).stat().st_mtime_ns for d in dirs},
            "records": [
                [r.image_id, str(r.path), r.split, list(r.captions), r.coco_id] for r in records
            ],
            "tokens": tokens,
            "skipped": skipped,
            "skipped_examples": examples,
        }
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with locked(folder / "records.lock", f"writing the record cache in {folder}"):
                remove_stale_temporaries(folder, "records-")
                text = json.dumps(data).encode("utf-8")
                write_atomic(self.path, lambda out: out.write(text))
                for old in folder.glob("records-*.json"):
                    if old != self.path:
                        old.unlink(missing_ok=True)  # one cache per folder: stale keys take space
        except OSError as error:
            if is_no_space(error):
                log.warning(
                    "%s; continuing without the record cache (free space, or set "
                    "paths.cache_dir to a disk with room)",
                    no_space_message(self.path),
                )
            else:
                log.warning(
                    "Cannot write the record cache %s (%s); set paths.cache_dir to a writable "
                    "folder",
                    self.path,
                    error,
                )
            return False
        return True

"""The output folder: one ``<key>.npz`` per image and ``extract.json``, written safely.

``extract.json`` is written first and names the settings; a later run with the same settings
skips the images already written (each file is replaced atomically, so one that exists is
whole), and a run with other settings stops, naming the keys that differ, unless
``extract.overwrite=true``. The command writes only into a new or empty folder or one holding
its own output: a folder with anything else in it is refused and left as it was.
"""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from captioning.data.cache import TEMP_TOKEN, locked, remove_stale_temporaries
from captioning.data.formats import DataError
from captioning.extract.extractor import Regions
from captioning.extract.settings import WRITER, differences
from captioning.files import write_atomic, write_json

log = logging.getLogger(__name__)

SETTINGS_FILE = "extract.json"
ARRAYS = ("feat", "boxes", "image_w", "image_h", "scores")  # every file has these (and labels)
OURS = re.compile(
    r"[^.].*\.npz|\.(" + re.escape(SETTINGS_FILE) + r"|.+\.npz)\." + TEMP_TOKEN + r"\.tmp"
)


class ExtractFolderError(DataError):
    """The output folder cannot take this extraction; nothing in it was changed."""


def region_key(record: Any, mode: str = "auto") -> str:
    """The name of an image's region file: its COCO id (``mode=auto`` where the record has one,
    ``coco_id``), else the stem of its file (``stem``). ``record`` has a ``path`` (an
    :class:`~captioning.data.formats.ImageRecord`) or is a path."""
    path = Path(getattr(record, "path", record))
    coco_id = getattr(record, "coco_id", None)
    if mode == "coco_id":
        if coco_id is None:
            raise DataError(
                f"{path}: extract.key=coco_id, but its record carries no COCO id (COCO layouts "
                "do); extract.key=stem names files by the image's file name"
            )
        return str(coco_id)
    if mode == "auto" and coco_id is not None:
        return str(coco_id)
    return path.stem


def _read_settings(path: Path) -> dict[str, Any] | None:
    """``extract.json`` where this command wrote it, else None."""
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return settings if isinstance(settings, dict) and settings.get("writer") == WRITER else None


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


class RegionFolder:
    """``out=DIR``: checks it may be written, then names, checks and writes its files.

    Args:
        root: the folder.
        overwrite: replace region files of other settings (``extract.overwrite``).
    """

    def __init__(self, root: str | Path, overwrite: bool = False) -> None:
        self.root = Path(root).expanduser()
        self.overwrite = overwrite

    @property
    def settings_file(self) -> Path:
        return self.root / SETTINGS_FILE

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock (beside it: nothing foreign goes inside); two runs into one
        folder take turns, and the second skips what the first wrote."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.root.parent / f".{self.root.name}.lock", f"extracting into {self.root}"):
            yield

    def check_writable(self) -> None:
        """Raise unless the folder is absent, empty, or holds only this command's output."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise ExtractFolderError(f"out={self.root} is a file; set out to a folder")
        names = sorted(p.name for p in self.root.iterdir())
        if not names:
            return
        if _read_settings(self.settings_file) is None:
            raise ExtractFolderError(
                f"out={self.root} is not empty and was not written by captioning.extract (no "
                f"{SETTINGS_FILE} of its own in it), so nothing in it was changed; set out to a "
                "new or empty folder"
            )
        foreign = [
            n for n in names
            if n != SETTINGS_FILE and not (OURS.fullmatch(n) and (self.root / n).is_file())
        ]  # fmt: skip
        if foreign:
            raise ExtractFolderError(
                f"out={self.root} holds files captioning.extract did not write ({_shown(foreign)}),"
                " so nothing in it was changed: move them elsewhere, or set out to a new folder"
            )

    def prepare(self, settings: dict[str, Any]) -> None:
        """Make the folder take ``settings``: a fresh one gets ``extract.json`` first; one of the
        same settings is resumed; one of other settings is refused, or emptied with
        ``overwrite``. Call it holding :meth:`locked`."""
        self.check_writable()
        self.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.root)
        settings = json.loads(json.dumps(settings))  # as it reads back: lists, not tuples
        recorded = _read_settings(self.settings_file)
        if recorded == settings:
            log.info("Resuming the extraction into %s", self.root)
            return
        if recorded is not None:
            changed = differences(recorded, settings)
            if not self.overwrite:
                raise ExtractFolderError(
                    f"out={self.root} holds regions extracted with other settings ("
                    + "; ".join(changed)
                    + "), so nothing in it was changed: set out to a new folder, or "
                    "extract.overwrite=true to replace them"
                )
            files = sorted(self.root.glob("*.npz"))
            log.warning(
                "Replacing the %d region files in %s (extract.overwrite=true; %s)",
                len(files), self.root, "; ".join(changed),
            )  # fmt: skip
            for file in files:  # before the new settings: a crash leaves files of the old ones
                file.unlink()
        write_json(self.settings_file, settings)

    def complete(self, key: str) -> bool:
        """Whether ``key``'s file is there, whole, with every array (files are replaced
        atomically: only a file changed by hand can fail this)."""
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            with zipfile.ZipFile(path) as archive:
                names = {Path(n).stem for n in archive.namelist()}
        except (OSError, zipfile.BadZipFile):
            return False
        return set(ARRAYS) <= names

    def write(self, key: str, regions: Regions) -> Path:
        """Write ``key``'s file atomically."""
        buffer = io.BytesIO()
        np.savez(buffer, **regions.arrays())
        return write_atomic(self.path(key), lambda out: out.write(buffer.getvalue()))

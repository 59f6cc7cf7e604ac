"""Shapes: the built-in synthetic captioning dataset, written into a data folder.

The scenes (:mod:`captioning.data.scenes`) are written in the Flickr8k Kaggle layout
(``Images/*.png``, ``captions.txt``, split lists) so that the real Flickr8k reader loads them,
plus ``boxes.json`` with every object's box, colour and shape for the object-F1 and grounding
metrics.

The generator only ever writes into an empty folder or one holding its own earlier output
(``meta.json`` with its marker); it writes into a staging folder beside ``root`` and swaps it in
under a file lock, so concurrent runs wait for one generation and never see half a set.
:class:`ShapesGenerator` is the ``data.generator`` the DataModule calls.
"""

from __future__ import annotations

import csv
import ctypes
import errno
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from captioning.data.cache import TEMP_TOKEN, is_no_space, locked
from captioning.data.formats import DataError
from captioning.data.scenes import (  # noqa: F401  (the names tests and users import from here)
    COLOURS,
    FORMAT_VERSION,
    NUMBER_WORDS,
    SHAPES,
    ShapeObject,
    ShapesConfig,
    captions_for,
    render,
    sample_scene,
)
from captioning.files import DiskFullError

log = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
GENERATOR = "captioning.data.shapes"  # meta.json's marker: this folder is the generator's output
# what the generator writes into its folder, and the caches the package keeps there
GENERATED = {"Images", "captions.txt", "boxes.json", "meta.json", ".cache", *SPLIT_FILES.values()}
IMAGE_NAME = re.compile(r"(train|val|test)_\d{5}\.png")


def lock_file(root: Path) -> Path:
    """The lock generation holds: beside ``root``, never inside a folder that may be a user's."""
    return root.parent / f".{root.name}.lock"


def _marker(root: Path) -> dict | None:
    """``root``'s meta.json where the generator wrote it, else None."""
    try:
        meta = json.loads((root / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    # sets generated before the marker key existed carry the fingerprint and the config
    if meta.get("generator") == GENERATOR or {"fingerprint", "config"} <= meta.keys():
        return meta
    return None


def _matches(root: Path, cfg: ShapesConfig) -> bool:
    meta = _marker(root)
    return meta is not None and meta.get("fingerprint") == cfg.fingerprint()


def _foreign(root: Path) -> list[str]:
    """What in the generator's folder it did not write itself."""
    names = [p.name for p in root.iterdir() if p.name not in GENERATED]
    if (root / "Images").is_dir():
        names += [
            f"Images/{p.name}"
            for p in (root / "Images").iterdir()
            if not IMAGE_NAME.fullmatch(p.name)
        ]
    return sorted(names)


def _check_replaceable(root: Path) -> None:
    """Raise unless ``root`` is absent, empty, or only the generator's own earlier output."""
    if not root.exists():
        return
    if not root.is_dir():
        raise DataError(f"data.root={root} is a file; set data.root to a folder for Shapes")
    if not any(root.iterdir()):
        return
    if _marker(root) is None:
        raise DataError(
            f"data.root={root} is not empty and was not written by the Shapes generator (no "
            "generator meta.json in it), so nothing in it was changed. To train on the files "
            f"there, use data=folder data.root={root} (images + captions.csv or captions.jsonl) "
            f"or data=flickr8k data.root={root} (a Flickr8k download); to generate Shapes, set "
            "data.root to a fresh or empty folder"
        )
    foreign = _foreign(root)
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise DataError(
            f"data.root={root} holds a Shapes set with other data.generator settings and files "
            f"the generator did not write ({shown}), so nothing in it was changed: move those "
            "files elsewhere, or set data.root to a fresh folder for these settings"
        )


def _remove_stale(root: Path) -> None:
    """Remove staging folders a killed generation left; only call it holding ``lock_file``."""
    # ".<name>-<token>": the staging name of versions before the lock
    ours = re.compile(re.escape(f".{root.name}") + r"(\.staging-|\.old-|-)" + TEMP_TOKEN)
    for path in root.parent.iterdir():
        if not ours.fullmatch(path.name) or path.is_symlink() or not path.is_dir():
            continue
        # a generation makes Images/ first thing: a user's folder that happens to match the
        # name, or holds anything else, stays
        if not any(path.iterdir()) or ((path / "Images").is_dir() and not _foreign(path)):
            log.info("Removing %s, left by an interrupted Shapes generation", path)
            shutil.rmtree(path)


def _write(staging: Path, cfg: ShapesConfig) -> None:
    images = staging / "Images"
    images.mkdir()
    rng = np.random.default_rng(cfg.seed)
    counts = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["image", "caption"])
    boxes: dict[str, list[dict]] = {}
    for split, count in counts.items():
        names = []
        for i in range(count):
            name = f"{split}_{i:05d}.png"
            objects = sample_scene(rng, cfg)
            render(objects, rng, cfg).save(images / name, optimize=False)
            writer.writerows((name, c) for c in captions_for(objects, cfg.counting))
            boxes[name] = [
                {"box": list(o.box), "shape": o.shape, "colour": o.colour, "size": o.size,
                 "column": o.column, "row": o.row}
                for o in objects
            ]  # fmt: skip
            names.append(name)
        (staging / SPLIT_FILES[split]).write_text("\n".join(names) + "\n")
    (staging / "captions.txt").write_text(rows.getvalue())
    (staging / "boxes.json").write_text(json.dumps(boxes, indent=None, sort_keys=True))
    # written last: a folder holding meta.json holds a complete set
    meta = {"generator": GENERATOR, "fingerprint": cfg.fingerprint(), "config": asdict(cfg)}
    (staging / "meta.json").write_text(json.dumps(meta, indent=2, default=list))


def _exchange(staging: Path, root: Path) -> bool:
    """Swap two folders in one step (Linux ``renameat2``); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc before 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(staging), at_fdcwd, os.fsencode(root), rename_exchange):
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # kernel or file system
            return False
        raise OSError(code, os.strerror(code), str(root))
    return True


def _generate_locked(root: Path, cfg: ShapesConfig) -> None:
    """Write a fresh set into ``root``, which is always either the old set or the new one."""
    _check_replaceable(root)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.staging-", dir=root.parent))
    aside = root.parent / f".{root.name}.old-{staging.name.rpartition('-')[2]}"
    try:
        _write(staging, cfg)
        if not (root.exists() and any(root.iterdir())):
            os.replace(staging, root)  # over an empty folder at most
        elif not _exchange(staging, root):  # exchanged: staging holds the earlier set
            # root is missing between these renames; every reader of ours waits on the lock
            root.rename(aside)
            os.replace(staging, root)
    except BaseException as error:
        if aside.exists() and not root.exists():
            aside.rename(root)
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and is_no_space(error):
            raise DiskFullError(root) from None
        raise
    # the generator's own earlier set, checked above, wherever it went
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)


@contextmanager
def shapes_ready(root: str | os.PathLike, cfg: ShapesConfig) -> Iterator[Path]:
    """Hold ``root``'s lock with a set of these settings in it, generating it if need be.

    Readers parse the set inside this block, so no other run replaces it under them.
    """
    root = Path(os.path.realpath(root))  # a symlinked data folder is replaced where it lives
    if _matches(root, cfg) and not os.access(root.parent, os.W_OK):
        yield root  # a read-only shared set: no lock can be made there, no run can replace it
        return
    root.parent.mkdir(parents=True, exist_ok=True)
    with locked(lock_file(root), f"generating Shapes into {root}"):
        _remove_stale(root)
        if not _matches(root, cfg):
            if _marker(root) is not None:
                log.info("Shapes settings changed: regenerating %s", root)
            total = cfg.num_train + cfg.num_val + cfg.num_test
            log.info("Generating %d Shapes images into %s (seed %d)", total, root, cfg.seed)
            _generate_locked(root, cfg)
        yield root


def generate(root: str | os.PathLike, cfg: ShapesConfig) -> Path:
    """Write a Shapes dataset into ``root`` (atomically: a half-written set never remains)."""
    path = Path(os.path.realpath(root))
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(lock_file(path), f"generating Shapes into {path}"):
        _remove_stale(path)
        _generate_locked(path, cfg)
    return Path(root)


def ensure_shapes(root: str | os.PathLike, cfg: ShapesConfig) -> Path:
    """Generate Shapes into ``root`` unless a set with the same settings is already there."""
    if not _matches(Path(root), cfg):  # the lock is only needed to write
        with shapes_ready(root, cfg):
            pass
    return Path(root)


class ShapesGenerator:
    """``data.generator``: writes Shapes into the DataModule's ``root`` on first use.

    The DataModule calls :meth:`prepare` in ``prepare_data`` and reads the set inside
    :meth:`ready`, so no other run replaces it while it is parsed. Any object with these two
    methods and ``image_size`` can generate data for the DataModule (see
    :class:`captioning.data.datamodule.DataGenerator`).

    Args:
        **settings: the :class:`~captioning.data.scenes.ShapesConfig` fields
            (``data.generator.*``).
    """

    def __init__(self, **settings: Any) -> None:
        self.config = ShapesConfig(**settings)

    @property
    def image_size(self) -> int:
        """Side of the generated images, which ``boxes.json`` coordinates refer to."""
        return self.config.image_size

    def prepare(self, root: str | os.PathLike) -> None:
        ensure_shapes(root, self.config)

    def ready(self, root: str | os.PathLike) -> AbstractContextManager[Path]:
        return shapes_ready(root, self.config)

    def __repr__(self) -> str:
        return f"ShapesGenerator({self.config})"

"""Precomputed region features (bottom-up attention): one reader per file layout.

``data.region_features`` names one of:

- a folder of one file per image: ``<key>.npz`` holding ``feat`` (N, D) (ruotianluo's
  ``cocobu_att``) or ``features`` (X-modaler), optionally ``boxes`` (N, 4) and the scalars
  ``image_w`` / ``image_h``; or ``<key>.npy`` holding the (N, D) features alone;
- one HDF5 file (``.h5`` / ``.hdf5``) with the datasets ``<key>_features`` (N, D) and,
  optionally, ``<key>_boxes`` (N, 4) (M²'s ``coco_detections.hdf5``).

Boxes are x1, y1, x2, y2 in image pixels. ``data.region_boxes`` is a folder of ``<key>.npy``
boxes (ruotianluo's ``cocobu_box``) for features stored without them; when it is set its
boxes are the ones served, whatever the feature files hold.

:meth:`RegionReader.shape` reads headers only (a ``.npy`` header, a zip member's ``.npy``
header, an HDF5 dataset's shape), so that every image can be checked at setup without reading
its values; :meth:`RegionReader.read` reads one image's arrays and checks their values.
Which images pass, under which key, is :mod:`captioning.data.region_index`'s.
"""

from __future__ import annotations

import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

from captioning.data.records import DataError

FEATURE_ARRAYS = ("feat", "features")  # ruotianluo's cocobu_att, X-modaler
BOX_ARRAY = "boxes"
SIZE_ARRAYS = ("image_w", "image_h")
FOLDER_SUFFIXES = (".npz", ".npy")  # an image with both is read from its .npz
HDF5_SUFFIXES = (".h5", ".hdf5")
NUMBERS = "fiu"  # numpy dtype kinds a feature or box array may have


class RegionError(DataError):
    """An image's region file that cannot be used; ``kind`` is its ``BadData`` category."""

    def __init__(self, where: str | Path, reason: str, kind: str = "bad region file") -> None:
        super().__init__(f"{where}: {reason}")
        self.where, self.reason, self.kind = str(where), reason, kind


@dataclass(frozen=True)
class RegionShape:
    """What the headers of one image's region arrays say."""

    regions: int  # N
    dim: int  # D
    boxes: bool  # boxes are stored (in the file, or in data.region_boxes)
    sized: bool  # image_w / image_h are stored


class Regions(NamedTuple):
    """One image's regions as read, values checked."""

    features: np.ndarray  # (N, D) float32
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in pixels; zeros where none are stored
    size: tuple[float, float] | None  # the stored image (width, height)


# NumPy parses a .npy header with ast.literal_eval, and CPython 3.11's AST constructor is not
# safe in threads ("SystemError: AST constructor recursion depth mismatch", seen in make test):
# the set-up check reads headers in threads, so the parse is serialised (it is microseconds;
# the reads around it stay parallel)
_HEADER_PARSE = threading.Lock()


def _npy_header(handle: IO[bytes], where: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, without reading the array."""
    try:
        version = np.lib.format.read_magic(handle)
        with _HEADER_PARSE:
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    except (ValueError, OSError, EOFError) as error:
        raise RegionError(where, f"not a .npy array ({error})", "unreadable region file") from None
    return shape, dtype


def _check_features(where: str | Path, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int]:
    if dtype.kind not in NUMBERS:
        raise RegionError(where, f"features of dtype {dtype}, expected numbers")
    if len(shape) != 2:
        raise RegionError(where, f"features of shape {tuple(shape)}, expected (N, D)")
    if shape[0] == 0 or shape[1] == 0:
        raise RegionError(where, f"features of shape {tuple(shape)}: no regions")
    return int(shape[0]), int(shape[1])


def _check_boxes(where: str | Path, shape: tuple[int, ...], dtype: np.dtype, regions: int) -> None:
    if dtype.kind not in NUMBERS:
        raise RegionError(where, f"boxes of dtype {dtype}, expected numbers")
    if len(shape) != 2 or shape[1] != 4:
        raise RegionError(where, f"boxes of shape {tuple(shape)}, expected (N, 4): x1, y1, x2, y2")
    if shape[0] != regions:
        raise RegionError(where, f"{shape[0]} boxes for {regions} regions")


def _finite(where: str | Path, what: str, array: np.ndarray) -> None:
    # a sum is finite exactly when every value is (float16/32 values cannot overflow a float64
    # sum), and it allocates no mask of the array's size
    if not np.isfinite(np.sum(array, dtype=np.float64)):
        raise RegionError(where, f"{what} hold NaN or infinite values")


def _size(where: str | Path, width: np.ndarray, height: np.ndarray) -> tuple[float, float]:
    if any(side.size != 1 or side.dtype.kind not in NUMBERS for side in (width, height)):
        shapes = f"{width.dtype} {width.shape}, {height.dtype} {height.shape}"
        raise RegionError(where, f"image_w, image_h of {shapes}: expected two numbers")
    size = float(width.reshape(-1)[0]), float(height.reshape(-1)[0])
    if not all(np.isfinite(side) and side > 0 for side in size):
        raise RegionError(where, f"image_w, image_h = {size}, expected positive sizes")
    return size


class RegionReader:
    """The regions of one layout, by image key; :meth:`open` picks the layout of a path.

    Args:
        path: the feature folder or HDF5 file.
        boxes_dir: a folder of ``<key>.npy`` boxes that replaces the stored ones.
    """

    def __init__(self, path: Path, boxes_dir: Path | None = None) -> None:
        self.path = path
        self.boxes_dir = boxes_dir

    @staticmethod
    def open(path: str | Path, boxes_dir: str | Path | None = None) -> RegionReader:
        """The reader of ``path``'s layout; a path of no layout is a DataError naming the key
        (``data.region_features``, ``data.region_boxes``)."""
        path = Path(path)
        boxes = Path(boxes_dir) if boxes_dir is not None else None
        if boxes is not None and not boxes.is_dir():
            raise DataError(f"data.region_boxes: {boxes} is not a directory")
        if path.is_dir():
            return FolderRegions(path, boxes)
        if path.is_file() and path.suffix.lower() in HDF5_SUFFIXES:
            return Hdf5Regions(path, boxes)
        if not path.exists():
            raise DataError(f"data.region_features: {path} not found")
        raise DataError(
            f"data.region_features: {path} is neither a folder of <key>.npz / <key>.npy files "
            "nor an .h5 / .hdf5 file"
        )

    def where(self, key: str) -> str:
        """The file (and, inside an HDF5 file, the dataset) that holds ``key``'s features."""
        raise NotImplementedError

    def shape(self, key: str) -> RegionShape:
        """``key``'s shapes from the headers; raises :class:`RegionError` naming the file."""
        regions, dim, boxes, sized = self._shape(key, stored_boxes=self.boxes_dir is None)
        if self.boxes_dir is not None:
            path = self._box_file(key)
            try:
                with path.open("rb") as handle:
                    shape, dtype = _npy_header(handle, path)
            except OSError as error:
                raise RegionError(path, f"unreadable ({error})", "unreadable region file") from None
            _check_boxes(path, shape, dtype, regions)
        return RegionShape(regions, dim, boxes or self.boxes_dir is not None, sized)

    def read(self, key: str) -> Regions:
        """``key``'s regions, their values checked; raises :class:`RegionError` naming the file."""
        features, boxes, size = self._read(key, stored_boxes=self.boxes_dir is None)
        where = self.where(key)
        regions, _ = _check_features(where, features.shape, features.dtype)
        if self.boxes_dir is not None:
            where = self._box_file(key)
            boxes = self._read_array(where)
        if boxes is None:
            boxes = np.zeros((regions, 4), dtype=np.float32)
        else:
            _check_boxes(where, boxes.shape, boxes.dtype, regions)
            _finite(where, "boxes", boxes)
        _finite(self.where(key), "features", features)
        return Regions(
            features.astype(np.float32, copy=False), boxes.astype(np.float32, copy=False), size
        )

    def close(self) -> None:
        """Release what is held open (before loader workers start)."""

    # what a layout implements

    def _shape(self, key: str, stored_boxes: bool) -> tuple[int, int, bool, bool]:
        """``(N, D, boxes stored, size stored)``; the stored boxes' header is checked when
        ``stored_boxes``."""
        raise NotImplementedError

    def _read(
        self, key: str, stored_boxes: bool
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float] | None]:
        """``(features, stored boxes or None, stored size or None)``."""
        raise NotImplementedError

    # the box folder

    def _box_file(self, key: str) -> Path:
        assert self.boxes_dir is not None
        path = self.boxes_dir / f"{key}.npy"
        if not path.is_file():
            raise RegionError(
                path, f"no boxes for image key {key!r} in data.region_boxes", "missing region file"
            )
        return path

    @staticmethod
    def _read_array(path: Path) -> np.ndarray:
        try:
            return np.array(np.load(path, mmap_mode="r"))  # a copy: the map is closed here
        except (ValueError, OSError, EOFError) as error:
            raise RegionError(path, f"unreadable ({error})", "unreadable region file") from None


class FolderRegions(RegionReader):
    """A folder of ``<key>.npz`` (``feat`` or ``features``, optional ``boxes``, ``image_w``,
    ``image_h``) and ``<key>.npy`` (features alone) files; listed once when opened."""

    def __init__(self, path: Path, boxes_dir: Path | None = None) -> None:
        super().__init__(path, boxes_dir)
        self.files: dict[str, Path] = {}
        with os.scandir(path) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix in FOLDER_SUFFIXES and (stem not in self.files or suffix == ".npz"):
                    self.files[stem] = Path(entry.path)

    def where(self, key: str) -> str:
        return str(self.files.get(key, self.path / f"{key}.npz"))

    def _file(self, key: str) -> Path:
        if key not in self.files:
            raise RegionError(
                self.path / f"{key}.npz",
                f"not found (nor {key}.npy): no regions for image key {key!r}",
                "missing region file",
            )
        return self.files[key]

    def _shape(self, key: str, stored_boxes: bool) -> tuple[int, int, bool, bool]:
        path = self._file(key)
        if path.suffix == ".npy":
            try:
                with path.open("rb") as handle:
                    shape, dtype = _npy_header(handle, path)
            except OSError as error:
                raise RegionError(path, f"unreadable ({error})", "unreadable region file") from None
            return (*_check_features(path, shape, dtype), False, False)
        headers = {}
        try:
            with zipfile.ZipFile(path) as archive:
                names = sorted(member.removesuffix(".npy") for member in archive.namelist())
                for name in names:  # the image size's values are checked when read
                    if name in (*FEATURE_ARRAYS, BOX_ARRAY):
                        with archive.open(f"{name}.npy") as handle:
                            headers[name] = _npy_header(handle, path)
        except (zipfile.BadZipFile, KeyError, OSError, EOFError) as error:
            raise RegionError(
                path, f"not a readable .npz archive ({error})", "unreadable region file"
            ) from None
        name = next((n for n in FEATURE_ARRAYS if n in headers), None)
        if name is None:
            held = ", ".join(names) or "nothing"
            raise RegionError(path, f"no {' or '.join(FEATURE_ARRAYS)} array (it holds {held})")
        regions, dim = _check_features(path, *headers[name])
        if stored_boxes and BOX_ARRAY in headers:
            _check_boxes(path, *headers[BOX_ARRAY], regions)
        return regions, dim, BOX_ARRAY in headers, all(n in names for n in SIZE_ARRAYS)

    def _read(
        self, key: str, stored_boxes: bool
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float] | None]:
        path = self._file(key)
        try:
            if path.suffix == ".npy":  # one copy, converted, out of the map
                return np.array(np.load(path, mmap_mode="r"), dtype=np.float32), None, None
            with np.load(path) as archive:  # reads only the members asked for
                name = next((n for n in FEATURE_ARRAYS if n in archive.files), None)
                if name is None:
                    raise RegionError(path, f"no {' or '.join(FEATURE_ARRAYS)} array")
                features = archive[name]
                boxes = archive[BOX_ARRAY] if stored_boxes and BOX_ARRAY in archive.files else None
                size = None
                if all(n in archive.files for n in SIZE_ARRAYS):
                    size = _size(path, *(archive[n] for n in SIZE_ARRAYS))
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise RegionError(path, f"unreadable ({error})", "unreadable region file") from None
        return features, boxes, size


class Hdf5Regions(RegionReader):
    """One HDF5 file with ``<key>_features`` and optional ``<key>_boxes`` datasets.

    The file is opened on first use in each process and kept open there: an h5py handle must
    not cross a fork, so a loader worker opens its own (and a pickled reader carries none).
    """

    def __init__(self, path: Path, boxes_dir: Path | None = None) -> None:
        super().__init__(path, boxes_dir)
        self._handle: Any = None
        self._pid: int | None = None
        self._file()  # an unreadable file fails here, by name

    def _file(self) -> Any:
        if self._handle is None or self._pid != os.getpid():
            import h5py  # only HDF5 users pay for its import

            try:
                self._handle = h5py.File(self.path, "r")
            except OSError as error:
                raise DataError(
                    f"{self.path}: cannot open it as HDF5 (data.region_features; {error})"
                ) from None
            self._pid = os.getpid()
        return self._handle

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = self._pid = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": None}

    def where(self, key: str) -> str:
        return f"{self.path}: {key}_features"

    def _dataset(self, key: str, suffix: str, required: bool = True) -> Any:
        name = f"{key}_{suffix}"
        found = self._file().get(name)
        if found is None and required:
            raise RegionError(
                self.path,
                f"no dataset {name}: no regions for image key {key!r}",
                "missing region file",
            )
        if found is not None and not hasattr(found, "shape"):
            raise RegionError(f"{self.path}: {name}", "a group, expected a dataset")
        return found

    def _shape(self, key: str, stored_boxes: bool) -> tuple[int, int, bool, bool]:
        features = self._dataset(key, "features")
        regions, dim = _check_features(self.where(key), features.shape, features.dtype)
        boxes = self._dataset(key, "boxes", required=False)
        if stored_boxes and boxes is not None:
            _check_boxes(f"{self.path}: {key}_boxes", boxes.shape, boxes.dtype, regions)
        return regions, dim, boxes is not None, False

    def _read(
        self, key: str, stored_boxes: bool
    ) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float] | None]:
        try:
            features = self._dataset(key, "features")[()]
            boxes = self._dataset(key, "boxes", required=False) if stored_boxes else None
            return features, (boxes[()] if boxes is not None else None), None
        except OSError as error:
            raise RegionError(
                self.where(key), f"unreadable ({error})", "unreadable region file"
            ) from None

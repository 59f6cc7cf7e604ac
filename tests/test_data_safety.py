"""Never lose a user's files: the generator's folder rules, locks between runs, full disks."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock, Timeout
from PIL import Image
from torch import nn

from captioning.data import features as features_module
from captioning.data import shapes as shapes_module
from captioning.data.cache import RecordCache
from captioning.data.datamodule import CaptionDataModule
from captioning.data.features import FeatureCache, FeatureCacheError, extract
from captioning.data.formats import DataError, ImageRecord
from captioning.data.layouts import read_dataset
from captioning.data.shapes import (
    ShapesConfig,
    ShapesGenerator,
    ensure_shapes,
    generate,
    lock_file,
)
from tests.helpers import compose_train, tiny_shapes_overrides

TINY = ShapesConfig(num_train=20, num_val=5, num_test=5)
OTHER = ShapesConfig(num_train=25, num_val=5, num_test=5)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) -> its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _user_folder(root: Path) -> dict[str, str]:
    (root / "holiday").mkdir(parents=True)
    (root / "beach.jpg").write_bytes(os.urandom(2048))
    (root / "holiday" / "dog.png").write_bytes(os.urandom(1024))
    (root / "captions.csv").write_text("image,caption\nbeach.jpg,a beach at dusk\n")
    return _snapshot(root)


def _leftovers(parent: Path, name: str) -> list[str]:
    """Staging or set-aside folders of ``name`` left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}") and p.is_dir())


def _complete(root: Path, cfg: ShapesConfig) -> None:
    """``root`` holds every file of the set ``cfg`` describes."""
    meta = json.loads((root / "meta.json").read_text())
    assert meta["fingerprint"] == cfg.fingerprint()
    for split, count in (("train", cfg.num_train), ("val", cfg.num_val), ("test", cfg.num_test)):
        names = (root / shapes_module.SPLIT_FILES[split]).read_text().split()
        assert len(names) == count
        assert all((root / "Images" / n).is_file() for n in names)
    total = cfg.num_train + cfg.num_val + cfg.num_test
    assert len(list((root / "Images").iterdir())) == total
    assert len((root / "captions.txt").read_text().splitlines()) == 1 + 5 * total


# ---------------------------------------------------------------------- item 1: a user's folder


@pytest.mark.parametrize("write", [ensure_shapes, generate])
def test_generator_leaves_a_folder_of_user_files_alone(tmp_path: Path, write) -> None:
    root = tmp_path / "photos"
    before = _user_folder(root)
    with pytest.raises(DataError) as caught:
        write(root, TINY)
    message = str(caught.value)
    assert f"data.root={root}" in message
    assert "data=folder" in message and "data=flickr8k" in message
    assert "fresh or empty folder" in message
    assert _snapshot(root) == before  # all there, byte for byte, nothing added
    assert _leftovers(tmp_path, "photos") == []


def test_train_refuses_a_data_root_of_user_files(tmp_path: Path) -> None:
    from captioning.train import train

    root = tmp_path / "my_photos"
    before = _user_folder(root)
    overrides = [f"data.root={root}", *tiny_shapes_overrides(), "trainer.max_epochs=1"]
    with pytest.raises(DataError, match=r"my_photos is not empty .*data=folder"):
        train(compose_train(tmp_path, [*overrides, "samples=0"]))
    assert _snapshot(root) == before


def test_changed_settings_refuse_a_generated_folder_that_holds_user_files(tmp_path: Path) -> None:
    root = generate(tmp_path / "shapes", TINY)
    (root / "notes.txt").write_text("results of my run")
    (root / "Images" / "holiday.jpg").write_bytes(b"\xff\xd8 not a shape")
    before = _snapshot(root)
    with pytest.raises(DataError, match=r"Images/holiday.jpg, notes.txt.*data.root to a fresh"):
        ensure_shapes(root, OTHER)
    assert _snapshot(root) == before
    assert _leftovers(tmp_path, "shapes") == []


def test_changed_settings_replace_the_generators_own_set(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "shapes"
    root.mkdir()  # an empty folder is the generator's to fill
    ensure_shapes(root, TINY)
    _complete(root, TINY)
    (root / ".cache").mkdir()
    (root / ".cache" / "records-0123456789abcdef.json").write_text("{}")  # its caches go too
    ensure_shapes(root, OTHER)
    _complete(root, OTHER)
    assert not (root / ".cache").exists()
    # a set written before meta.json carried the generator's name is still the generator's
    meta = json.loads((root / "meta.json").read_text())
    del meta["generator"]
    (root / "meta.json").write_text(json.dumps(meta))
    ensure_shapes(root, TINY)
    _complete(root, TINY)
    monkeypatch.setattr(shapes_module, "_exchange", lambda staging, root: False)  # not Linux
    ensure_shapes(root, OTHER)
    _complete(root, OTHER)
    assert _leftovers(tmp_path, "shapes") == []
    assert not list(root.rglob("*.lock"))  # the lock lives beside the folder, not inside


def test_interrupted_generation_keeps_the_old_set_and_no_staging(tmp_path: Path, monkeypatch):
    root = generate(tmp_path / "shapes", TINY)
    before = _snapshot(root)
    rendered = []
    original = shapes_module.render

    def interrupted(*args, **kwargs):
        rendered.append(1)
        if len(rendered) == 10:
            raise KeyboardInterrupt  # Ctrl-C halfway through the new set
        return original(*args, **kwargs)

    monkeypatch.setattr(shapes_module, "render", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(root, OTHER)
    assert _snapshot(root) == before
    rendered.clear()
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes(tmp_path / "fresh", TINY)
    assert not (tmp_path / "fresh").exists()
    assert _leftovers(tmp_path, "shapes") == [] and _leftovers(tmp_path, "fresh") == []


# ---------------------------------------------------------------------- item 5: runs at once

# Loads the generator without the package __init__ (torch and Lightning take seconds to import,
# which would let one process finish before the other starts), renders slowly so the two
# generations overlap, and starts when the test says go.
_GENERATE = """
import logging, sys, time, types
from pathlib import Path
import captioning
package = types.ModuleType("captioning.data")
package.__path__ = [captioning.__path__[0] + "/data"]
sys.modules["captioning.data"] = package
from captioning.data import shapes
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
render = shapes.render
shapes.render = lambda *args: time.sleep(0.02) or render(*args)
root, go, seed = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
Path(sys.argv[4]).touch()
while not go.exists():
    time.sleep(0.002)
shapes.ensure_shapes(root, shapes.ShapesConfig(num_train=20, num_val=5, num_test=5, seed=seed))
"""


def _generate_at_once(tmp_path: Path, root: Path, seeds: list[int]) -> list[str]:
    """Run one process generating TINY with each seed, all at the same moment; their logs."""
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(len(seeds))]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _GENERATE, str(root), str(go), str(n), str(r)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for n, r in zip(seeds, ready, strict=True)
    ]
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    logs = [p.communicate(timeout=120)[1] for p in processes]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log
    return logs


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_two_processes_generate_one_set_once(tmp_path: Path) -> None:
    root = tmp_path / "data" / "shapes"
    logs = _generate_at_once(tmp_path, root, [0, 0])
    assert sum(log.count("Generating 30 Shapes images") for log in logs) == 1, logs
    assert sum("Waiting for another process generating Shapes" in log for log in logs) == 1
    _complete(root, TINY)
    assert _leftovers(root.parent, "shapes") == []


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_two_processes_with_other_settings_leave_one_complete_set(tmp_path: Path) -> None:
    root = tmp_path / "data" / "shapes"
    missing, stop = [], threading.Event()

    def watch() -> None:  # once a set is there, one must always be there
        seen = False
        while not stop.is_set():
            present = (root / "meta.json").is_file()
            seen = seen or present
            if seen and not present:
                missing.append(time.monotonic())
            time.sleep(0.0002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        _generate_at_once(tmp_path, root, [0, 1])  # two sets of the same size finish together
    finally:
        stop.set()
        watcher.join()
    assert missing == []
    fingerprint = json.loads((root / "meta.json").read_text())["fingerprint"]
    _complete(root, TINY if fingerprint == TINY.fingerprint() else replace(TINY, seed=1))
    assert _leftovers(root.parent, "shapes") == []


def test_records_are_read_while_the_generated_set_is_locked(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "shapes"
    held = []

    def read(self, errors):
        with pytest.raises(Timeout):  # another process could not replace the set now
            FileLock(lock_file(Path(os.path.realpath(root)))).acquire(timeout=0)
        held.append(True)
        return original(self, errors)

    original = CaptionDataModule._read
    monkeypatch.setattr(CaptionDataModule, "_read", read)
    data = CaptionDataModule(
        root=str(root),
        reader=partial(read_dataset),
        generator=ShapesGenerator(num_train=20, num_val=5, num_test=5),
        layout="kaggle",
        image_size=64,
        check_images=False,
        cache=False,
    )
    data.setup()
    assert held == [True] and len(data.records["train"]) == 20


def test_a_read_only_generated_set_is_read_without_a_lock(tmp_path: Path, monkeypatch) -> None:
    root = generate(tmp_path / "shared" / "shapes", TINY)
    parent = str(root.parent)
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p) != parent and real(p, mode))
    monkeypatch.setattr(shapes_module, "locked", lambda *a: pytest.fail("a lock on read-only"))
    with shapes_module.shapes_ready(root, TINY) as ready:
        _complete(ready, TINY)


def test_record_cache_is_written_under_its_lock(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "images").mkdir()
    cache = RecordCache(tmp_path, str(tmp_path / "cache"), {"a": 1})
    record = ImageRecord("a", tmp_path / "images" / "a.png", ("a cap",), "train")
    replace, held = os.replace, []

    def locked_replace(source, target) -> None:
        with pytest.raises(Timeout):
            FileLock(tmp_path / "cache" / "records.lock").acquire(timeout=0)
        held.append(Path(target).name)
        replace(source, target)

    monkeypatch.setattr(os, "replace", locked_replace)
    assert cache.save([record], [[["a", "cap"]]], {}, {})
    assert held == [cache.path.name] and cache.load() is not None


class _Frozen(nn.Module):
    """A tiny frozen encoder: 8x8 patches of a 64 px image -> 64 regions of 32 values."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 32, kernel_size=8, stride=8).requires_grad_(False)
        self.delay = delay

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.conv(images).flatten(2).transpose(1, 2)  # (B, 64, 32)


def test_two_runs_extract_the_feature_cache_once(shapes_dir: Path, tmp_path: Path, caplog):
    paths = {"train": sorted((shapes_dir / "Images").glob("train_*"))[:24]}
    caches = [FeatureCache(tmp_path, _Frozen(delay=0.05), {}, 64, paths) for _ in range(2)]
    stale = caches[0].folder / ".train.done.abcd1234.tmp"  # a killed run's marker write
    stale.parent.mkdir()
    stale.write_text("1")
    caplog.set_level(logging.INFO, logger="captioning.data.features")
    caplog.set_level(logging.INFO, logger="captioning.data.cache")
    threads = [threading.Thread(target=c.prepare, args=(torch.device("cpu"), 8)) for c in caches]
    for thread in threads:  # threads hold separate lock handles, as two processes would
        thread.start()
    for thread in threads:
        thread.join()
    assert caplog.text.count("Region features cached in") == 1, caplog.text
    assert "Waiting for another process extracting region features" in caplog.text
    assert not stale.exists() and caches[1].complete()
    reference = tmp_path / "reference.npy"
    extract(_Frozen(), paths["train"], 64, reference, torch.device("cpu"), batch_size=8)
    np.testing.assert_array_equal(np.load(caches[0].path("train")), np.load(reference))


# ---------------------------------------------------------------------- item 9: full disks


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_writing_the_record_cache(tmp_path: Path, monkeypatch, caplog) -> None:
    root = generate(tmp_path / "shapes", TINY)
    cache_dir = tmp_path / "cache"
    stale = cache_dir / ".records-0123456789abcdef.json.k3j2x9a_.tmp"  # from a killed run
    users = [cache_dir / ".records-notes.tmp", cache_dir / "records-a.json.k3j2x9a_.tmp"]
    cache_dir.mkdir()
    for path in (stale, *users):
        path.write_text("partial")
    module = partial(
        CaptionDataModule,
        root=str(root),
        reader=partial(read_dataset),
        layout="kaggle",
        image_size=64,
        check_images=False,
        cache_dir=str(cache_dir),
    )
    module(max_caption_len=40).setup()  # a good cache for other settings
    (good,) = cache_dir.glob("records-*.json")
    good_bytes = good.read_bytes()
    assert not stale.exists() and all(p.read_text() == "partial" for p in users)

    # the folder has no room for the new entry (rename(2) says ENOSPC), the temporary file is out
    monkeypatch.setattr(os, "replace", _no_space)
    data = module(max_caption_len=30)
    data.setup()  # the records are in memory: the run goes on without a cache
    assert len(data.records["train"]) == 20
    path = RecordCache(root, str(cache_dir), data._cache_settings()).path
    assert f"no space left on device writing {path}" in caplog.text
    assert not path.exists() and good.read_bytes() == good_bytes
    assert sorted(p for p in cache_dir.iterdir() if p.suffix == ".tmp") == sorted(users)


def _images(shapes_dir: Path, count: int = 12) -> list[Path]:
    return sorted((shapes_dir / "Images").glob("train_*"))[:count]


def test_full_disk_while_writing_the_feature_cache(shapes_dir: Path, tmp_path: Path, monkeypatch):
    paths = _images(shapes_dir)
    good = tmp_path / "good.npy"
    extract(_Frozen(), paths, 64, good, torch.device("cpu"), batch_size=8)
    before = _snapshot(tmp_path)
    monkeypatch.setattr(os, "posix_fallocate", _no_space)
    out = tmp_path / "new.npy"
    with pytest.raises(FeatureCacheError, match=rf"no space left on device writing {out} \("):
        extract(_Frozen(), paths, 64, out, torch.device("cpu"), batch_size=8)
    assert _snapshot(tmp_path) == before  # nothing new, the good cache as it was
    assert issubclass(FeatureCacheError, DataError)


def test_full_disk_while_writing_the_done_marker(shapes_dir: Path, tmp_path: Path, monkeypatch):
    good = tmp_path / "good.npy"
    extract(_Frozen(), _images(shapes_dir), 64, good, torch.device("cpu"), batch_size=8)
    before = _snapshot(tmp_path)
    real = features_module.write_atomic

    def full(out):
        out.write(b"8")
        out.flush()
        _no_space()

    monkeypatch.setattr(features_module, "write_atomic", lambda path, write: real(path, full))
    out = tmp_path / "new.npy"
    with pytest.raises(FeatureCacheError, match=r"no space left on device writing .*new.done"):
        extract(_Frozen(), _images(shapes_dir), 64, out, torch.device("cpu"), batch_size=8)
    assert _snapshot(tmp_path) == before  # no temporary marker, no features without a marker


def test_full_disk_without_fallocate_checks_the_free_space(
    shapes_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    def unsupported(*args):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    real = features_module.shutil.disk_usage
    monkeypatch.setattr(features_module.shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    out = tmp_path / "new.npy"
    with pytest.raises(FeatureCacheError, match=rf"no space left on device writing {out} \("):
        extract(_Frozen(), _images(shapes_dir), 64, out, torch.device("cpu"), batch_size=8)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("marker", ["", "1\x00", "twelve"])
def test_an_empty_or_torn_done_marker_counts_as_absent(
    shapes_dir: Path, tmp_path: Path, marker: str
) -> None:
    paths = {"train": _images(shapes_dir)}
    cache = FeatureCache(tmp_path, _Frozen(), {}, 64, paths)
    cache.prepare(torch.device("cpu"), batch_size=8)
    reference = np.load(cache.path("train"))
    done = cache.path("train").with_suffix(".done")
    assert done.read_text() == "12" and not list(cache.folder.glob("*.tmp"))
    done.write_text(marker)  # a crash while an older version wrote it
    assert not cache.complete()
    cache.prepare(torch.device("cpu"), batch_size=8)  # extracts again from the start
    assert cache.complete() and done.read_text() == "12"
    np.testing.assert_array_equal(np.load(cache.path("train")), reference)


def test_stale_staging_folders_are_removed_but_not_a_users(tmp_path: Path) -> None:
    staging = tmp_path / ".shapes.staging-abcd1234"  # a generation killed with SIGKILL
    (staging / "Images").mkdir(parents=True)
    (staging / "Images" / "train_00000.png").write_bytes(b"png")
    aside = tmp_path / ".shapes.old-zz99yy88"  # killed between moving the old set and the new
    (aside / "Images").mkdir(parents=True)
    (aside / "meta.json").write_text("{}")
    legacy = tmp_path / ".shapes-x1y2z3w4"  # the staging name before the lock
    (legacy / "Images").mkdir(parents=True)
    users = {
        tmp_path / ".shapes.staging-qwer5678": "thesis.docx",  # our name, not our content
        tmp_path / ".shapes-backup12": "captions.txt",  # our name, no Images/
        tmp_path / ".shapes-backup": "captions.txt",  # not our name
        tmp_path / ".shapes.staging-abcd1234.copy": "captions.txt",
    }
    for folder, name in users.items():
        folder.mkdir()
        (folder / name).write_text("mine")
    ensure_shapes(tmp_path / "shapes", TINY)
    assert not staging.exists() and not aside.exists() and not legacy.exists()
    assert all((folder / name).read_text() == "mine" for folder, name in users.items())
    _complete(tmp_path / "shapes", TINY)


def test_a_full_disk_while_generating_says_so_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from captioning.files import DiskFullError

    real_save = Image.Image.save
    calls = {"n": 0}

    def save(self, fp, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    root = tmp_path / "data" / "shapes"
    with pytest.raises(DiskFullError, match=rf"no space left on device writing {root}"):
        generate(root, ShapesConfig(num_train=8, num_val=2, num_test=2))
    assert not root.exists()
    assert [p.name for p in root.parent.iterdir() if not p.name.endswith(".lock")] == []

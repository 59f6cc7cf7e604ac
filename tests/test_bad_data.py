"""The bad-data policy (``data.on_error=raise|skip``) and the preprocessing cache."""

from __future__ import annotations

import json
import logging
import os
import re
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from captioning.data.datamodule import CaptionDataModule
from captioning.data.formats import BadData, DataError
from captioning.data.layouts import read_dataset

NAMES = [f"{i}.jpg" for i in range(8)]


def _kaggle(root: Path, rows: list[str] | bytes, names: list[str] = NAMES) -> Path:
    (root / "Images").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (24, 20), color=(20 * i, 0, 0)).save(root / "Images" / name)
    text = (
        rows if isinstance(rows, bytes) else ("image,caption\n" + "\n".join(rows) + "\n").encode()
    )
    (root / "captions.txt").write_bytes(text)
    return root


def _good_rows(names: list[str] = NAMES) -> list[str]:
    return [f"{name},a dog number {i}" for i, name in enumerate(names)]


def _module(root: Path, on_error: str = "raise", **kwargs) -> CaptionDataModule:
    return CaptionDataModule(
        root=str(root),
        reader=partial(read_dataset, val_size=2, test_size=2),
        image_size=16,
        on_error=on_error,
        cache=kwargs.pop("cache", False),
        **kwargs,
    )


def _read(root: Path, on_error: str) -> tuple[list, BadData]:
    errors = BadData(on_error)
    return read_dataset(root, val_size=2, test_size=2, errors=errors), errors


# Each case: (rows of captions.txt or raw bytes, a message, the kind it is counted under).
CASES = {
    "missing image": (
        [*_good_rows(), "9.jpg,a cat"],
        r"captions.txt:10: image 9.jpg not found at .*Images/9.jpg",
    ),
    "non-UTF-8 text": (
        b"image,caption\n" + "\n".join(_good_rows()).encode() + b"\n0.jpg,caf\xe9 au lait\n",
        r"captions.txt:10: not UTF-8 text \(byte 0xe9\)",
    ),
    "empty caption": ([*_good_rows(), "1.jpg,   "], r"captions.txt:10: empty caption for 1.jpg"),
}  # a repeated (image, caption) row is not an error: tests/test_rows.py


@pytest.mark.parametrize("kind", list(CASES))
def test_reader_cases_raise_with_file_and_line_or_are_counted(kind: str, tmp_path: Path) -> None:
    rows, message = CASES[kind]
    root = _kaggle(tmp_path, rows)
    with pytest.raises(DataError, match=message + r".*\(data.on_error=skip drops such records\)"):
        _read(root, "raise")
    records, errors = _read(root, "skip")
    assert dict(errors.counts) == {kind: 1}
    assert sorted(r.image_id for r in records) == NAMES  # every good image kept
    assert sum(len(r.captions) for r in records) == len(NAMES)


def test_skip_reports_the_counts_at_the_end_of_setup(tmp_path: Path, caplog) -> None:
    rows = [*_good_rows(), "9.jpg,a cat", "1.jpg, ", "2.jpg,a dog number 2", "3.jpg, . ! "]
    root = _kaggle(tmp_path, rows)
    (root / "Images" / "4.jpg").write_text("not an image")
    data = (root / "Images" / "5.jpg").read_bytes()
    (root / "Images" / "5.jpg").write_bytes(data[: len(data) // 3])
    module = _module(root, on_error="skip")
    with caplog.at_level(logging.WARNING):
        module.setup()
    assert module.skipped == {
        "duplicate caption": 1,
        "empty caption": 2,  # one blank, one only punctuation (empty after tokenisation)
        "missing image": 1,
        "unreadable image": 2,  # a text file and a truncated JPEG
    }
    kept = [r.image_id for split in module.records.values() for r in split]
    assert sorted(kept) == sorted(set(NAMES) - {"4.jpg", "5.jpg"})
    assert "dropped bad records: 1 duplicate caption dropped (captions.txt:12 repeats line 4)" in (
        caplog.text
    )
    assert "2 unreadable image (first: " in caplog.text


def test_unreadable_image_raises_by_name(tmp_path: Path) -> None:
    root = _kaggle(tmp_path, _good_rows())
    (root / "Images" / "4.jpg").write_text("not an image")
    with pytest.raises(DataError, match=r"4.jpg: unreadable or truncated image"):
        _module(root).setup()


def test_decompression_bomb_sized_image(tmp_path: Path) -> None:
    root = _kaggle(tmp_path, _good_rows())
    Image.new("RGB", (40, 40)).save(root / "Images" / "3.jpg")
    message = r"3.jpg: 40x40 pixels exceeds data.max_image_pixels=1000 \(a decompression bomb\?\)"
    with pytest.raises(DataError, match=message):
        _module(root, max_image_pixels=1000).setup()
    module = _module(root, on_error="skip", max_image_pixels=1000)
    module.setup()
    assert module.skipped == {"oversized image": 1}


def test_pil_decompression_bomb_error_is_caught(tmp_path: Path, monkeypatch) -> None:
    root = _kaggle(tmp_path, _good_rows())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # PIL raises above twice its limit
    module = _module(root, on_error="skip", max_image_pixels=None)
    with pytest.raises(DataError, match=r"has no images after dropping bad records"):
        module.setup()
    assert module.skipped == {"oversized image": len(NAMES)}


def test_split_with_zero_images(tmp_path: Path) -> None:
    root = _kaggle(tmp_path, _good_rows())
    for split, names in (("train", NAMES[:6]), ("dev", NAMES[6:7]), ("test", NAMES[7:])):
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    (root / "Images" / "7.jpg").unlink()
    with pytest.raises(DataError, match=r"captions.txt:9: image 7.jpg not found"):
        _module(root).setup()
    module = _module(root, on_error="skip")
    with pytest.raises(DataError, match=r"the test split has no images after dropping bad"):
        module.setup()
    assert module.skipped == {"missing image": 1}


def test_unknown_split_values(tmp_path: Path) -> None:
    _kaggle(tmp_path, [])
    (tmp_path / "captions.txt").unlink()
    images = [
        {"filename": n, "split": s, "sentences": [{"raw": f"a dog {i}"}]}
        for i, (n, s) in enumerate(zip(NAMES, ["train"] * 5 + ["dev", "val", "test"], strict=True))
    ]
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps({"images": images}))
    with pytest.raises(DataError, match=r"dataset_flickr8k.json: images\[5\]: unknown split 'dev'"):
        _read(tmp_path, "raise")
    records, errors = _read(tmp_path, "skip")
    assert dict(errors.counts) == {"unknown split": 1}
    assert [r.split for r in records] == ["train"] * 5 + ["val", "test"]


def test_unknown_split_in_a_folder_split_column(tmp_path: Path) -> None:
    _kaggle(tmp_path, [])
    (tmp_path / "captions.txt").unlink()
    rows = [f"{n},a dog {i},{'holdout' if i == 3 else 'train'}" for i, n in enumerate(NAMES)]
    (tmp_path / "captions.csv").write_text("image,caption,split\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"captions.csv:5: unknown split 'holdout' for 3.jpg"):
        read_dataset(tmp_path, image_dir="Images")


def test_bad_policy_value_is_named() -> None:
    with pytest.raises(DataError, match=r"data.on_error='ignore': expected raise or skip"):
        BadData("ignore")


# ---------------------------------------------------------------------- preprocessing cache


def test_second_setup_reads_the_cache_and_a_changed_file_invalidates_it(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    root = _kaggle(tmp_path, _good_rows())
    calls = []

    def counting_reader(**kwargs):
        calls.append(kwargs["root"])
        return read_dataset(val_size=2, test_size=2, **kwargs)

    def module() -> CaptionDataModule:
        return CaptionDataModule(root=str(root), reader=counting_reader, image_size=16)

    first = module()
    with caplog.at_level(logging.INFO):
        first.setup()
    assert re.search(r"records parsed in [0-9.]+s and cached to", caplog.text)
    caplog.clear()
    second = module()
    with caplog.at_level(logging.INFO):
        second.setup()
    assert "(parsing skipped)" in caplog.text
    assert len(calls) == 1
    assert second.records == first.records and second.tokens == first.tokens
    assert second.vocab == first.vocab and second.fingerprint == first.fingerprint

    captions = root / "captions.txt"
    captions.write_text(captions.read_text().replace("a dog number 3", "a cat number 3"))
    os.utime(captions, ns=(1, 1))  # a new mtime even on coarse file systems
    third = module()
    third.setup()
    assert len(calls) == 2
    assert "cat" in third.vocab.index and "cat" not in first.vocab.index


def test_cache_is_invalidated_when_images_are_added_or_removed(tmp_path: Path, caplog) -> None:
    root = _kaggle(tmp_path, [*_good_rows(), "8.jpg,a late dog"])
    module = _module(root, on_error="skip", cache=True)
    module.setup()
    assert module.skipped == {"missing image": 1}
    Image.new("RGB", (24, 20)).save(root / "Images" / "8.jpg")
    os.utime(root / "Images", ns=(2, 2))
    again = _module(root, on_error="skip", cache=True)
    with caplog.at_level(logging.INFO):
        again.setup()
    assert again.skipped == {}
    assert "8.jpg" in [r.image_id for split in again.records.values() for r in split]


def test_unwritable_cache_folder_warns_and_continues(tmp_path: Path, caplog) -> None:
    root = _kaggle(tmp_path, _good_rows())
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    module = _module(root, cache=True, cache_dir=str(blocker / "cache"))
    with caplog.at_level(logging.WARNING):
        module.setup()
    assert "Cannot write the record cache" in caplog.text
    assert len(module.records["train"]) == 4

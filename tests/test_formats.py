"""The Flickr8k Kaggle reader: CSV edge cases, split lists, seeded splits, bad input."""

from pathlib import Path

import pytest
from PIL import Image

from captioning.data.datamodule import CaptionDataModule
from captioning.data.formats import DataError, read_flickr8k_kaggle, read_kaggle_captions
from captioning.data.layouts import read_dataset


def _image(path: Path, size: tuple[int, int] = (20, 16), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0).save(path)


def _dataset(root: Path, text: str, images: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "captions.txt").write_text(text)
    for name in images:
        _image(root / "Images" / name)
    return root


def test_csv_edge_cases(tmp_path: Path) -> None:
    text = (
        "\ufeffimage, caption\n"  # BOM and a space after the comma in the header
        'a.jpg,"A dog, running , in the park ."\n'  # quoted caption with commas
        "a.jpg,  Stray   whitespace around  \n"
        "b.jpg,An unquoted caption, with a comma\n"  # taken whole
        "\n"  # blank line
        'b.jpg,"A ""quoted"" word"\n'
    )
    path = tmp_path / "captions.txt"
    path.write_text(text, encoding="utf-8")
    captions, lines = read_kaggle_captions(path)
    assert captions == {
        "a.jpg": ["A dog, running , in the park .", "Stray   whitespace around"],
        "b.jpg": ["An unquoted caption, with a comma", 'A "quoted" word'],
    }
    assert lines == {"a.jpg": 2, "b.jpg": 4}


def test_multiline_quoted_caption_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_text('image,caption\na.jpg,"two\nlines"\nb.jpg,\n')
    with pytest.raises(DataError, match=r"captions.txt:4: empty caption for b.jpg"):
        read_kaggle_captions(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("img,text\na.jpg,x\n", r"captions.txt:1: expected the header 'image,caption'"),
        ("", r"captions.txt:1: empty file"),
        ("image,caption\na.jpg,   \n", r"captions.txt:2: empty caption for a.jpg"),
        ("image,caption\na.jpg\n", r"captions.txt:2: expected 'image,caption'"),
        ("image,caption\n", r"no captions found"),
    ],
)
def test_malformed_captions_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "captions.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_kaggle_captions(path)


def test_missing_captions_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"captions.txt: captions file not found"):
        read_flickr8k_kaggle(tmp_path)


def test_split_lists_leave_out_unlisted_images(tmp_path: Path) -> None:
    names = [f"{i}.jpg" for i in range(6)]
    root = _dataset(tmp_path, "image,caption\n" + "".join(f"{n},c {n}\n" for n in names), names)
    (root / "Flickr_8k.trainImages.txt").write_text("0.jpg\n1.jpg\n2.jpg\n")
    (root / "Flickr_8k.devImages.txt").write_text("3.jpg\n")
    (root / "Flickr_8k.testImages.txt").write_text("4.jpg\n")
    records = read_flickr8k_kaggle(root)
    assert [(r.image_id, r.split) for r in records] == [
        ("0.jpg", "train"), ("1.jpg", "train"), ("2.jpg", "train"),
        ("3.jpg", "val"), ("4.jpg", "test"),
    ]  # fmt: skip
    assert records[0].captions == ("c 0.jpg",)
    (root / "Flickr_8k.testImages.txt").write_text("4.jpg\n9.jpg\n")
    with pytest.raises(DataError, match=r"Flickr_8k.testImages.txt:2: 9.jpg has no captions"):
        read_flickr8k_kaggle(root)


def test_seeded_split_sizes_and_errors(tmp_path: Path) -> None:
    names = [f"{i}.jpg" for i in range(20)]
    root = _dataset(tmp_path, "image,caption\n" + "".join(f"{n},c\n" for n in names), names)
    records = read_flickr8k_kaggle(root, val_size=0.1, test_size=3, split_seed=1)
    splits = [r.split for r in records]
    assert (splits.count("train"), splits.count("val"), splits.count("test")) == (15, 2, 3)
    again = read_flickr8k_kaggle(root, val_size=0.1, test_size=3, split_seed=1)
    assert again == records
    with pytest.raises(DataError, match=r"data.split: 20 images are too few"):
        read_flickr8k_kaggle(root, val_size=10, test_size=10)
    with pytest.raises(DataError, match=r"data.split.val_size=0.01 gives no images"):
        read_flickr8k_kaggle(root, val_size=0.01)


def _module(root: Path, **kwargs) -> CaptionDataModule:
    from functools import partial

    return CaptionDataModule(
        root=str(root),
        reader=partial(read_dataset, val_size=1, test_size=1),
        image_size=16,
        **kwargs,
    )


def test_truncated_image_is_named_at_setup(tmp_path: Path) -> None:
    names = ["a.png", "b.png", "c.png"]
    root = _dataset(tmp_path, "image,caption\n" + "".join(f"{n},a dog\n" for n in names), names)
    data = (root / "Images" / "b.png").read_bytes()
    (root / "Images" / "b.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"b.png: unreadable or truncated image"):
        _module(root).setup()
    with pytest.raises(DataError, match=r"b.png: cannot decode image"):
        _module(root, preload=True, check_images=False).setup()


def test_caption_of_only_punctuation_is_rejected(tmp_path: Path) -> None:
    names = ["a.png", "b.png", "c.png"]
    text = "image,caption\na.png,a dog\nb.png,a cat\nc.png, . , !\n"
    root = _dataset(tmp_path, text, names)
    with pytest.raises(DataError, match=r"c.png: caption '\. , !' is empty after tokenisation"):
        _module(root).setup()


def test_malformed_boxes_file_is_named(tmp_path: Path) -> None:
    names = ["a.png", "b.png", "c.png"]
    root = _dataset(tmp_path, "image,caption\n" + "".join(f"{n},a dog\n" for n in names), names)
    (root / "boxes.json").write_text("{not json")
    with pytest.raises(DataError, match=r"boxes.json: not a valid annotation file"):
        _module(root, boxes_file="boxes.json").setup()

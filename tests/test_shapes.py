import csv
import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from captioning.data.shapes import (
    COLOURS,
    SHAPES,
    ShapeObject,
    ShapesConfig,
    captions_for,
    ensure_shapes,
    generate,
)

HARD = ShapesConfig(
    image_size=128,
    min_objects=2,
    max_objects=6,
    shapes=SHAPES,
    colours=tuple(COLOURS),
    sizes={"small": 0.09, "medium": 0.13, "large": 0.18},
    distinct_columns=False,
    counting=True,
    repeat_prob=0.3,
    clutter=4,
    num_train=60,
    num_val=10,
    num_test=10,
)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(root: Path) -> list[list[str]]:
    with (root / "captions.txt").open(newline="") as handle:
        return list(csv.reader(handle))


def test_same_seed_same_files_byte_for_byte(tmp_path: Path) -> None:
    cfg = ShapesConfig(num_train=20, num_val=5, num_test=5, seed=3)
    first = _digest(generate(tmp_path / "a", cfg))
    second = _digest(generate(tmp_path / "b", cfg))
    assert first == second
    other = _digest(generate(tmp_path / "c", ShapesConfig(num_train=20, num_val=5, num_test=5)))
    assert other["captions.txt"] != first["captions.txt"]


def test_layout_is_flickr8k_kaggle(shapes_dir: Path) -> None:
    rows = _rows(shapes_dir)
    assert rows[0] == ["image", "caption"]
    per_image: dict[str, int] = {}
    for image, _ in rows[1:]:
        per_image[image] = per_image.get(image, 0) + 1
    assert set(per_image.values()) == {5}
    train = (shapes_dir / "Flickr_8k.trainImages.txt").read_text().split()
    val = (shapes_dir / "Flickr_8k.devImages.txt").read_text().split()
    test = (shapes_dir / "Flickr_8k.testImages.txt").read_text().split()
    assert (len(train), len(val), len(test)) == (96, 16, 16)
    assert set(train + val + test) == set(per_image)
    with Image.open(shapes_dir / "Images" / train[0]) as image:
        assert image.size == (64, 64) and image.mode == "RGB"


def test_every_caption_names_every_object_with_its_position(shapes_dir: Path) -> None:
    boxes = json.loads((shapes_dir / "boxes.json").read_text())
    position_words = {"left", "middle", "right", "top", "bottom", "center"}
    captions: dict[str, list[str]] = {}
    for image, caption in _rows(shapes_dir)[1:]:
        captions.setdefault(image, []).append(caption)
    for image, objects in boxes.items():
        assert 1 <= len(objects) <= 3
        caps = captions[image]
        assert len(set(caps)) == 5, caps  # five genuinely different templates
        for caption in caps:
            words = caption.split()
            for obj in objects:
                assert f"{obj['colour']} {obj['shape']}" in caption, (caption, obj)
            assert position_words & set(words), caption
        # objects are listed left to right in every caption
        xs = [(o["box"][0] + o["box"][2]) / 2 for o in objects]
        assert xs == sorted(xs)


def test_objects_do_not_overlap_and_sit_in_distinct_thirds(shapes_dir: Path) -> None:
    boxes = json.loads((shapes_dir / "boxes.json").read_text())
    for objects in boxes.values():
        assert len({o["column"] for o in objects}) == len(objects)
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                ax0, ay0, ax1, ay1 = a["box"]
                bx0, by0, bx1, by1 = b["box"]
                assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0


def test_hard_variant_counts_and_varies(tmp_path: Path) -> None:
    root = generate(tmp_path / "hard", HARD)
    boxes = json.loads((root / "boxes.json").read_text())
    counts = [len(objs) for objs in boxes.values()]
    assert min(counts) >= 2 and max(counts) <= 6 and len(set(counts)) > 2
    rows = _rows(root)
    assert any(w in caption.split() for _, caption in rows[1:] for w in ("two", "three")), (
        "no counting"
    )
    with Image.open(root / "Images" / "train_00000.png") as image:
        assert image.size == (128, 128)


def test_counting_phrase() -> None:
    objects = [
        ShapeObject("circle", "red", "small", (2, 2, 10, 10), "left", "top"),
        ShapeObject("circle", "red", "small", (30, 2, 38, 10), "middle", "top"),
        ShapeObject("cross", "blue", "large", (50, 40, 62, 52), "right", "bottom"),
    ]
    captions = captions_for(objects, counting=True)
    assert captions[0] == "two red circles to the left of a blue cross"
    assert captions[3] == "three objects from left to right : two red circles and a blue cross"
    assert captions_for(objects, counting=False)[0].startswith("a red circle to the left of a red")


def test_ensure_regenerates_only_when_settings_change(tmp_path: Path) -> None:
    cfg = ShapesConfig(num_train=10, num_val=3, num_test=3)
    root = ensure_shapes(tmp_path / "s", cfg)
    stamp = (root / "captions.txt").stat().st_mtime_ns
    ensure_shapes(root, cfg)
    assert (root / "captions.txt").stat().st_mtime_ns == stamp
    ensure_shapes(root, ShapesConfig(num_train=12, num_val=3, num_test=3))
    assert len((root / "Flickr_8k.trainImages.txt").read_text().split()) == 12


def test_bad_generator_settings_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"data.generator.shapes"):
        ShapesConfig(shapes=("circle", "blob"))
    with pytest.raises(ValueError, match=r"distinct_columns"):
        ShapesConfig(max_objects=4)

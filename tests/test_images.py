"""One image-reading path for every common form of photo: each odd file against its plain twin.

Each odd file (animated GIF, 16-bit PNG, EXIF-rotated JPEG, CMYK JPEG, palette, LA, greyscale,
...) is written from a Shapes picture whose plain 8-bit RGB twin is known, and must decode to
the twin's pixels (within JPEG error for lossy files) and, through ``captioning-caption``,
get the twin's caption and score.
"""

from __future__ import annotations

import logging
import struct
import subprocess
import sys
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.caption import caption_images
from captioning.data.datamodule import CaptionDataModule, check_images
from captioning.data.dataset import CaptionDataset
from captioning.data.formats import BadData, DataError
from captioning.data.images import ImageError, load_image, to_8_bit
from captioning.data.layouts import read_dataset
from tests.helpers import compose_config

EXIF_ORIENTATION = 0x0112
# Orientation tag -> how the stored pixels are laid out, so that the tag undoes it
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # a phone held upright: shown turned 90 degrees clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
JPEG = {"quality": 100, "subsampling": 0}
JPEG_ERROR = 8  # most an 8-bit level may move through a quality-100 JPEG of a Shapes picture


def write_png_16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG, RGB (H, W, 3) or grey (H, W): Pillow cannot write 16-bit RGB."""
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    rows = pixels.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter byte 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def pixels(path: Path) -> np.ndarray:
    """The (H, W, 3) uint8 picture load_image gives."""
    image = load_image(path, None)
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    return image.permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def picture(shapes_dir: Path) -> np.ndarray:
    """A Shapes test image: (64, 64, 3) uint8, objects named left to right in its caption."""
    return np.asarray(Image.open(shapes_dir / "Images" / "test_00001.png").convert("RGB"))


@pytest.fixture(scope="module")
def twins(picture: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Odd files and, under ``<name>.twin.png``, the plain 8-bit RGB PNG each must equal."""
    folder = tmp_path_factory.mktemp("twins")
    files: dict[str, tuple[Path, np.ndarray]] = {}
    plain = Image.fromarray(picture)
    grey = np.asarray(plain.convert("L"))
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)

    files["rgb16.png"] = (folder / "rgb16.png", picture)
    write_png_16(folder / "rgb16.png", picture.astype(np.uint16) * 257)
    files["grey16.png"] = (folder / "grey16.png", grey_rgb)
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.png")  # mode I;16

    first = plain.quantize(256)  # a GIF holds palette frames: its first frame is this picture
    noise = np.random.default_rng(0).integers(0, 256, picture.shape, dtype=np.uint8)
    first.save(folder / "animated.gif", save_all=True, append_images=[Image.fromarray(noise)])
    files["animated.gif"] = (folder / "animated.gif", np.asarray(first.convert("RGB")))
    first.save(folder / "palette.png")
    files["palette.png"] = (folder / "palette.png", np.asarray(first.convert("RGB")))

    alpha = np.random.default_rng(1).integers(0, 256, grey.shape, dtype=np.uint8)
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(folder / "la.png")
    files["la.png"] = (folder / "la.png", grey_rgb)  # alpha is dropped, as any viewer's RGB
    Image.fromarray(np.dstack([picture, alpha]), "RGBA").save(folder / "rgba.png")
    files["rgba.png"] = (folder / "rgba.png", picture)
    Image.fromarray(grey).save(folder / "grey.png")
    files["grey.png"] = (folder / "grey.png", grey_rgb)

    for tag, layout in STORED_AS.items():  # lossless, so the orientation must be exact
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = tag
        plain.transpose(layout).save(folder / f"exif{tag}.png", exif=exif)
        files[f"exif{tag}.png"] = (folder / f"exif{tag}.png", picture)

    # formats torchvision does not decode (through PIL): animated and EXIF-rotated WebP, TIFF
    plain.save(folder / "animated.webp", save_all=True, append_images=[Image.fromarray(noise)],
               lossless=True)  # fmt: skip
    files["animated.webp"] = (folder / "animated.webp", picture)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    plain.transpose(STORED_AS[6]).save(folder / "exif6.webp", exif=exif, lossless=True)
    files["exif6.webp"] = (folder / "exif6.webp", picture)
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "grey16.tif")
    files["grey16.tif"] = (folder / "grey16.tif", grey_rgb)
    plain.save(folder / "plain.bmp")
    files["plain.bmp"] = (folder / "plain.bmp", picture)

    out = {}
    for name, (path, twin) in files.items():
        Image.fromarray(twin).save(folder / f"{name}.twin.png")
        out[name] = path
    return out


LOSSLESS = [
    "rgb16.png", "grey16.png", "animated.gif", "palette.png", "la.png", "rgba.png", "grey.png",
    *(f"exif{tag}.png" for tag in STORED_AS), "animated.webp", "exif6.webp", "grey16.tif",
    "plain.bmp",
]  # fmt: skip


@pytest.mark.parametrize("name", LOSSLESS)
def test_odd_file_decodes_to_its_plain_twin(name: str, twins: dict[str, Path]) -> None:
    path = twins[name]
    twin = pixels(path.with_name(f"{name}.twin.png"))
    np.testing.assert_array_equal(pixels(path), twin)


def test_twins_are_not_trivially_equal(twins: dict[str, Path], picture: np.ndarray) -> None:
    # the second frame, the stored (unrotated) layout and the raw 16-bit values all differ
    with Image.open(twins["animated.gif"]) as gif:
        gif.seek(1)
        second = np.asarray(gif.convert("RGB"))
    assert np.abs(second.astype(int) - pixels(twins["animated.gif"])).mean() > 50
    with Image.open(twins["exif6.png"]) as stored:
        assert np.abs(np.asarray(stored.convert("RGB")).astype(int) - picture).max() > 100


@pytest.mark.parametrize("tag", [6, 5, 2])
def test_exif_rotated_jpeg_is_shown_upright(tag: int, picture: np.ndarray, tmp_path: Path) -> None:
    Image.fromarray(picture).save(tmp_path / "twin.jpg", **JPEG)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = tag
    stored = Image.fromarray(picture).transpose(STORED_AS[tag])
    stored.save(tmp_path / "phone.jpg", exif=exif, **JPEG)
    decoded = pixels(tmp_path / "phone.jpg").astype(int)
    assert np.abs(decoded - pixels(tmp_path / "twin.jpg")).max() <= JPEG_ERROR
    assert np.abs(decoded - np.asarray(stored)).max() > 100  # the tag was not ignored


def test_cmyk_jpeg_decodes_to_rgb(picture: np.ndarray, tmp_path: Path) -> None:
    Image.fromarray(picture).save(tmp_path / "twin.jpg", **JPEG)
    Image.fromarray(picture).convert("CMYK").save(tmp_path / "cmyk.jpg", **JPEG)
    with Image.open(tmp_path / "cmyk.jpg") as image:
        assert image.mode == "CMYK"
    decoded = pixels(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(decoded - pixels(tmp_path / "twin.jpg")).max() <= JPEG_ERROR
    assert np.abs(decoded - picture).max() <= JPEG_ERROR


def test_16_bit_samples_are_rounded_not_truncated(tmp_path: Path) -> None:
    # value * 255 / 65535 rounded; a shift by 8 (torchvision's to_dtype) gives 0 for 129 and 255
    values = np.array([[0, 128, 129, 255, 257, 32767, 32896, 65407, 65535]], dtype=np.uint16)
    expected = np.array([[0, 0, 1, 1, 1, 127, 128, 255, 255]], dtype=np.uint8)
    assert (np.rint(values.astype(np.int64) * 255 / 65535) == expected).all()
    assert ((values >> 8) != expected).any()
    write_png_16(tmp_path / "ramp.png", values)
    assert (load_image(tmp_path / "ramp.png", None)[0].numpy() == expected).all()
    every = torch.arange(65536, dtype=torch.int32)
    exact = torch.from_numpy(np.rint(np.arange(65536) * 255 / 65535).astype(np.uint8))
    assert torch.equal(to_8_bit(every), exact)


# ---------------------------------------------------------------------- bad files


def _truncated(source: Path, out: Path) -> Path:
    data = source.read_bytes()
    out.write_bytes(data[: int(len(data) * 0.6)])  # the header survives, the pixels do not
    return out


def test_truncated_and_corrupt_files_are_named(picture: np.ndarray, tmp_path: Path) -> None:
    Image.fromarray(picture).save(tmp_path / "photo.jpg", **JPEG)
    Image.fromarray(picture).save(tmp_path / "photo.png")
    bad = [
        _truncated(tmp_path / "photo.jpg", tmp_path / "cut.jpg"),
        _truncated(tmp_path / "photo.png", tmp_path / "cut.png"),
        tmp_path / "notes.jpg",
    ]
    bad[2].write_text("not an image")
    with Image.open(bad[0]) as header:  # a header check alone lets it through
        header.verify()
    for path in bad:
        with pytest.raises(ImageError, match=rf"{path.name}: cannot decode image \(.+\)"):
            load_image(path, 16)


def test_startup_check_rejects_exactly_what_load_image_cannot_decode(
    twins: dict[str, Path], picture: np.ndarray, tmp_path: Path
) -> None:
    Image.fromarray(picture).save(tmp_path / "photo.jpg", **JPEG)
    cut = _truncated(tmp_path / "photo.jpg", tmp_path / "cut.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    paths = [*twins.values(), tmp_path / "photo.jpg", cut, tmp_path / "notes.png"]
    errors = BadData("skip")
    passed = check_images(paths, None, errors)

    def decodes(path: Path) -> bool:
        try:
            load_image(path, 32)
        except DataError:
            return False
        return True

    assert passed == [decodes(p) for p in paths]
    assert passed == [True] * len(twins) + [True, False, False]
    assert dict(errors.counts) == {"unreadable image": 2}
    with pytest.raises(DataError, match=r"cut.jpg: unreadable or truncated image"):
        check_images(paths, None, BadData("raise"))


def _kaggle(root: Path, files: dict[str, Path]) -> Path:
    (root / "Images").mkdir(parents=True)
    rows = ["image,caption"]
    for i, (name, source) in enumerate(files.items()):
        (root / "Images" / name).write_bytes(source.read_bytes())
        rows.append(f"{name},a picture number {i}")
    (root / "captions.txt").write_text("\n".join(rows) + "\n")
    return root


def _datamodule(root: Path, on_error: str) -> CaptionDataModule:
    return CaptionDataModule(
        root=str(root), reader=partial(read_dataset, val_size=1, test_size=1), image_size=32,
        batch_size=4, on_error=on_error, cache=False, check_images=True,
    )  # fmt: skip


def test_training_reads_odd_files_and_drops_a_truncated_one_by_name(
    twins: dict[str, Path], picture: np.ndarray, tmp_path: Path
) -> None:
    Image.fromarray(picture).save(tmp_path / "photo.jpg", **JPEG)
    files = {name: twins[name] for name in ("animated.gif", "rgb16.png", "grey16.png", "la.png")}
    files |= {"exif6.png": twins["exif6.png"], "photo.jpg": tmp_path / "photo.jpg"}
    files["cut.jpg"] = _truncated(tmp_path / "photo.jpg", tmp_path / "cut.jpg")
    root = _kaggle(tmp_path / "data", files)
    with pytest.raises(DataError, match=r"Images/cut.jpg: unreadable or truncated image.*on_error"):
        _datamodule(root, "raise").setup()
    module = _datamodule(root, "skip")
    module.setup()
    assert module.skipped == {"unreadable image": 1}
    kept = sorted(r.image_id for split in module.records.values() for r in split)
    assert kept == sorted(set(files) - {"cut.jpg"})
    batches = list(module.train_dataloader())  # the GIF and the 16-bit PNGs crashed here
    assert sum(len(b["indices"]) for b in batches) == len(module.records["train"])
    for batch in batches:
        assert batch["images"].dtype == torch.uint8 and batch["images"].shape[1:] == (3, 32, 32)


def test_dataset_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "gone.png").write_text("not an image")
    dataset = CaptionDataset([tmp_path / "gone.png"], [[[1, 4, 2]]], 16)
    with pytest.raises(DataError, match=r"gone.png: cannot decode image.*data.check_images=true"):
        dataset[0]


# ---------------------------------------------------------------------- captioning-caption


@pytest.fixture(scope="module")
def checkpoint(tiny_run: Path) -> Path:
    return tiny_run / "run" / "checkpoints" / "last.ckpt"


def _caption(checkpoint: Path, images: Path, tmp_path: Path, *overrides: str) -> dict[str, dict]:
    cfg = compose_config("caption", tmp_path, [f"ckpt={checkpoint}", f"images={images}",
                                               *overrides])  # fmt: skip
    return {record["image"]: record for record in caption_images(cfg)}


CAPTIONED = ["animated.gif", "rgb16.png", "grey16.png", "exif6.png", "palette.png", "la.png"]


def test_caption_of_each_odd_file_is_its_twins_and_a_bad_file_loses_nothing(
    checkpoint: Path, twins: dict[str, Path], picture: np.ndarray, tmp_path: Path, caplog
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in CAPTIONED:
        (folder / name).write_bytes(twins[name].read_bytes())
        (folder / f"{name}.twin.png").write_bytes(
            twins[name].with_name(f"{name}.twin.png").read_bytes()
        )
    Image.fromarray(picture).save(folder / "phone.jpg", **JPEG)
    _truncated(folder / "phone.jpg", folder / "cut.jpg")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(picture).transpose(STORED_AS[6]).save(folder / "phone.jpg", exif=exif, **JPEG)
    Image.fromarray(picture).save(folder / "phone_twin.jpg", **JPEG)
    Image.fromarray(picture).convert("CMYK").save(folder / "cmyk.jpg", **JPEG)
    # one batch holds every file: the truncated one must not lose the others' captions
    with caplog.at_level(logging.WARNING):
        records = _caption(checkpoint, folder, tmp_path, "batch_size=64", "figures=true")
    assert "cut.jpg" not in records and "cut.jpg: cannot decode image" in caplog.text
    assert len(records) == 2 * len(CAPTIONED) + 3
    for name in CAPTIONED:
        odd, twin = records[name], records[f"{name}.twin.png"]
        assert odd["captions"] == twin["captions"], name
        assert odd["scores"] == pytest.approx(twin["scores"], abs=1e-4), name
    for name in ("phone.jpg", "cmyk.jpg"):  # lossy: within JPEG error of the twin
        assert records[name]["captions"] == records["phone_twin.jpg"]["captions"], name
        assert records[name]["scores"] == pytest.approx(records["phone_twin.jpg"]["scores"],
                                                        abs=0.05), name  # fmt: skip
    for record in records.values():  # figures for every case, 16-bit and GIF included
        with Image.open(record["figure"]) as figure:
            assert figure.mode == "RGB" and figure.width > 0


def test_caption_pixel_limit_defaults_to_the_checkpoints(
    checkpoint: Path, picture: np.ndarray, tmp_path: Path, caplog
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(picture).save(folder / "big.png")  # 64 x 64 = 4096 pixels
    Image.fromarray(picture[:30, :30]).save(folder / "small.png")
    with caplog.at_level(logging.WARNING):
        records = _caption(checkpoint, folder, tmp_path, "figures=false", "max_image_pixels=1000")
    assert list(records) == ["small.png"]
    assert "big.png: 64x64 pixels exceeds max_image_pixels=1000" in caplog.text
    # null takes the checkpoint's data.max_image_pixels
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    saved["hyper_parameters"]["config"]["data"]["max_image_pixels"] = 1000
    torch.save(saved, tmp_path / "limited.ckpt")
    assert list(_caption(tmp_path / "limited.ckpt", folder, tmp_path, "figures=false")) == [
        "small.png"
    ]
    assert list(_caption(checkpoint, folder, tmp_path, "figures=false")) == ["big.png", "small.png"]


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_caption_exits_non_zero_when_nothing_was_captioned(
    checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=rf"images={folder}: nothing was captioned \(2 file"):
        _caption(checkpoint, folder, tmp_path, "figures=false")
    result = subprocess.run(
        [sys.executable, "-m", "captioning.caption", f"ckpt={checkpoint}", f"images={folder}",
         f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}/run", "figures=false"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "nothing was captioned" in result.stderr


def test_attention_figure_refuses_what_is_not_8_bit_rgb() -> None:
    from captioning.viz import attention_figure

    deep = np.zeros((8, 8, 3), dtype=np.uint16)
    with pytest.raises(ValueError, match=r"needs an \(H, W, 3\) uint8 RGB image, got uint16"):
        attention_figure(deep, ["a"], torch.full((1, 4), 0.25), (2, 2))
    sheet = attention_figure(deep.astype(np.uint8), ["a"], torch.full((1, 4), 0.25), (2, 2))
    assert sheet.mode == "RGB"

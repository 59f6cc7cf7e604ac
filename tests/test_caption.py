"""captioning-caption: any image mode and size, n-best, JSON output, figures, bad files."""

import json
from pathlib import Path

import pytest
from PIL import Image

from captioning.caption import caption_images
from tests.helpers import compose_config


@pytest.fixture
def image_dir(tmp_path: Path, shapes_dir: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(shapes_dir / "Images" / "test_00000.png").save(folder / "shapes.png")
    Image.new("L", (50, 31), 128).save(folder / "grey.jpg")
    Image.new("RGBA", (20, 90), (10, 200, 30, 100)).save(folder / "rgba.png")
    Image.new("P", (33, 33)).save(folder / "palette.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_captions_every_image_and_skips_non_images(
    tiny_run: Path, image_dir: Path, tmp_path: Path, capsys, caplog
) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config("caption", tmp_path, [f"ckpt={ckpt}", f"images={image_dir}"])
    records = caption_images(cfg)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "grey.jpg",
        "palette.png",
        "rgba.png",
        "shapes.png",
    ]
    assert all(len(line.split(": ", 1)[1]) > 0 for line in lines)
    assert "notes.txt" in caplog.text and "cannot decode image" in caplog.text
    for record in records:
        figure = Path(record["figure"])
        assert figure.parent == tmp_path / "caption" and figure.is_file()
        with Image.open(figure) as image:
            assert image.width == 6 * 160  # a full row of panels: image + at least 5 words


def test_n_best_json_output(tiny_run: Path, image_dir: Path, tmp_path: Path, capsys) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "caption",
        tmp_path,
        [f"ckpt={ckpt}", f"images={image_dir / 'shapes.png'}", "json=true", "figures=false",
         "decoding.n_best=3", "decoding.beam_size=4"],
    )  # fmt: skip
    caption_images(cfg)
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == "shapes.png" and len(record["captions"]) == 3
    assert record["scores"] == sorted(record["scores"], reverse=True)
    assert "figure" not in record


def test_missing_images_path(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config("caption", tmp_path, [f"ckpt={ckpt}", f"images={tmp_path / 'nope'}"])
    with pytest.raises(FileNotFoundError, match=r"images=.*nope: no such file or folder"):
        caption_images(cfg)


def test_paths_starting_with_a_tilde_are_the_home_folder(
    tiny_run: Path, tmp_path: Path, monkeypatch
) -> None:
    # Hydra takes data.root='~/flickr8k' (quoted) verbatim: the code, not the shell, expands it
    import shutil

    from captioning.caption import list_images
    from captioning.data.datamodule import CaptionDataModule
    from captioning.module import CaptioningModule

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "photo.png").write_bytes(b"")
    assert list_images("~/photo.png") == [tmp_path / "photo.png"]
    shutil.copy(tiny_run / "run" / "checkpoints" / "last.ckpt", tmp_path / "model.ckpt")
    assert CaptioningModule.from_checkpoint("~/model.ckpt").vocab is not None
    data = CaptionDataModule(root="~/flickr8k", reader=None, image_dir="~/img", cache_dir="~/c")
    assert data.root == tmp_path / "flickr8k"
    assert data.source.image_dir == str(tmp_path / "img")
    assert data.caching.cache_dir == str(tmp_path / "c")

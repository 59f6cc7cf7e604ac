"""Every override that eval.yaml, caption.yaml and the README document works, and does what
it says."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from captioning.caption import caption_images
from captioning.eval import evaluate
from tests.helpers import compose_config, tiny_shapes_overrides

TINY_DATA = tiny_shapes_overrides()  # the tiny_run's own data


def _ckpt(tiny_run: Path) -> str:
    return str(tiny_run / "run" / "checkpoints" / "last.ckpt")


def _eval(tiny_run: Path, tmp_path: Path, *overrides: str) -> tuple[dict, list[dict]]:
    cfg = compose_config(
        "eval", tiny_run, [f"ckpt={_ckpt(tiny_run)}", "samples=0", *overrides]
    )  # data under tiny_run/data (its own Shapes set); outputs under tiny_run/eval
    scores = evaluate(cfg)
    predictions = json.loads((tiny_run / "eval" / "predictions.json").read_text())
    return scores, predictions


def test_eval_data_override_resolves_and_matches_the_stored_data(
    tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stored, _ = _eval(tiny_run, tmp_path)
    with caplog.at_level(logging.WARNING):
        given, _ = _eval(tiny_run, tmp_path, "data=shapes", *TINY_DATA)
    assert given == pytest.approx(stored)  # the same data: the same scores, no warning
    assert "other records" not in caplog.text


def test_eval_on_other_data_says_so(
    tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other = [
        "data=shapes_hard",
        f"data.root={tmp_path / 'hard'}",
        "data.generator.num_train=24",
        "data.generator.num_val=4",
        "data.generator.num_test=4",
    ]
    with caplog.at_level(logging.WARNING):
        scores, predictions = _eval(tiny_run, tmp_path, *other)
    assert len(predictions) == 4 and "CIDEr-D" in scores
    assert "was trained on other records (data fingerprint" in caplog.text
    assert "references' words are not in" in caplog.text  # counting words: 'two', 'three'


def test_eval_split_batch_size_and_decoding_overrides(tiny_run: Path, tmp_path: Path) -> None:
    _, default = _eval(tiny_run, tmp_path, "decoding.beam_size=2")
    _, batched = _eval(tiny_run, tmp_path, "decoding.beam_size=2", "batch_size=3")
    assert batched == default  # the batch size changes nothing but memory
    _, short = _eval(tiny_run, tmp_path, "decoding.max_len=2", "decoding.beam_size=1")
    assert all(len(p["caption"].split()) <= 2 for p in short)
    _, val = _eval(tiny_run, tmp_path, "split=val")
    assert {p["image_id"][:4] for p in val} == {"val_"}
    _, blocked = _eval(
        tiny_run, tmp_path, "decoding.block_trigrams=true", "decoding.length_penalty=wu",
        "decoding.alpha=0.9", "decoding.suppress_unk=true", "trainer.accelerator=cpu",
    )  # fmt: skip
    for prediction in blocked:
        words = prediction["caption"].split()
        trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
        assert len(trigrams) == len(set(trigrams)) and "<unk>" not in words
    with pytest.raises(ValueError, match=r"decoding.length_penalty"):
        _eval(tiny_run, tmp_path, "decoding.length_penalty=sideways")


def test_eval_samples_prints_that_many_captions(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    _eval(tiny_run, tmp_path, "samples=3")
    out = capsys.readouterr().out
    assert "sample captions" in out and sum("test_000" in line for line in out.splitlines()) == 3
    _eval(tiny_run, tmp_path, "samples=0")
    assert "sample captions" not in capsys.readouterr().out


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_eval_command_line_with_data_and_run_dir(tiny_run: Path, tmp_path: Path) -> None:
    """The README's commands, as a shell runs them (the `data=` one failed on ${seed})."""
    out = tmp_path / "results" / "sat"
    done = subprocess.run(
        [sys.executable, "-m", "captioning.eval", f"ckpt={_ckpt(tiny_run)}", "data=shapes",
         *TINY_DATA, f"paths.root_dir={tiny_run}", f"hydra.run.dir={out}", "samples=0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    scores = json.loads((out / "metrics.json").read_text())
    assert {"BLEU-4", "CIDEr-D"} <= set(scores)


@pytest.fixture
def photos(tmp_path: Path, shapes_dir: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("test_00000.png", "test_00001.png", "test_00002.png"):
        Image.open(shapes_dir / "Images" / name).save(folder / name)
    return folder


def _caption(tiny_run: Path, tmp_path: Path, *overrides: str) -> list[dict]:
    cfg = compose_config("caption", tmp_path, [f"ckpt={_ckpt(tiny_run)}", *overrides])
    return caption_images(cfg)


def test_caption_overrides(
    tiny_run: Path, tmp_path: Path, photos: Path, capsys: pytest.CaptureFixture
) -> None:
    default = _caption(tiny_run, tmp_path, f"images={photos}")
    assert [r["image"] for r in default] == sorted(p.name for p in photos.iterdir())
    assert all(Path(r["figure"]).parent == tmp_path / "caption" for r in default)
    capsys.readouterr()

    one_at_a_time = _caption(
        tiny_run, tmp_path, f"images={photos}", "batch_size=1", "figures=false"
    )
    assert [r["captions"] for r in one_at_a_time] == [r["captions"] for r in default]

    figures = tmp_path / "figures"
    single = _caption(
        tiny_run, tmp_path, f"images={photos / 'test_00001.png'}", f"figure_dir={figures}"
    )
    assert [r["image"] for r in single] == ["test_00001.png"]
    assert Path(single[0]["figure"]) == figures / "test_00001_attention.png"
    assert single[0]["captions"] == default[1]["captions"]

    capsys.readouterr()
    plain = _caption(tiny_run, tmp_path, f"images={photos}", "figures=false", "json=true")
    assert all("figure" not in r for r in plain)
    printed = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert printed == plain

    nbest = _caption(
        tiny_run, tmp_path, f"images={photos}", "figures=false", "decoding.n_best=3",
        "decoding.beam_size=3", "decoding.max_len=3",
    )  # fmt: skip
    for record in nbest:
        assert len(record["captions"]) == 3 and len(set(record["captions"])) == 3
        assert all(len(c.split()) <= 3 for c in record["captions"])
        assert record["scores"] == sorted(record["scores"], reverse=True)


def test_caption_figures_never_replace_a_file(tiny_run: Path, tmp_path: Path, photos: Path) -> None:
    Image.open(photos / "test_00000.png").save(photos / "test_00000.jpg")  # the same stem
    # (sorted: the .jpg comes first and keeps the plain name)
    figures = tmp_path / "figures"
    records = _caption(tiny_run, tmp_path, f"images={photos}", f"figure_dir={figures}")
    names = sorted(Path(r["figure"]).name for r in records)
    assert names == ["test_00000_attention.png", "test_00000_png_attention.png",
                     "test_00001_attention.png", "test_00002_attention.png"]  # fmt: skip
    mine = figures / "test_00001_attention.png"
    mine.write_bytes(b"a figure the user edited")
    with pytest.raises(FileExistsError, match=r"already holds test_00000_attention.png and 3"):
        _caption(tiny_run, tmp_path, f"images={photos}", f"figure_dir={figures}")
    assert mine.read_bytes() == b"a figure the user edited"

"""The browsable report: the page writer on hand-made entries, its collector, its wiring into
``captioning.eval`` (``report=true``) and the page itself in headless Chromium."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image

from captioning.browse import (
    Decoded,
    ReportCollector,
    build_entries,
    per_image_scores,
    write_report,
)
from captioning.browse import page as page_module
from captioning.eval import evaluate
from captioning.metrics import score
from captioning.metrics.grounding import upsample_attention
from captioning.text import Vocabulary
from captioning.viz import box_heat
from tests.helpers import compose_config

HOSTILE = "a red </script><b>bold</b> & \"quoted\" 'it' <!--\u2028-->"
WORDS = HOSTILE.split()  # 8: U+2028 (a JavaScript line break) splits too
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def _attention(rng: np.random.Generator, words: int, regions: int) -> list[list[float]]:
    weights = rng.random((words, regions))
    return np.round(weights / weights.sum(axis=1, keepdims=True), 4).tolist()


def _entries(folder: Path) -> list[dict]:
    """Grid, box and picture-less entries, scores with a gap, a hostile caption."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "red.png")
    Image.new("RGB", (90, 60), (30, 30, 200)).save(folder / "blue.jpg")
    Image.new("RGB", (40, 80), (30, 160, 30)).save(folder / "green.png")
    boxes = [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.1, 0.6, 0.45, 0.95]]
    return [
        {"index": 0, "image_id": "red.png", "image": str(folder / "red.png"),
         "captions": [HOSTILE], "words": WORDS, "attention": _attention(rng, len(WORDS), 16),
         "grid": [4, 4], "references": ["a red square", "it's <red> & round"],
         "scores": {"CIDEr-D": 1.5, "BLEU-4": 0.2}},
        {"index": 1, "image_id": "blue.jpg", "image": str(folder / "blue.jpg"),
         "captions": ["a blue box", "the blue box"], "words": ["a", "blue", "box"],
         "attention": _attention(rng, 3, 3), "boxes": boxes, "references": ["blue boxes"],
         "scores": {"CIDEr-D": 2.5, "BLEU-4": None}},
        {"index": 2, "image_id": "region_only", "image": None, "captions": ["a green thing"],
         "words": ["a", "green", "thing"], "attention": _attention(rng, 3, 3), "boxes": boxes,
         "references": ["a red circle"], "scores": {"CIDEr-D": 0.5, "BLEU-4": 0.7}},
        {"index": 3, "image_id": "green.png", "image": str(folder / "green.png"),
         "captions": ["green"], "words": ["green"], "attention": _attention(rng, 1, 16),
         "grid": [4, 4], "references": ["a green square"],
         "scores": {"CIDEr-D": 2.5, "BLEU-4": 0.9}},
    ]  # fmt: skip


def _raw_data(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    (raw,) = re.findall(
        r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S
    )
    return raw


def _page_data(page: Path) -> dict:
    return json.loads(_raw_data(page))


def test_page_data_equals_the_entries_and_markup_in_captions_stays_text(tmp_path: Path) -> None:
    entries = _entries(tmp_path / "pictures")
    page = write_report(tmp_path / "report", entries, title='Test <&> "captions"')
    assert page == tmp_path / "report" / "report.html"
    data = _page_data(page)
    copies = ["images/00000.png", "images/00001.jpg", None, "images/00003.png"]
    assert data["entries"] == [{**e, "image": c} for e, c in zip(entries, copies, strict=True)]
    assert data["scoreNames"] == ["CIDEr-D", "BLEU-4"]
    text = page.read_text(encoding="utf-8")
    # three scripts end where they should: the error recorder, the data, the page's code
    assert text.count("</script>") == 3 and "<b>bold</b>" not in text
    raw = _raw_data(page)  # no markup can start inside the data, no line break ends a string
    assert not re.search("[<>&\u2028\u2029]", raw) and "\\u003c/script\\u003e" in raw
    assert "<title>Test &lt;&amp;&gt; &quot;captions&quot;</title>" in text
    assert sorted(p.name for p in (tmp_path / "report" / "images").iterdir()) == [
        "00000.png", "00001.jpg", "00003.png",
    ]  # fmt: skip
    assert not list(tmp_path.glob(".report.*"))  # the staging folder was renamed


def test_pictures_are_downsized_upright_copies_and_a_bad_one_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sideways = Image.new("RGB", (800, 400), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show
    sideways.save(tmp_path / "photo.jpg", exif=exif)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    entry = {"index": 0, "image_id": "x", "captions": ["a"], "words": ["a"],
             "attention": [[1.0]], "references": ["a"]}  # fmt: skip
    entries = [{**entry, "image": str(tmp_path / "photo.jpg")}, {**entry, "index": 1,
               "image": str(tmp_path / "broken.jpg")}]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        page = write_report(tmp_path / "report", entries, image_side=100)
    with Image.open(tmp_path / "report" / "images" / "00000.jpg") as copy:
        assert copy.size == (50, 100)  # upright, longer side 100
    assert [e["image"] for e in _page_data(page)["entries"]] == ["images/00000.jpg", None]
    assert "broken.jpg is shown without its picture" in caplog.text


def test_an_existing_folder_is_refused_and_a_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = _entries(tmp_path / "pictures")
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"{folder} exists already"):
        write_report(folder, entries)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"

    def fail(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(page_module, "_copy_image", fail)
    with pytest.raises(OSError, match="disk on fire"):
        write_report(tmp_path / "other", entries)
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".other.*"))


def test_entries_whose_attention_does_not_fit_are_refused(tmp_path: Path) -> None:
    entry = _entries(tmp_path / "pictures")[0]
    with pytest.raises(ValueError, match=f"{len(WORDS)} words but {len(WORDS) - 1} attention rows"):
        write_report(tmp_path / "a", [{**entry, "attention": entry["attention"][:-1]}])
    with pytest.raises(ValueError, match="attention over 16 regions, grid"):
        write_report(tmp_path / "b", [{**entry, "grid": [3, 3]}])
    with pytest.raises(ValueError, match="lacks references"):
        write_report(tmp_path / "c", [{k: v for k, v in entry.items() if k != "references"}])
    assert not list(tmp_path.glob("[abc]"))


def test_collector_keeps_the_words_and_real_regions_of_the_first_images() -> None:
    vocab = Vocabulary(["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "box"])
    module = SimpleNamespace(vocab=vocab)
    collector = ReportCollector("test", limit=3)
    weights = torch.rand(3, 4, 5)  # (B, L, N)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    weights = weights * mask[:, None, :]
    boxes = torch.rand(3, 5, 4) * mask[..., None]
    boxes[2] = 0  # an image without boxes
    outputs = {
        "indices": torch.tensor([2, 5, 0]),  # index 5 is past the limit
        "tokens": torch.tensor([[4, 5, 2, 0], [4, 6, 5, 2], [6, 2, 0, 0]]),
        "weights": weights,
    }
    collector._collect(module, outputs, {"boxes": boxes, "region_mask": mask})
    assert sorted(collector.decoded) == [0, 2]
    first = collector.decoded[2]
    assert first.words == ["a", "red"]
    assert np.allclose(first.attention, weights[0, :2, :3].numpy(), atol=1e-4)
    assert np.allclose(first.boxes, boxes[0, :3].numpy(), atol=1e-4)
    assert collector.decoded[0].words == ["box"] and collector.decoded[0].boxes is None
    assert np.array(collector.decoded[0].attention).shape == (1, 2)
    with pytest.raises(ValueError, match="report_images must be >= 1"):
        ReportCollector("test", limit=0)


def test_per_image_scores_average_to_the_corpus_scores() -> None:
    references = {
        0: ["a red circle on the left", "a red circle"],
        1: ["a blue square", "one blue square in the middle"],
        2: ["a green triangle and a red square", "two shapes"],
    }
    predictions = {0: "a red circle", 1: "a blue triangle", 2: "a green triangle and a square"}
    scores = per_image_scores(references, predictions)
    corpus = score(references, predictions, tokenized=True)
    for name in ("CIDEr-D", "ROUGE-L"):
        assert np.mean([scores[i][name] for i in scores]) == pytest.approx(corpus[name])
    same = "a red circle on the left"
    perfect = per_image_scores({0: [same], 1: ["x y z w"]}, {0: same, 1: "q"})
    assert perfect[0]["BLEU-4"] == pytest.approx(1.0, abs=1e-6) and perfect[1]["BLEU-4"] < 1e-3
    objects = {0: [{"colour": "red", "shape": "circle"}], 1: [], 2: []}
    with_objects = per_image_scores(references, predictions, objects)
    assert with_objects[0]["object_F1"] == 1.0 and with_objects[1]["object_F1"] == 0.0


def test_build_entries_pairs_each_image_with_its_file_and_n_best(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    decoded = {1: Decoded(["a", "b"], [[0.5, 0.5], [1.0, 0.0]], None)}
    entries = build_entries(
        decoded,
        predictions={0: "x", 1: "a b"},
        references={0: ["x"], 1: ["a b", "a c"]},
        image_ids=["first", "second"],
        image_paths=[tmp_path / "a.png", tmp_path / "missing.png"],
        grid=(1, 2),
        nbest={1: ["a b", "a c"]},
    )
    (entry,) = entries
    assert entry["index"] == 1 and entry["image_id"] == "second"
    assert entry["image"] is None  # its file does not exist
    assert entry["captions"] == ["a b", "a c"] and entry["grid"] == [1, 2]
    assert entry["references"] == ["a b", "a c"]
    assert set(entry["scores"]) >= {"CIDEr-D", "BLEU-4", "ROUGE-L"}


# ---------------------------------------------------------------------- eval report=true


def test_eval_report_has_a_card_per_test_image_with_its_n_best_and_each_words_attention(
    tiny_run: Path, tmp_path: Path
) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt={ckpt}", "samples=0", "report=true", "decoding.n_best=3"]  # of beam 3
    cfg = compose_config("eval", tiny_run, overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "eval")
    scores = evaluate(cfg)
    folder = tmp_path / "eval" / "report"
    data = _page_data(folder / "report.html")
    predictions = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    entries = data["entries"]
    assert len(entries) == len(predictions) == 16  # TINY_SHAPES num_test
    assert [e["index"] for e in entries] == list(range(16))
    assert [e["captions"][0] for e in entries] == [p["caption"] for p in predictions]
    assert [e["image_id"] for e in entries] == [p["image_id"] for p in predictions]
    nbest = json.loads((tmp_path / "eval" / "predictions_nbest.json").read_text())
    assert [e["captions"] for e in entries] == [n["captions"] for n in nbest]
    assert all(len(e["captions"]) == 3 for e in entries)
    for entry in entries:
        assert entry["words"] == entry["captions"][0].split()
        assert entry["grid"] is not None and entry["boxes"] is None
        regions = entry["grid"][0] * entry["grid"][1]
        assert len(entry["attention"]) == len(entry["words"])
        assert all(len(row) == regions for row in entry["attention"])
        assert all(abs(sum(row) - 1) < 1e-2 for row in entry["attention"])
        assert entry["image"] == f"images/{entry['index']:05d}.png"
        assert entry["references"]
    assert len(list((folder / "images").iterdir())) == 16
    cider = [e["scores"]["CIDEr-D"] for e in entries]
    assert np.mean(cider) == pytest.approx(scores["CIDEr-D"], rel=1e-6)
    assert data["summary"]["split"] == "test" and data["summary"]["images"] == "16 of 16"
    assert {"BLEU-4", "ROUGE-L", "object_F1"} <= set(data["scoreNames"])

    page_bytes = (folder / "report.html").read_bytes()
    written = (tmp_path / "eval" / "predictions.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"report=true: .* exists already"):
        evaluate(cfg)
    assert (folder / "report.html").read_bytes() == page_bytes  # the report is left as it was
    assert (tmp_path / "eval" / "predictions.json").stat().st_mtime_ns == written  # no decoding


# ---------------------------------------------------------------------- in a real browser


class _Dom(HTMLParser):
    """The attributes of <html>, of each card (in DOM order) and of its img and canvas."""

    def __init__(self) -> None:
        super().__init__()
        self.root: dict = {}
        self.cards: list[dict] = []
        self.in_template = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        if tag == "template":
            self.in_template += 1
        elif tag == "html":
            self.root = attributes
        elif not self.in_template and tag == "article":
            self.cards.append({"card": attributes})
        elif not self.in_template and tag in ("img", "canvas") and self.cards:
            self.cards[-1][tag] = attributes

    def handle_endtag(self, tag: str) -> None:
        if tag == "template":
            self.in_template -= 1


def _browser() -> str:
    for name in BROWSERS:
        if found := shutil.which(name):
            return found
    pytest.skip(f"no Chromium binary on PATH (looked for {', '.join(BROWSERS)}): the page is "
                "checked in a real browser only where one is installed (apt-get install chromium)")  # fmt: skip


def _open(browser: str, page: Path, hash_: str, height: int = 8000) -> _Dom:
    done = subprocess.run(
        [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
         f"--window-size=1280,{height}", "--virtual-time-budget=10000", "--dump-dom",
         f"{page.as_uri()}#{hash_}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    assert dom.root.get("data-ready") == "true", done.stdout[:2000]
    assert json.loads(dom.root["data-errors"]) == []  # no JavaScript error
    return dom


def test_the_page_in_chromium_loads_every_picture_sorts_filters_and_draws_attention(
    tmp_path: Path,
) -> None:
    browser = _browser()
    entries = _entries(tmp_path / "pictures")
    page = write_report(tmp_path / "report", entries)
    with_pictures = [e for e in entries if e["image"] is not None]

    # sorted by CIDEr-D, high to low, ties by index; the hostile caption's word 2 pinned
    dom = _open(browser, page, "sort=CIDEr-D&order=desc&show=0.2")
    assert dom.root["data-images-expected"] == dom.root["data-images-loaded"] == "3"
    assert dom.root["data-images-failed"] == "0" and dom.root["data-shown"] == "4"
    assert [int(c["card"]["data-index"]) for c in dom.cards] == [1, 3, 0, 2]
    widths = {int(c["card"]["data-index"]): c["img"].get("data-natural-width") for c in dom.cards
              if "img" in c}  # fmt: skip
    assert widths == {0: "64", 1: "90", 3: "40"} and len(widths) == len(with_pictures)
    canvas = next(c["canvas"] for c in dom.cards if c["card"]["data-index"] == "0")
    row = torch.tensor(entries[0]["attention"][2])
    assert canvas["data-word"] == "2" and int(canvas["data-top"]) == int(row.argmax())
    assert canvas["data-size"] == "256x256"
    heat = upsample_attention(row, (4, 4), (256, 256))
    x, y = map(int, canvas["data-peak"].split(","))
    assert float(heat[y, x]) == pytest.approx(float(heat.max()), abs=1e-6)  # bilinear as torch's

    # low to high: the image without a BLEU-4 last; a text filter and a score range
    dom = _open(browser, page, "sort=BLEU-4&order=asc")
    assert [int(c["card"]["data-index"]) for c in dom.cards] == [0, 2, 3, 1]
    dom = _open(browser, page, "q=RED&range=BLEU-4&min=0.5&show=2.1")
    shown = [int(c["card"]["data-index"]) for c in dom.cards if "hidden" not in c["card"]]
    assert shown == [2] and dom.root["data-shown"] == "1"  # 'red' in a reference, BLEU-4 0.7
    canvas = dom.cards[2]["canvas"]  # the picture-less card: its boxes drawn on a square
    row = torch.tensor(entries[2]["attention"][1])
    assert canvas["data-top"] == str(int(row.argmax())) and canvas["data-size"] == "256x256"
    heat = box_heat(row, torch.tensor(entries[2]["boxes"]), (256, 256))
    x, y = map(int, canvas["data-peak"].split(","))
    assert float(heat[y, x]) == pytest.approx(float(heat.max()), abs=1e-6)


def test_the_page_in_chromium_loads_pictures_as_their_cards_come_into_view(tmp_path: Path) -> None:
    browser = _browser()
    (entry,) = [e for e in _entries(tmp_path / "pictures") if e["image_id"] == "green.png"]
    entries = [{**entry, "index": i, "image_id": f"green_{i}"} for i in range(60)]
    page = write_report(tmp_path / "report", entries)
    dom = _open(browser, page, "", height=900)  # two cards a row, ~230 px each
    loaded = int(dom.root["data-images-loaded"])
    assert dom.root["data-images-expected"] == "60" and 0 < loaded < 30
    dom = _open(browser, page, "show=59.0", height=900)  # the last card, scrolled to
    loaded = {c["card"]["data-index"] for c in dom.cards if c["img"].get("data-natural-width")}
    assert "59" in loaded and "0" not in loaded and dom.cards[-1]["canvas"]["data-word"] == "0"

"""``write_report``: one self-contained folder that shows every entry as a card in a browser.

The page needs no network: its CSS and JavaScript are inline, the entries are inline JSON, and
the pictures are downsized copies in ``images/``. Attention is drawn by the page on a canvas
over the picture when a word is hovered or clicked, so there is no image file per word.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from captioning.files import strict

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
IMAGE_FOLDER = "images"
ENTRY_KEYS = ("index", "image_id", "image", "captions", "words", "attention", "references")


def _asset(name: str) -> str:
    return resources.files("captioning.browse").joinpath(name).read_text(encoding="utf-8")


def inline_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&``
    can end the element or start markup, and JavaScript's line separators are escaped."""
    text = json.dumps(strict(data), allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _check_entry(position: int, entry: Mapping[str, Any]) -> None:
    missing = [key for key in ENTRY_KEYS if key not in entry]
    if missing:
        raise ValueError(f"report entry {position} lacks {', '.join(missing)}")
    words, attention = entry["words"], entry["attention"]
    if len(attention) != len(words):
        raise ValueError(
            f"report entry {position} ({entry['image_id']}): {len(words)} words but "
            f"{len(attention)} attention rows (one per word)"
        )
    boxes, grid = entry.get("boxes"), entry.get("grid")
    regions = {len(row) for row in attention}
    if len(regions) > 1:
        raise ValueError(f"report entry {position}: attention rows of lengths {sorted(regions)}")
    if regions and boxes is not None and regions != {len(boxes)}:
        raise ValueError(
            f"report entry {position}: attention over {regions.pop()} regions, {len(boxes)} boxes"
        )
    if regions and grid is not None and regions != {grid[0] * grid[1]}:
        raise ValueError(
            f"report entry {position}: attention over {regions.pop()} regions, grid {grid}"
        )


def _copy_image(source: Path, folder: Path, stem: str, side: int) -> str | None:
    """A copy of ``source`` at most ``side`` px on its longer side (EXIF orientation applied):
    PNG stays PNG (lossless), anything else becomes JPEG. None, with a warning, when it cannot
    be read: the card then shows the attention without the picture."""
    try:
        with Image.open(source) as opened:
            image = ImageOps.exif_transpose(opened)
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            lossless = opened.format == "PNG"
            name = f"{stem}.png" if lossless else f"{stem}.jpg"
            has_alpha = image.mode in ("RGBA", "LA") or "transparency" in image.info
            converted = image.convert("RGBA" if lossless and has_alpha else "RGB")
            if lossless:
                converted.save(folder / name, "PNG", optimize=True)
            else:
                converted.save(folder / name, "JPEG", quality=85, optimize=True)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
        log.warning("report: %s is shown without its picture (%s)", source, error)
        return None
    return f"{IMAGE_FOLDER}/{name}"


def write_report(
    folder: str | os.PathLike,
    entries: Sequence[Mapping[str, Any]],
    title: str = "Captions",
    summary: Mapping[str, Any] | None = None,
    image_side: int = 384,
) -> Path:
    """Write ``folder/report.html`` and ``folder/images/``; returns the page's path.

    ``folder`` must not exist: a report never replaces files. Everything is written into a
    temporary folder beside it, renamed to ``folder`` once complete, so an interrupted run
    leaves no half report under that name.

    Args:
        folder: the report folder to create (eval's is ``<run folder>/report``).
        entries: one dict per card, shown in this order until the page sorts them:

            - ``index`` (int): the image's index in the split;
            - ``image_id`` (str): its id in the data (the file name for Flickr layouts);
            - ``image`` (str | None): the picture's file, copied downsized into ``images/``;
              None when there is none (region features without image files);
            - ``captions`` (list[str]): the generated captions, best first (one, or the
              n-best list);
            - ``words`` (list[str]): the first caption's words, one per attention row;
            - ``attention`` (list[list[float]]): (len(words), N) each word's attention over
              the N regions;
            - ``grid`` ([h, w], optional): the encoder's region grid, h * w = N, row-major;
            - ``boxes`` (list of [x0, y0, x1, y1], optional): the N regions' boxes as
              fractions of the picture's width and height (region inputs); the page draws the
              grid or the boxes, neither when both are absent;
            - ``references`` (list[str]): the reference captions;
            - ``scores`` (dict[str, float | None], optional): per-image scores (``CIDEr-D``,
              ``BLEU-4``, ...), the keys the page filters and sorts by.

        title: the page's heading.
        summary: shown under the heading as ``key: value`` (the split, the checkpoint, the
            split's scores...).
        image_side: longest side in px of the copied pictures.

    The page's inline JSON (``<script id="report-data">``) holds ``title``, ``summary``,
    ``scoreNames`` and ``entries``: the entries as given, each ``image`` replaced by its copy's
    path relative to the page (``images/00003.png``) or None.
    """
    folder = Path(folder)
    if folder.exists():
        raise FileExistsError(
            f"{folder} exists already: a report never replaces files; remove it or write the "
            "report into another run folder (hydra.run.dir=...)"
        )
    for position, entry in enumerate(entries):
        _check_entry(position, entry)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        (staging / IMAGE_FOLDER).mkdir()
        shown = []
        for position, entry in enumerate(entries):
            image = entry["image"]
            copy = None
            if image is not None:
                copy = _copy_image(
                    Path(image), staging / IMAGE_FOLDER, f"{position:05d}", image_side
                )
            shown.append({**entry, "image": copy})
        score_names: list[str] = []
        for entry in entries:
            score_names += [k for k in entry.get("scores", {}) if k not in score_names]
        data = {
            "title": title,
            "summary": dict(summary or {}),
            "scoreNames": score_names,
            "entries": shown,
        }
        parts = {
            "TITLE": html.escape(title),
            "CSS": _asset("page.css"),
            "JS": _asset("page.js"),
            "DATA": inline_json(data),
        }  # one pass: nothing substituted is read again as a placeholder
        page = re.sub(r"@(TITLE|CSS|JS|DATA)@", lambda m: parts[m[1]], _asset("page.html"))
        (staging / REPORT_FILE).write_text(page, encoding="utf-8")
        if folder.exists():  # made while this report was written
            raise FileExistsError(f"{folder} appeared while the report was written; kept it")
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("report of %d images: %s", len(entries), folder / REPORT_FILE)
    return folder / REPORT_FILE

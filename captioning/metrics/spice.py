"""SPICE (Anderson et al. 2016) through pycocoevalcap's Java scorer, when it can run.

SPICE parses captions into scene graphs with Stanford CoreNLP 3.6.0, which pycocoevalcap does
not ship and fetches on first use: here nothing is downloaded, so ``metrics.spice=true`` asks
first (:func:`spice_problem`) and a run stops before any work with one line saying what to
download and where to put it. The jar runs as coco-caption runs it (``-subset -silent``, the
parse cache under ``~/.cache/captioning/spice``), on files in a temporary folder of ours, never
in the installed package.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CORENLP_URL = "https://nlp.stanford.edu/software/stanford-corenlp-full-2015-12-09.zip"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class SpiceUnavailable(RuntimeError):
    """SPICE was asked for but Java, the SPICE jar or Stanford CoreNLP is missing."""


def spice_folder() -> Path | None:
    """The folder of pycocoevalcap's ``spice-1.0.jar`` (None: pycocoevalcap is not installed)."""
    spec = importlib.util.find_spec("pycocoevalcap")  # a namespace package: no __file__
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "spice"


def spice_problem() -> str | None:
    """Why SPICE cannot run here, in one line; None when it can."""
    if shutil.which("java") is None:
        return (
            "metrics.spice=true needs Java on PATH (e.g. apt-get install default-jre-headless); "
            "the other scores need no Java: drop metrics.spice"
        )
    folder = spice_folder()
    if folder is None or not (folder / "spice-1.0.jar").is_file():
        return "metrics.spice=true needs pycocoevalcap's spice-1.0.jar: pip install pycocoevalcap"
    missing = [name for name in CORENLP_JARS if not (folder / "lib" / name).is_file()]
    if missing:
        return (
            f"metrics.spice=true needs Stanford CoreNLP 3.6.0 (never downloaded for you): "
            f"get {CORENLP_URL}, and put {' and '.join(missing)} from it into {folder / 'lib'}"
        )
    return None


def check_spice(enabled: bool) -> None:
    """Stop before any work when ``metrics.spice=true`` cannot run (the message says why)."""
    if enabled:
        problem = spice_problem()
        if problem is not None:
            raise SpiceUnavailable(problem)


def spice_score(
    references: Mapping[Any, Sequence[str]],
    predictions: Mapping[Any, str],
    memory: str = "8G",
) -> tuple[float, dict[Any, float]]:
    """SPICE F-score of the corpus (mean over images) and of each image, as coco-caption's
    (an image the jar gives no score, e.g. an empty caption, is NaN and left out of the mean).

    Captions go to the jar as given (coco-caption scores PTB-tokenised ones). Raises
    :class:`SpiceUnavailable` when it cannot run and ``RuntimeError`` naming the jar's output
    when it fails.
    """
    check_spice(True)
    folder = spice_folder()
    assert folder is not None  # check_spice found it
    keys = list(predictions)
    items = [
        {"image_id": i, "test": predictions[key], "refs": list(references[key])}
        for i, key in enumerate(keys)
    ]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "captioning" / "spice"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="captioning-spice-") as tmp:
        source, target = Path(tmp) / "input.json", Path(tmp) / "output.json"
        source.write_text(json.dumps(items))
        command = ["java", "-jar", f"-Xmx{memory}", str(folder / "spice-1.0.jar"), str(source)]
        command += ["-cache", str(cache), "-out", str(target), "-subset", "-silent"]
        run = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
        if run.returncode != 0 or not target.is_file():
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"SPICE failed (exit {run.returncode}): {' | '.join(tail)}")
        results = json.loads(target.read_text())
    per_image: dict[Any, float] = {}
    for item in results:
        value = item["scores"]["All"]["f"]
        per_image[keys[int(item["image_id"])]] = float("nan") if value is None else float(value)
    values = [v for v in per_image.values() if v == v]
    return (sum(values) / len(values) if values else float("nan")), per_image

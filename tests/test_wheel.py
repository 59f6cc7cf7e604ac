"""The built wheel carries the whole config tree: installed non-editable, every entry point runs
from an empty folder, with data and outputs under that folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.generator.num_train=24",
    "data.generator.num_val=4",
    "data.generator.num_test=4",
    "trainer.max_epochs=1",
    "logger=csv",
    "samples=0",
]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_installed_wheel_trains_evaluates_and_captions_from_an_empty_folder(
    tmp_path: Path,
) -> None:
    wheels, target, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAPTIONING_ROOT")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(ROOT)], tmp_path, env)  # fmt: skip
    (wheel,) = wheels.glob("captioning-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "captioning/conf/train.yaml" in names
    assert "captioning/conf/experiment/show_attend_tell_shapes.yaml" in names
    assert "captioning/text/tokenizer.py" in names  # every subpackage, listed in pyproject
    assert "captioning/browse/page.js" in names  # the report page's assets
    assert not [
        n for n in names if n.startswith(("conf/", "tests/", "experiments/", "benchmarks/"))
    ]
    assert "captioning/conf/bench.yaml" not in names  # the benchmarks' settings stay with them
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
          str(wheel)], tmp_path, env)  # fmt: skip

    env["PYTHONPATH"] = str(target)  # ahead of the checkout's editable install
    where = _run(
        [sys.executable, "-c", "import captioning; print(captioning.__file__, captioning.CONFIG_DIR)"],
        work, env,
    ).stdout.split()  # fmt: skip
    assert where[0].startswith(str(target)) and where[1] == str(target / "captioning" / "conf")

    _run([sys.executable, "-m", "captioning.train", "run_name=w", *TINY], work, env)
    ckpt = work / "outputs" / "w" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file() and (work / "data" / "shapes" / "meta.json").is_file()
    assert json.loads((work / "outputs" / "w" / "test_metrics.json").read_text())["CIDEr-D"] >= 0

    scripts = target / "bin"
    images = work / "data" / "shapes" / "Images" / "test_00000.png"
    commands = [  # independent of each other: run side by side (start-up is most of each)
        [str(scripts / "captioning-eval"), f"ckpt={ckpt}", "hydra.run.dir=ev", "samples=0"],
        [str(scripts / "captioning-caption"), f"ckpt={ckpt}", f"images={images}",
         "hydra.run.dir=cap", "json=true"],
        [sys.executable, "-m", "captioning.train", "experiment=show_attend_tell_shapes",
         "run_name=preset", "trainer.fast_dev_run=true", *TINY],
    ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=3) as pool:
        _, out, _ = pool.map(lambda command: _run(command, work, env), commands)
    assert {"BLEU-4", "CIDEr-D"} <= set(json.loads((work / "ev" / "metrics.json").read_text()))
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["image"] == "test_00000.png" and (work / "cap" / record["figure"]).is_file()

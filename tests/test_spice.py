"""SPICE: the one-line message when it cannot run, and how the jar's output is read."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from captioning.metrics import spice


def test_without_java_the_message_says_to_install_it(monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    problem = spice.spice_problem()
    assert problem is not None and "Java" in problem and "metrics.spice" in problem
    with pytest.raises(spice.SpiceUnavailable, match="default-jre-headless"):
        spice.check_spice(True)
    spice.check_spice(False)  # not asked for: nothing to check


def test_without_corenlp_the_message_names_the_jars_the_url_and_the_folder(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    (tmp_path / "spice-1.0.jar").write_bytes(b"")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "stanford-corenlp-3.6.0.jar").write_bytes(b"")
    monkeypatch.setattr(spice, "spice_folder", lambda: tmp_path)
    problem = spice.spice_problem()
    assert problem is not None and "\n" not in problem
    assert "stanford-corenlp-3.6.0-models.jar" in problem
    assert "stanford-corenlp-3.6.0.jar and" not in problem  # only the missing one is named
    assert spice.CORENLP_URL in problem and str(tmp_path / "lib") in problem
    with pytest.raises(spice.SpiceUnavailable):
        spice.spice_score({1: ["a dog"]}, {1: "a dog"})


def test_the_jar_runs_on_our_temporary_files_and_its_scores_are_read_per_image(
    monkeypatch, tmp_path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    monkeypatch.setattr(spice, "spice_folder", lambda: tmp_path)
    monkeypatch.setattr(spice, "spice_problem", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = {}

    def fake_run(command, cwd, **kwargs):
        source = Path(command[4])
        seen["items"] = json.loads(source.read_text())
        seen["command"] = command
        target = Path(command[command.index("-out") + 1])
        scores = [{"image_id": 0, "scores": {"All": {"f": 0.25}}},
                  {"image_id": 1, "scores": {"All": {"f": None}}},
                  {"image_id": 2, "scores": {"All": {"f": 0.75}}}]  # fmt: skip
        target.write_text(json.dumps(scores))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    refs = {"x": ["a dog"], "y": ["a cat", "the cat"], "z": ["a bird"]}
    corpus, per_image = spice.spice_score(refs, {"x": "a dog", "y": "", "z": "a bird"})
    assert seen["items"][1] == {"image_id": 1, "test": "", "refs": ["a cat", "the cat"]}
    assert "-subset" in seen["command"] and str(tmp_path / "cache") in " ".join(seen["command"])
    assert per_image["x"] == 0.25 and per_image["z"] == 0.75 and per_image["y"] != per_image["y"]
    assert corpus == pytest.approx(0.5)


def test_metric_settings_are_checked_naming_the_key(monkeypatch) -> None:
    from captioning.checks import ConfigError, check_metric_settings

    check_metric_settings({"meteor_backend": "none", "spice": False})
    with pytest.raises(ConfigError, match=r"metrics.meteor_backend='jav': expected one of"):
        check_metric_settings({"meteor_backend": "jav"})
    with pytest.raises(ConfigError, match=r"metrics.spice='yes'"):
        check_metric_settings({"spice": "yes"})
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="meteor_backend=python gives the same scores"):
        check_metric_settings({"meteor_backend": "java"})
    with pytest.raises(ConfigError, match=r"metrics\.spice=true needs Java"):
        check_metric_settings({"spice": True})

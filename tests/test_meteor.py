"""METEOR in Python against METEOR 1.5's Java scorer as coco-caption runs it, and its cache.

The expected values in ``fixtures/meteor_cases.json`` were produced by the Java tool
(``tests/fixtures/make_meteor_fixtures.py``); the tests need neither Java nor its output here.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from captioning.metrics import meteor_score, score
from captioning.metrics.meteor import resources

FIXTURE = Path(__file__).parent / "fixtures" / "meteor_cases.json"
CASES = json.loads(FIXTURE.read_text(encoding="utf-8"))["corpora"]
TOLERANCE = 1e-6


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_the_java_scorer(name: str) -> None:
    case = CASES[name]
    corpus, segments = meteor_score(
        case["references"], case["predictions"], tokenized=case["tokenized"]
    )
    java = case["java"]
    assert corpus == pytest.approx(java["corpus"], abs=TOLERANCE, rel=0)
    assert list(segments) == list(java["segments"])
    assert list(segments.values()) == pytest.approx(
        list(java["segments"].values()), abs=TOLERANCE, rel=0
    )


def test_the_corpus_score_is_not_the_mean_of_the_segments() -> None:
    case = CASES["synonym"]  # 0.668 against a mean of 0.894: the statistics are summed
    corpus, segments = meteor_score(case["references"], case["predictions"], tokenized=True)
    assert corpus == pytest.approx(case["java"]["corpus"], abs=TOLERANCE, rel=0)
    assert abs(corpus - np.mean(list(segments.values()))) > 0.1


def test_an_empty_prediction_scores_zero_and_leaves_the_others() -> None:
    case = CASES["generated"]
    ids = list(case["predictions"])[:40]
    references = {k: case["references"][k] for k in ids}
    predictions = {k: case["predictions"][k] for k in ids}
    predictions[ids[3]] = ""
    _, segments = meteor_score(references, predictions, tokenized=True)
    assert segments[ids[3]] == 0.0
    for key in ids:
        if key != ids[3]:
            expected = case["java"]["segments"][key]
            assert segments[key] == pytest.approx(expected, abs=TOLERANCE, rel=0)


def test_score_starts_no_subprocess(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("METEOR started a process")

    for name in ("Popen", "run", "call", "check_output"):
        monkeypatch.setattr(subprocess, name, refuse)
    for name in ("posix_spawn", "posix_spawnp", "fork", "system", "execv", "execvp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    case = CASES["stem"]
    scores = score(case["references"], case["predictions"], tokenized=True)
    assert scores["METEOR"] == pytest.approx(case["java"]["corpus"], abs=TOLERANCE, rel=0)


@pytest.mark.slow
def test_the_java_backend_equals_the_python_one() -> None:
    if shutil.which("java") is None:
        pytest.skip("meteor='java' needs Java on PATH")
    pytest.importorskip("pycocoevalcap.meteor.meteor")
    case = CASES["norm"]
    java = score(case["references"], case["predictions"], tokenized=True, meteor="java")
    ours = score(case["references"], case["predictions"], tokenized=True, meteor="python")
    assert ours.keys() == java.keys()
    assert ours["METEOR"] == pytest.approx(java["METEOR"], abs=TOLERANCE, rel=0)


# ---------------------------------------------------------------------- data and cache


@pytest.fixture
def tiny_sources(tmp_path: Path) -> tuple[Path, Path]:
    """A jar and a paraphrase table in METEOR's formats, a few entries each."""
    jar = tmp_path / "meteor-1.5.jar"
    with zipfile.ZipFile(jar, "w") as archive:
        archive.writestr("function/english.words", "a\nthe\non\n")
        archive.writestr("nonbreaking/english.prefixes", "# comment\nMr\nNo #NUMERIC_ONLY#\n")
        archive.writestr("synonym/english.synsets", "dog\n1 2\nhound\n2\nsofa\n7\ncouch\n7\n")
        archive.writestr("synonym/english.exceptions", "mouse\nmice\n")
    table = tmp_path / "paraphrase-en.gz"
    with gzip.open(table, "wt", encoding="utf-8") as out:
        out.write("0.5\nsits on\nis sitting on\n0.2\nsits on\nsat on\n0.1\nbig dog\nhound\n")
    return jar, table


def test_the_cache_is_read_back_without_parsing(tiny_sources, tmp_path: Path, monkeypatch) -> None:
    jar, table = tiny_sources
    folder = tmp_path / "cache"
    first = resources.load_tables(jar, table, folder)
    (cached,) = folder.glob("tables-*.bin")
    monkeypatch.setattr(resources, "build_tables", _no_parsing)
    second = resources.load_tables(jar, table, folder)
    assert second.synsets("dog") == first.synsets("dog") == frozenset({1, 2})
    assert second.synsets("cat") == frozenset()
    assert second.prefixes == {"Mr": resources.ANY, "No": resources.NUMERIC_ONLY}
    assert second.exceptions == {"mice": ["mouse"]} and "the" in second.function_words
    assert len(second.ref_keys) == 2 and second.ref_offsets[-1] == 3  # 2 phrases, 3 entries
    entries = _entries(second, "sits on")
    assert entries == [(_key("is sitting on"), 3), (_key("sat on"), 2)]  # file order
    assert _entries(second, "big dog") == [(_key("hound"), 1)]
    assert cached.exists()


def test_a_truncated_or_damaged_cache_is_rebuilt(tiny_sources, tmp_path: Path, caplog) -> None:
    jar, table = tiny_sources
    folder = tmp_path / "cache"
    resources.load_tables(jar, table, folder)
    (cached,) = folder.glob("tables-*.bin")
    whole = cached.read_bytes()
    for damaged in (whole[: len(whole) // 2], whole[:-1] + bytes([whole[-1] ^ 1]), b"junk"):
        cached.write_bytes(damaged)
        tables = resources.load_tables(jar, table, folder)
        assert _entries(tables, "big dog") == [(_key("hound"), 1)]
        assert cached.read_bytes() == whole
    assert "unusable" in caplog.text


def test_missing_data_names_the_file_and_the_fix(tiny_sources, tmp_path: Path, monkeypatch):
    jar, _ = tiny_sources
    with pytest.raises(FileNotFoundError, match=r"nothere\.gz.*pip install"):
        resources.load_tables(jar, tmp_path / "nothere.gz", tmp_path / "cache")
    spec = SimpleNamespace(submodule_search_locations=[str(tmp_path / "empty")])
    monkeypatch.setattr(resources.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(FileNotFoundError, match=r"empty/meteor/meteor-1\.5\.jar.*pycocoevalcap"):
        resources.pycocoevalcap_files()
    monkeypatch.setattr(resources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install 'pycocoevalcap>=1\.2'"):
        resources.pycocoevalcap_files()


def test_phrase_hashes_agree_between_the_table_and_a_sentence() -> None:
    data = b"0.1\nsits on\nis sitting on\n"
    keys, lengths = resources._hash_lines(data)
    assert lengths.tolist() == [1, 2, 3]
    assert keys.tolist() == [_key("0.1"), _key("sits on"), _key("is sitting on")]


def _no_parsing(*args):
    raise AssertionError("the tables were parsed again instead of read from the cache")


def _key(phrase: str) -> int:
    return resources.phrase_hash([resources.word_hash(w) for w in phrase.split()])


def _entries(tables: resources.Tables, phrase: str) -> list[tuple[int, int]]:
    row = int(np.searchsorted(tables.ref_keys, np.uint64(_key(phrase))))
    assert tables.ref_keys[row] == _key(phrase)
    first, stop = tables.ref_offsets[row], tables.ref_offsets[row + 1]
    return list(
        zip(
            tables.par_keys[first:stop].tolist(),
            tables.par_lengths[first:stop].tolist(),
            strict=True,
        )
    )

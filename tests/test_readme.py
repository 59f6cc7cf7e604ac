"""Every command the README and docs/ show composes against today's configs (no drift).

Each ``python -m captioning.<entry>`` / ``captioning-<entry>`` command, each
``python -m benchmarks`` and each ``make train|bench ARGS="..."``, in code blocks and in
inline code, is parsed like a shell line; its Hydra overrides (every combination of a ``-m``
sweep) are composed with the entry point's config, as the command line would. A renamed
config key, group or option, or a module that is no longer an entry point, fails here with
the document and line that use it. ``captioning.report`` commands are parsed by the report's
own argument parser.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException

from captioning.report import build_parser
from tests.helpers import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
# make bench's config: beside the benchmarks (outside the package), else in conf/
BENCH_DIR = str(ROOT / "benchmarks") if (ROOT / "benchmarks" / "bench.yaml").is_file() else CONF_DIR
ENTRIES = {  # entry point: (config folder, config name)
    "train": (CONF_DIR, "train"),
    "eval": (CONF_DIR, "eval"),
    "caption": (CONF_DIR, "caption"),
    "extract": (CONF_DIR, "extract"),
    "bench": (BENCH_DIR, "bench"),
}
PACKAGE_ENTRIES = {"train", "eval", "caption", "extract", "report"}  # python -m captioning.<entry>
COMMAND = re.compile(r"(?:python -m captioning\.|captioning-)(\w+)(.*)")
BENCH = re.compile(r"python -m benchmarks\b(.*)")
MAKE = re.compile(r"\bmake (train|bench)\b(.*)")  # the Makefile passes $(ARGS) on
# placeholder values the documents use where the reader picks one
PLACEHOLDERS = {"experiment=NAME": "experiment=show_attend_tell_shapes", "seed=N": "seed=1"}


def _arguments(text: str) -> list[str]:
    # placeholders such as <run> stand for a name the reader fills in
    words = shlex.split(re.sub(r"<(\w+)>", r"\1", text))
    # the shell expands $HOME; it does not expand ~ inside key=~/path
    return [PLACEHOLDERS.get(w, os.path.expandvars(w)) for w in words]


def _make_arguments(text: str) -> list[str]:
    """The ARGS="..." of a make line, split as the recipe's shell splits them."""
    found = [w[len("ARGS=") :] for w in shlex.split(text) if w.startswith("ARGS=")]
    return _arguments(found[0]) if found else []


def code_pieces(text: str) -> list[tuple[int, str]]:
    """(line, text) of every code-block line (continuations joined) and every inline code span."""
    found = []
    lines = text.splitlines()
    in_block = False
    number = 0
    while number < len(lines):
        line, start = lines[number], number + 1
        number += 1
        if line.startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            while line.endswith("\\") and number < len(lines):  # shell continuation lines
                line = line[:-1] + " " + lines[number]
                number += 1
            found.append((start, line))
        else:
            found.extend((start, piece) for piece in re.findall(r"`([^`]+)`", line))
    return found


def readme_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(line, entry point, arguments) of every captioning command in ``text``."""
    found = []
    for line, piece in code_pieces(text):
        command = piece.split(" #")[0]
        if match := COMMAND.search(command):
            name = match.group(1)  # a module that is no entry point (stale) fails its test
            entry = name if name in PACKAGE_ENTRIES else f"captioning.{name}"
            found.append((line, entry, _arguments(match.group(2))))
        elif bench := BENCH.search(command):
            found.append((line, "bench", _arguments(bench.group(1))))
        elif make := MAKE.search(command):
            found.append((line, make.group(1), _make_arguments(make.group(2))))
    return found


def combinations(arguments: list[str]) -> list[list[str]]:
    """The override lists a command runs: one, or every job of a ``-m`` grid sweep."""
    overrides = [a for a in arguments if a not in ("-m", "--multirun")]
    if len(overrides) == len(arguments):
        return [overrides]
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()]
        if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]
    return [list(job) for job in itertools.product(*choices)]


def compose_entry(entry: str, overrides: list[str]) -> None:
    """Compose an entry point's config with ``overrides``, as its command line would."""
    config_dir, name = ENTRIES[entry]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        compose(name, overrides=overrides, return_hydra_config=True)


def _config_dir(arguments: list[str]) -> tuple[list[str], str | None]:
    """The arguments without ``--config-dir DIR`` (Hydra's flag), and that DIR."""
    rest, directory = [], None
    words = iter(arguments)
    for word in words:
        if word in ("--config-dir", "-cd"):
            directory = next(words, None)
        elif word.startswith("--config-dir="):
            directory = word.split("=", 1)[1]
        else:
            rest.append(word)
    return rest, directory


COMMANDS = [
    (document.relative_to(ROOT).as_posix(), *command)
    for document in DOCUMENTS
    for command in readme_commands(document.read_text(encoding="utf-8"))
]


def test_the_documents_show_commands_of_every_entry_point() -> None:
    in_readme = {entry for document, _, entry, _ in COMMANDS if document == "README.md"}
    assert {"train", "eval", "caption", "report"} <= in_readme
    assert {entry for _, _, entry, _ in COMMANDS} == {*ENTRIES, "report"}
    assert any("-m" in arguments for _, _, _, arguments in COMMANDS)  # a sweep is among them
    assert {document for document, *_ in COMMANDS} >= {"README.md", "docs/training.md"}


@pytest.mark.parametrize(
    ("document", "line", "entry", "arguments"),
    COMMANDS,
    ids=[f"{c[0]}:{c[1]}" for c in COMMANDS],
)
def test_documented_command_composes(
    document: str, line: int, entry: str, arguments: list[str]
) -> None:
    where = f"{document} line {line}: {entry} {' '.join(arguments)}"
    if entry not in {*ENTRIES, "report"}:
        pytest.fail(
            f"{where}: no such entry point (python -m captioning.<train|eval|caption|extract|report>, python -m benchmarks)"
        )
    if entry == "report":
        if arguments:  # a bare `captioning-report` only names the script
            try:
                build_parser().parse_args(arguments)
            except SystemExit:
                pytest.fail(f"{where}: captioning.report refuses these arguments")
        return
    arguments, directory = _config_dir(arguments)
    if directory is not None:
        if not (ROOT / directory).is_dir():
            pytest.skip(f"{where}: --config-dir {directory} is the reader's own folder")
        arguments = [*arguments, f"hydra.searchpath=[file://{(ROOT / directory).resolve()}]"]
    for overrides in combinations(arguments):
        try:
            compose_entry(entry, overrides)
        except Exception as error:
            pytest.fail(f"{where}: {' '.join(overrides)}: {error}")


def test_a_renamed_key_is_caught() -> None:
    text = (
        "```bash\npython -m captioning.train -m attention=additive,dot trainer.max_epoch=2\n```\n"
        "Or `make train ARGS=\"'decoding.beam_size=2' seed=N\"`, then `captioning-report DIR`.\n"
        "`python -m benchmarks bench.only=[metrics]`, not `python -m captioning.bench`."
    )
    [(line, entry, arguments), make, report, bench, stale] = readme_commands(text)
    assert (line, entry) == (2, "train")
    assert combinations(arguments) == [
        ["attention=additive", "trainer.max_epoch=2"],
        ["attention=dot", "trainer.max_epoch=2"],
    ]
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_entry(entry, combinations(arguments)[0])
    assert make == (4, "train", ["decoding.beam_size=2", "seed=1"])
    assert report == (4, "report", ["DIR"])
    assert bench == (5, "bench", ["bench.only=[metrics]"])
    assert stale == (5, "captioning.bench", [])  # not an entry point: its test fails


def test_every_make_target_the_documents_name_exists() -> None:
    named = {
        document.name: {
            target
            for _, piece in code_pieces(document.read_text(encoding="utf-8"))
            for target in re.findall(r"(?:^|&& |; )make ([a-z-]+)", piece.strip())
        }
        for document in DOCUMENTS
    }
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    assert {"install", "train", "test", "bench", "lint"} <= named["README.md"]
    for name, targets_named in named.items():
        assert targets_named <= targets, (name, targets_named - targets)

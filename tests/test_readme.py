"""Every command the README shows composes against today's configs (no drift between the two).

Each ``python -m captioning.<entry>`` / ``captioning-<entry>`` command, in code blocks and in
inline code, is parsed like a shell line; its Hydra overrides (every combination of a ``-m``
sweep) are composed with the entry point's config, as the command line would. A renamed
config key, group or option fails here with the README line that uses it.
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

from tests.conftest import CONF_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
ENTRIES = {"train": "train", "eval": "eval", "caption": "caption", "bench": "bench"}
COMMAND = re.compile(r"(?:python -m captioning\.|captioning-)(\w+)(.*)")
# placeholder values the README uses where the reader picks one
PLACEHOLDERS = {"experiment=NAME": "experiment=show_attend_tell_shapes", "seed=N": "seed=1"}


def readme_commands(text: str) -> list[tuple[int, str, list[str]]]:
    """(README line, entry point, arguments) of every captioning command in ``text``."""
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
            pieces = [line]
        else:
            pieces = re.findall(r"`([^`]*captioning[.-][^`]*)`", line)
        for piece in pieces:
            match = COMMAND.search(piece.split(" #")[0])
            if match and match.group(1) in ENTRIES:
                # placeholders such as <run> stand for a name the reader fills in
                words = shlex.split(re.sub(r"<(\w+)>", r"\1", match.group(2)))
                # the shell expands $HOME; it does not expand ~ inside key=~/path
                arguments = [PLACEHOLDERS.get(w, os.path.expandvars(w)) for w in words]
                found.append((start, match.group(1), arguments))
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
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        compose(ENTRIES[entry], overrides=overrides, return_hydra_config=True)


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_shows_commands_of_every_entry_point() -> None:
    assert {entry for _, entry, _ in COMMANDS} == set(ENTRIES)
    assert any("-m" in arguments for _, _, arguments in COMMANDS)  # a sweep is among them


@pytest.mark.parametrize(
    ("line", "entry", "arguments"), COMMANDS, ids=[f"README:{c[0]}" for c in COMMANDS]
)
def test_readme_command_composes(line: int, entry: str, arguments: list[str]) -> None:
    for overrides in combinations(arguments):
        try:
            compose_entry(entry, overrides)
        except Exception as error:
            pytest.fail(f"README line {line}: {entry} {' '.join(overrides)}: {error}")


def test_a_renamed_key_is_caught() -> None:
    text = "```bash\npython -m captioning.train -m attention=additive,dot trainer.max_epoch=2\n```"
    [(line, entry, arguments)] = readme_commands(text)
    assert (line, entry) == (2, "train")
    assert combinations(arguments) == [
        ["attention=additive", "trainer.max_epoch=2"],
        ["attention=dot", "trainer.max_epoch=2"],
    ]
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_entry(entry, combinations(arguments)[0])


def test_every_make_target_the_readme_names_exists() -> None:
    text = README.read_text(encoding="utf-8")
    named = set(re.findall(r"\bmake ([a-z]+)\b", text))
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    assert {"install", "train", "test", "bench", "lint"} <= named
    assert named <= targets, named - targets

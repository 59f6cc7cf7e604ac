"""docs/extending.md, run: its files written into a temporary project, the user's own tests
(which call ``captioning.testing``) run there, and every command of the page run as a real
``python -m captioning.*`` subprocess from that folder, once more with ``hydra.searchpath``
instead of ``--config-dir``. Then the checks of ``captioning.testing`` on components that break
their contract: each must fail, saying what and by how much."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from captioning import testing
from captioning.data import BadData, ImageRecord, read_flickr8k_kaggle
from captioning.models import (
    AdditiveAttention,
    AttentionProtocol,
    DecoderProtocol,
    DotAttention,
    EncoderProtocol,
    LSTMDecoder,
    SmallCNN,
    State,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "extending.md"
FILE_BLOCK = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)^```", re.S | re.M)
COMMANDS_BLOCK = re.compile(r"<!-- commands -->\n```bash\n(?P<body>.*?)^```", re.S | re.M)
SEARCHPATH = re.compile(r'`"(hydra\.searchpath=\[file://\$PWD/(\w+)\])"`')
TINY = ["data.generator.num_train=24", "data.generator.num_val=4", "data.generator.num_test=4"]


def doc_files(text: str) -> dict[str, str]:
    """Each ``<!-- file: PATH -->`` code block of the page: PATH -> its text."""
    return {m["path"]: m["body"] for m in FILE_BLOCK.finditer(text)}


def doc_commands(text: str) -> list[list[str]]:
    """The commands of the page's ``<!-- commands -->`` block, as argument lists."""
    (block,) = COMMANDS_BLOCK.findall(text)
    lines = [line.split(" #")[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


TEXT = DOC.read_text(encoding="utf-8")
FILES = doc_files(TEXT)
COMMANDS = doc_commands(TEXT)


def test_the_page_has_one_component_of_each_kind_and_runs_each() -> None:
    kinds = ("attention", "decoder", "encoder", "data", "experiment")
    configs = {path.split("/")[1]: path for path in FILES if path.startswith("my_configs/")}
    assert set(configs) == set(kinds), configs
    for kind in kinds[:-1]:  # every option of ours names a class or function of my_pkg
        node = yaml.safe_load(FILES[configs[kind]])
        target = node["reader"]["_target_"] if kind == "data" else node["_target_"]
        assert target.startswith("my_pkg."), (kind, target)
    chosen = {word.split("=")[0] for command in COMMANDS for word in command if "=" in word}
    assert set(kinds) <= chosen, chosen  # a command chooses each of them
    assert any(path.startswith("tests/") for path in FILES)
    assert SEARCHPATH.search(TEXT), "the page shows the hydra.searchpath override"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's files in a fresh folder, as a user's ``my_project/``."""
    root = tmp_path_factory.mktemp("my_project")
    for path, body in FILES.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body, encoding="utf-8")
    return root


def _environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CAPTIONING_ROOT", "WANDB_MODE")}
    env["PYTHONPATH"] = os.pathsep.join([str(project), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return env


def _run(arguments: list[str], project: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, *arguments], cwd=project, env=_environment(project),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"{shlex.join(arguments)}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )
    return done


def test_the_users_own_tests_pass(project: Path) -> None:
    (test_command,) = [c for c in COMMANDS if c[:3] == ["python", "-m", "pytest"]]
    done = _run([*test_command[1:], "-q", "-p", "no:cacheprovider"], project)
    assert re.search(r"\b4 passed\b", done.stdout), done.stdout[-2000:]


def _tsv_layout(shapes: Path, target: Path) -> Path:
    """Tiny Shapes rewritten in the page's own layout (annotations.txt + pictures/)."""
    (target / "pictures").mkdir(parents=True)
    lines = []
    for record in read_flickr8k_kaggle(shapes, val_size=4, test_size=4):
        (target / "pictures" / record.path.name).write_bytes(record.path.read_bytes())
        lines += [f"{record.split}\t{record.path.name}\t{caption}" for caption in record.captions]
    (target / "annotations.txt").write_text("\n".join(lines), encoding="utf-8")
    return target


def _choice(arguments: list[str], key: str) -> str | None:
    return next((a.split("=", 1)[1] for a in arguments if a.startswith(f"{key}=")), None)


def _train(arguments: list[str], project: Path, name: str, data_root: Path) -> dict:
    """One train command of the page, tiny and fast; returns the run's composed config."""
    arguments = [a.replace("/path/to/my_data", str(data_root)) for a in arguments]
    extra = ["logger=csv", "samples=0"]
    if _choice(arguments, "data") is None:  # the built-in Shapes, made tiny
        extra += TINY
    if _choice(arguments, "run_name") is None:
        extra += [f"run_name={name}", "trainer.fast_dev_run=true"]
    else:  # the run the eval command reads: one epoch, so that it leaves a checkpoint
        extra += ["trainer.max_epochs=1"]
    _run([*arguments, *extra], project)
    run = _choice(arguments, "run_name") or name
    config = yaml.safe_load((project / "outputs" / run / ".hydra" / "config.yaml").read_text())
    assert (project / "outputs" / run / "test_metrics.json").is_file()
    return config


@pytest.mark.slow
def test_every_command_of_the_page_runs(project: Path, shapes_dir: Path) -> None:
    data_root = _tsv_layout(shapes_dir, project / "my_data")
    train_commands = [c[1:] for c in COMMANDS if c[:3] == ["python", "-m", "captioning.train"]]
    assert len(train_commands) == 5
    # the same folder on the search path instead of --config-dir
    override, folder = SEARCHPATH.search(TEXT).groups()
    searched = [a for a in train_commands[0] if a not in ("--config-dir", folder)]
    searched.append(override.replace("$PWD", str(project)))
    runs = [(arguments, f"run{number}") for number, arguments in enumerate(train_commands)]
    runs.append((searched, "searchpath"))
    # separate run folders: the commands run side by side (their start-up is most of the time)
    with ThreadPoolExecutor(max_workers=3) as pool:
        configs = list(pool.map(lambda run: _train(run[0], project, run[1], data_root), runs))
    for (arguments, _), config in zip(runs[:-1], configs[:-1], strict=True):
        for kind, option in (("attention", "gated"), ("decoder", "my_gru"), ("encoder", "patches")):
            if _choice(arguments, kind) == option or _choice(arguments, "experiment"):
                assert config[kind]["_target_"].startswith("my_pkg."), (arguments, config[kind])
        if _choice(arguments, "data") == "tsv":
            assert config["data"]["reader"]["_target_"] == "my_pkg.read_tsv"
            assert (data_root / ".cache").is_dir()  # the records were read and cached
    assert configs[-1]["attention"]["_target_"] == "my_pkg.GatedAttention"
    # the checkpoint carries its config: eval needs my_pkg importable, not --config-dir
    (evaluate,) = [c[1:] for c in COMMANDS if c[:3] == ["python", "-m", "captioning.eval"]]
    _run([*evaluate, "hydra.run.dir=eval_run", "samples=0"], project)
    assert (project / "eval_run" / "metrics.json").is_file()


# --------------------------------------------------------------------------- the checks fail


def test_our_components_are_instances_of_the_protocols() -> None:
    attention = AdditiveAttention(query_dim=4, region_dim=6)
    assert isinstance(attention, AttentionProtocol)
    assert isinstance(SmallCNN(), EncoderProtocol)
    assert isinstance(LSTMDecoder(7, 6, partial(DotAttention)), DecoderProtocol)
    assert not isinstance(SmallCNN(), DecoderProtocol)


class UnnormalisedAttention(DotAttention):
    """Weights that do not sum to 1."""

    def _attend(self, query, memory):
        context, weights = super()._attend(query, memory)
        return context, weights * 1.01


class LeakyMaskAttention(DotAttention):
    """Takes a mask and ignores it."""

    def forward(self, query, regions, mask=None):
        return super().forward(query, regions)


class UngroupedAttention(DotAttention):
    """Its attend breaks when hypotheses outnumber the memory rows."""

    def attend(self, query, memory):
        rows = memory["keys"].shape[0]
        keys = memory["keys"][torch.arange(len(query)) % rows]  # wrong: not image-major
        return self._attend(query, {"keys": keys, "values": keys})


def test_check_attention_fails_with_numbers() -> None:
    with pytest.raises(testing.ContractError, match=r"rows must sum to 1 .* sums to 1\.01"):
        testing.check_attention(UnnormalisedAttention)
    with pytest.raises(testing.ContractError, match=r"padded regions .* exactly 0, got up to"):
        testing.check_attention(LeakyMaskAttention)
    with pytest.raises(testing.ContractError, match=r"3 query rows per image .* differ at \d+ of"):
        testing.check_attention(UngroupedAttention)
    plain = nn.Linear(12, 16)
    with pytest.raises(testing.ContractError, match=r"out_dim must be an integer >= 1"):
        testing.check_attention(plain)
    plain.out_dim = 16
    with pytest.raises(testing.ContractError, match=r"has no prepare\(\)"):
        testing.check_attention(plain)


class OffByOneDecoder(LSTMDecoder):
    """Its step disagrees with its teacher forcing."""

    def step(self, tokens, state):
        logprobs, weights, state = super().step(tokens, state)
        return (logprobs + 1e-3 * torch.arange(logprobs.shape[-1])).log_softmax(-1), weights, state


class MisorderedState(State):
    """``index_select`` takes the right rows in the wrong order (rolled by one)."""

    def index_select(self, index, skip=frozenset()):
        return MisorderedState(State.index_select(self, index.roll(1), skip))


class MisorderingDecoder(LSTMDecoder):
    """Its state does not follow a re-indexing: beam search mixes up hypotheses."""

    def init_state(self, regions):
        return MisorderedState(super().init_state(regions))

    def step(self, tokens, state):
        logprobs, weights, state = super().step(tokens, state)
        return logprobs, weights, MisorderedState(state)


def _decoder(cls=LSTMDecoder):
    torch.manual_seed(0)
    return cls(13, 8, partial(AdditiveAttention, attention_dim=8), embed_dim=8, hidden_dim=16)


def test_check_decoder_and_beam_search_fail_with_numbers() -> None:
    regions = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    testing.check_decoder(_decoder(), regions)
    with pytest.raises(
        testing.ContractError,
        match=r"vs log_softmax.* at position 0 differ at \d+ of 39 entries: the largest",
    ):
        testing.check_decoder(_decoder(OffByOneDecoder), regions)
    with pytest.raises(testing.ContractError, match=r"after state.index_select\(\[2, 1, 2\]\)"):
        testing.check_decoder(_decoder(MisorderingDecoder), regions)
    with pytest.raises(testing.ContractError, match=r"beam_size=3, image 0: log-probability"):
        testing.check_beam_search(_decoder(MisorderingDecoder), regions, beam_sizes=(3,))
    with pytest.raises(testing.ContractError, match=r"greedy decoding vs a beam of one differ"):
        testing.check_beam_search(_decoder(MisorderingDecoder), regions, beam_sizes=())


class ShrinkingGrid(SmallCNN):
    def grid(self, height, width):
        return self.grid_size - 1, self.grid_size


def test_check_encoder_learns_and_reader_fail_with_numbers(tmp_path: Path) -> None:
    with pytest.raises(testing.ContractError, match=r"grid\(32, 32\) = \(2, 3\): 6 cells for 9"):
        testing.check_encoder(ShrinkingGrid(channels=(4, 4), grid_size=3), 32)
    model = testing.check_components(
        SmallCNN(channels=(4, 4), grid_size=2), partial(DotAttention), partial(LSTMDecoder),
        beam_sizes=(), learn_steps=0,
    )  # fmt: skip
    images, tokens = torch.rand(2, 3, 32, 32), torch.randint(1, 19, (2, 5))
    with pytest.raises(testing.ContractError, match=r"loss went from \d\.\d+ to \d\.\d+ in 3"):
        testing.check_learns(model, images, tokens, steps=3, lr=0.0)

    def bad_reader(root, layout, image_dir, errors: BadData, allow_outside_root):
        image = root / "a.png"
        image.write_bytes(b"")
        return [ImageRecord("a", image, ("a cat",), "train"), ImageRecord("b", image, ("",), "val")]

    with pytest.raises(testing.ContractError, match=r"record 1 \(b\): captions must be"):
        testing.check_reader(bad_reader, tmp_path)

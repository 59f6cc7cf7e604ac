"""n-best captions through the metric, the module, captioning.eval (predictions_nbest.json),
captioning-caption and a training run's validation, for diverse beam search and sampling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from captioning.caption import caption_images
from captioning.eval import evaluate
from captioning.metrics import CaptionMetric, score
from captioning.metrics.diversity import set_diversity
from captioning.train import train
from tests.helpers import bare_module, compose_config, compose_train, tiny_shapes_overrides

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "dog", "cat", "runs", "sleeps"]
PAD, EOS = 0, 2


def decode(ids: list[int]) -> str:
    return " ".join(WORDS[i] for i in ids)


def test_caption_metric_keeps_the_n_best_and_scores_the_first() -> None:
    references = {0: ["a dog runs"], 1: ["a cat sleeps"], 2: ["a cat"]}
    rank0 = CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS)
    rank1 = CaptionMetric(references, decode=decode, pad_id=PAD, eos_id=EOS)
    nbest0 = torch.tensor(
        [[[4, 5, 7, EOS], [4, 5, EOS, PAD]], [[4, 6, 8, EOS], [6, 8, EOS, 8]]]
    )  # (B=2, n=2, L=4)
    rank0.update(torch.tensor([0, 1]), nbest0[:, 0], nbest_ids=nbest0)
    nbest1 = torch.tensor([[[4, 6, EOS], [6, EOS, PAD]], [[5, EOS, PAD], [5, 5, EOS]]])
    rank1.update(torch.tensor([2, 0]), nbest1[:, 0], nbest_ids=nbest1)  # image 0 again
    merged = rank1
    merged.merge_state(rank0)  # what DDP's "cat" gathering does: rank 0's states first
    scores = merged.compute()
    assert merged.last_nbest == {
        0: ["a dog runs", "a dog"],  # the first occurrence wins
        1: ["a cat sleeps", "cat sleeps"],
        2: ["a cat", "cat"],
    }
    assert merged.last_predictions == {i: c[0] for i, c in merged.last_nbest.items()}
    expected = {
        **score(references, merged.last_predictions, True),
        **set_diversity(merged.last_nbest, references),  # the n-best sets' own scores
    }
    assert {k: v.item() for k, v in scores.items()} == pytest.approx(expected)

    rank0.reset()  # no n-best given: each image's one caption
    rank0.update(torch.tensor([1]), torch.tensor([[4, 6, EOS]]))
    rank0.compute()
    assert rank0.last_nbest == {1: ["a cat"]}
    rank0.reset()
    rank0.update(torch.tensor([1]), torch.tensor([[4, 6, EOS]]), nbest_ids=nbest0[:1])
    rank0.update(torch.tensor([2]), torch.tensor([[4, 6, EOS]]))
    with pytest.raises(ValueError, match="some updates carried nbest_ids and others did not"):
        rank0.compute()
    with pytest.raises(ValueError, match=r"expected nbest_ids \(B, n, L\) for B=1"):
        rank0.update(torch.tensor([1]), torch.tensor([[4, EOS]]), nbest_ids=nbest0)


DIVERSE = {"beam_size": 4, "n_best": 4, "groups": 2, "diversity": 0.8, "max_len": 6}
SAMPLING = {"sample": True, "n_best": 3, "top_p": 0.9, "max_len": 6, "seed": 5}


def test_eval_step_returns_the_first_caption_and_the_n_best() -> None:
    module = bare_module().eval()
    module.attach_references("val", {0: ["a"], 1: ["a"]})
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    batch = {"images": images, "indices": torch.tensor([0, 1])}
    height, width = module.captioner.encoder.grid(32, 32)
    for decoding in (DIVERSE, SAMPLING):
        module.decoding = decoding  # as eval and caption set it; sampling starts from the seed
        with torch.no_grad():
            out = module.validation_step(batch, 0)
            tokens = module.decode_nbest(images)[0]  # the generator went on: new samples
            module.reseed_sampling()
            again, again_weights = module.decode_nbest(images)  # from the seed again
        n, steps = decoding["n_best"], out["nbest_tokens"].shape[-1]
        assert out["nbest_tokens"].shape == (2, n, steps) and steps <= 6
        assert torch.equal(out["tokens"], out["nbest_tokens"][:, 0])
        assert out["weights"].shape == (2, steps, height * width)
        assert torch.equal(again, out["nbest_tokens"])
        assert torch.equal(again_weights[:, 0], out["weights"])
        assert torch.equal(tokens, again) != bool(decoding.get("sample"))
        caption = module.metrics["val"]["caption"]
        caption.compute()
        assert sorted(caption.last_nbest) == [0, 1]
        assert all(len(c) == n for c in caption.last_nbest.values())
        caption.reset()
    module.decoding = {"max_len": 5}  # plain greedy: one caption, no n-best
    with torch.no_grad():
        assert set(module.validation_step(batch, 0)) == {"indices", "tokens", "weights"}


# ------------------------------------------------------------------ through the entry points


def _ckpt(tiny_run: Path) -> str:
    return str(tiny_run / "run" / "checkpoints" / "last.ckpt")


def _eval(tiny_run: Path, out: Path, *overrides: str) -> tuple[dict, list, list | None]:
    """captioning.eval on the tiny run's own data; metrics, predictions and the n-best lists
    (None when not written) from ``out``."""
    cfg = compose_config("eval", tiny_run, [f"ckpt={_ckpt(tiny_run)}", "samples=0", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    scores = evaluate(cfg)
    predictions = json.loads((out / "predictions.json").read_text())
    nbest = out / "predictions_nbest.json"
    return scores, predictions, json.loads(nbest.read_text()) if nbest.is_file() else None


def test_eval_writes_the_n_best_of_diverse_beam_search(tiny_run: Path, tmp_path: Path) -> None:
    diverse = ["decoding.beam_size=5", "decoding.groups=5", "decoding.diversity=0.8"]
    scores, predictions, nbest = _eval(tiny_run, tmp_path / "five", *diverse, "decoding.n_best=5")
    assert len(nbest) == len(predictions) == 16
    assert [p["image_id"] for p in nbest] == [p["image_id"] for p in predictions]
    for lists, prediction in zip(nbest, predictions, strict=True):
        assert set(lists) == {"image_id", "captions"} and len(lists["captions"]) == 5
        assert lists["captions"][0] == prediction["caption"]  # predictions.json: the first
    assert sum(len(set(p["captions"])) for p in nbest) > 16  # not 5 copies of one caption
    # the first caption and the scores do not depend on how many are kept
    one_scores, one, none = _eval(tiny_run, tmp_path / "one", *diverse, "decoding.n_best=1")
    assert none is None and one == predictions
    diversity = {"mBLEU-4", "div-1", "div-2", "self-CIDEr"}  # of the n-best sets only
    assert diversity <= set(scores) and not diversity & set(one_scores)
    assert one_scores == {k: v for k, v in scores.items() if k not in diversity}
    assert 0 < scores["div-2"] <= 1 and 0 <= scores["self-CIDEr"] <= 1


def test_eval_samples_the_same_captions_for_the_same_command(
    tiny_run: Path, tmp_path: Path
) -> None:
    sampling = ["decoding.sample=true", "decoding.n_best=3", "decoding.top_k=5"]
    scores, predictions, nbest = _eval(tiny_run, tmp_path / "a", *sampling)
    assert len(nbest) == 16 and all(len(p["captions"]) == 3 for p in nbest)
    assert [p["captions"][0] for p in nbest] == [p["caption"] for p in predictions]
    again = _eval(tiny_run, tmp_path / "b", *sampling)
    assert again == (scores, predictions, nbest)
    # the run's seed is the sampler's: seed=1 draws other samples (test_decoding_strategies)
    other = compose_config("eval", tmp_path, [f"ckpt={_ckpt(tiny_run)}", "seed=1"])
    assert other.decoding.seed == 1


@pytest.mark.parametrize(
    "strategy",
    [["decoding.beam_size=4", "decoding.groups=2"], ["decoding.sample=true", "decoding.top_p=0.9"]],
)
def test_caption_prints_the_n_best_of_every_strategy(
    tiny_run: Path, shapes_dir: Path, tmp_path: Path, capsys, strategy: list[str]
) -> None:
    image = shapes_dir / "Images" / "test_00000.png"
    overrides = [f"ckpt={_ckpt(tiny_run)}", f"images={image}", "json=true", "figures=false",
                 "decoding.n_best=4", *strategy]  # fmt: skip
    records = caption_images(compose_config("caption", tmp_path, overrides))
    record = json.loads(capsys.readouterr().out)
    assert record == records[0] and set(record) == {"image", "captions", "scores"}
    assert record["image"] == "test_00000.png" and len(record["captions"]) == 4
    assert record["scores"] == sorted(record["scores"], reverse=True)
    assert caption_images(compose_config("caption", tmp_path, overrides)) == records


def test_validation_with_n_best_samples_in_a_training_run(tmp_path: Path) -> None:
    cfg = compose_train(
        tmp_path,
        [*tiny_shapes_overrides(), "trainer.fast_dev_run=true", "samples=0", "test=false",
         "decoding.sample=true", "decoding.n_best=2", "decoding.max_len=8"],
    )  # fmt: skip
    metrics = train(cfg)
    assert 0 <= metrics["val/BLEU-4"] <= 1 and "val/CIDEr-D" in metrics


def test_diverse_beam_is_more_diverse_than_beam_on_the_shapes_model(
    tiny_run: Path, tmp_path: Path
) -> None:
    """The one-epoch model's beam hypotheses differ in a word or two (measured: mBLEU-4 0.97,
    div-2 0.07); groups kept apart by the Hamming penalty do not (0.68, 0.16)."""
    beam, _, _ = _eval(tiny_run, tmp_path / "b", "decoding.beam_size=5", "decoding.n_best=5")
    diverse = ["decoding.beam_size=5", "decoding.groups=5", "decoding.diversity=0.8"]
    groups, _, _ = _eval(tiny_run, tmp_path / "d", *diverse, "decoding.n_best=5")
    assert groups["mBLEU-4"] < beam["mBLEU-4"] and groups["div-2"] > beam["div-2"]

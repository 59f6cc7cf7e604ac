"""Self-critical training: the reward is the metric, advantages, learning, init_from."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from captioning.metrics.bleu import build_corpus
from captioning.metrics.cider import cider_d_array, document_frequencies
from captioning.metrics.scores import score
from captioning.module import CaptioningModule
from captioning.scst import (
    CaptionReward,
    advantages,
    cached_frequencies,
    policy_loss,
    sample_captions,
)
from captioning.train import train
from tests.helpers import compose_train, tiny_shapes_overrides

WORDS = "a red blue green circle square triangle on the left right middle and".split()


def _corpus(seed: int, images: int = 20) -> tuple[dict, dict]:
    rng = random.Random(seed)
    refs = {
        i: [" ".join(rng.choices(WORDS, k=rng.randint(3, 9))) for _ in range(5)]
        for i in range(images)
    }
    preds = {i: " ".join(rng.choices(WORDS, k=rng.randint(0, 9))) for i in range(images)}
    return refs, preds


def test_reward_equals_cider_d_with_training_document_frequencies() -> None:
    train_refs, _ = _corpus(0, images=40)
    frequencies = document_frequencies(train_refs)
    reward = CaptionReward(train_refs, frequencies)
    images = [3, 3, 7, 12, 39]
    captions = ["a red circle on the left", "", "red", "the blue square and a circle", "a a a"]
    got = reward(images, captions)
    for image, caption, value in zip(images, captions, got, strict=True):
        corpus = build_corpus({0: train_refs[image]}, {0: caption}, keep_grams=True)
        expected = cider_d_array(corpus, frequencies=frequencies)[0]
        assert value == pytest.approx(expected, abs=1e-9)
    # with the evaluated corpus's own references as the "training set", the frequencies are
    # coco-caption's: the reward is exactly captioning.metrics.score's CIDEr-D per image
    refs, preds = _corpus(1)
    own = CaptionReward(refs, document_frequencies(refs))(list(preds), list(preds.values()))
    assert float(np.mean(own)) == pytest.approx(score(refs, preds)["CIDEr-D"], abs=1e-9)


def test_bleu_weight_adds_sentence_bleu_4() -> None:
    from pycocoevalcap.bleu.bleu import Bleu

    refs, preds = _corpus(2)
    both = CaptionReward(refs, document_frequencies(refs), w_cider=0.0, w_bleu=1.0)
    _, per_image = Bleu(4).compute_score(refs, {k: [v] for k, v in preds.items()}, verbose=0)
    got = both(list(preds), list(preds.values()))
    np.testing.assert_allclose(got, per_image[3], atol=1e-9)


def test_mean_baseline_advantages_sum_to_zero_per_image() -> None:
    rewards = np.array([1.0, 2.0, 4.0, 0.5, 0.5, 3.5])
    mean = advantages(rewards, None, n=3).reshape(2, 3)
    np.testing.assert_allclose(mean.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(mean[0], [1 - 3.0, 2 - 2.5, 4 - 1.5])
    greedy = advantages(rewards, np.array([2.0, 1.0]), n=3)
    np.testing.assert_allclose(greedy, [-1.0, 0.0, 2.0, -0.5, -0.5, 2.5])
    with pytest.raises(ValueError, match=r"baseline=mean needs scst.samples >= 2"):
        advantages(rewards, None, n=1)


def test_document_frequencies_are_cached(tmp_path: Path) -> None:
    refs, _ = _corpus(3)
    first = cached_frequencies(refs, tmp_path, "fp")
    files = list(tmp_path.glob("cider-df-*.json"))
    assert len(files) == 1
    again = cached_frequencies(refs, tmp_path, "fp")
    assert again == first and again.images == len(refs)
    cached_frequencies(refs, tmp_path, "other fingerprint")
    assert len(list(tmp_path.glob("cider-df-*.json"))) == 2


def _tiny_module(objective: str = "scst", **scst) -> CaptioningModule:
    vocab = ["<pad>", "<bos>", "<eos>", "<unk>", *WORDS]
    model = {
        "_target_": "captioning.models.Captioner",
        "objective": objective,
        "encoder": {"_target_": "captioning.models.SmallCNN", "channels": [8, 16], "grid_size": 2},
        "decoder": {
            "_target_": "captioning.models.LSTMDecoder",
            "_partial_": True,
            "embed_dim": 32,
            "hidden_dim": 32,
            "attention": {"_target_": "captioning.models.AdditiveAttention", "_partial_": True},
        },
    }
    return CaptioningModule(
        model=model, optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 5e-3},
        scheduler=None, loss={}, decoding={"max_len": 8}, vocab=vocab,
        scst={"samples": 4, "max_len": 8, **scst},
    )  # fmt: skip


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_scst_steps_raise_the_mean_reward_of_a_fixed_batch(baseline: str) -> None:
    torch.manual_seed(0)
    module = _tiny_module(baseline=baseline)
    refs = {i: ["a red circle on the left", "a red circle left"] for i in range(4)}
    module.reward = CaptionReward(refs, document_frequencies(refs | {9: ["blue square"]}))
    batch = {
        "images": torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8),
        "indices": torch.arange(4),
    }
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    rewards = []
    for _ in range(40):
        out = module.scst_step(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        rewards.append(float(out["reward"]))
    assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.5
    assert float(out["entropy"]) >= 0


def test_sampling_masks_and_log_probs() -> None:
    torch.manual_seed(0)
    module = _tiny_module()
    regions = module.captioner.encode(torch.rand(3, 3, 16, 16))
    samples = sample_captions(module.captioner.decoder, regions, n=2, bos_id=1, eos_id=2,
                              pad_id=0, max_len=6, top_k=3)  # fmt: skip
    assert samples.tokens.shape[0] == 6 and samples.tokens.shape == samples.log_probs.shape
    assert bool((samples.log_probs <= 0).all())
    assert not bool((samples.tokens[samples.mask] == 0).any())  # <pad> only after <eos>
    assert bool((samples.log_probs[~samples.mask] == 0).all())
    loss = policy_loss(samples, torch.ones(6))
    loss.backward()
    assert module.captioner.decoder.embedding.weight.grad is not None


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match=r"model.objective must be xe or scst"):
        _tiny_module(objective="rl")
    with pytest.raises(ValueError, match=r"scst.baseline must be one of"):
        _tiny_module(baseline="max")


@pytest.mark.slow  # an end-to-end run: make test-fast leaves it out
def test_init_from_checkpoint_then_scst_on_shapes(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    overrides = [*tiny_shapes_overrides(), f"init_from={ckpt}", "model.objective=scst",
                 "trainer.max_epochs=1", "data.batch_size=16", "samples=0"]  # fmt: skip
    metrics = train(compose_train(tmp_path, overrides))
    assert {"train/scst_reward", "train/scst_entropy"} <= set(metrics)
    assert list((tmp_path / "data" / "shapes" / ".cache").glob("cider-df-*.json"))
    start = torch.load(ckpt, weights_only=True)["state_dict"]
    end = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert end["epoch"] == 0 and end["global_step"] == 6  # a fresh run from those weights
    assert any(not torch.equal(start[k], end["state_dict"][k]) for k in start)


def test_init_from_a_mismatching_checkpoint(tiny_run: Path, tmp_path: Path) -> None:
    ckpt = tiny_run / "run" / "checkpoints" / "last.ckpt"
    overrides = [*tiny_shapes_overrides(), f"init_from={ckpt}", "decoder.hidden_dim=64"]
    with pytest.raises(ValueError, match=r"init_from=.*does not match this config"):
        train(compose_train(tmp_path, overrides))
    other = [f"init_from={ckpt}", "data.generator.num_train=64", "data.generator.num_val=8",
             "data.generator.num_test=8", "data.generator.shapes=[circle,square]"]  # fmt: skip
    with pytest.raises(ValueError, match=r"init_from=.*vocabulary .* differs"):
        train(compose_train(tmp_path / "other", other))


def test_samples_are_as_long_as_test_captions_by_default(tmp_path: Path) -> None:
    # shorter samples would truncate long references' captions and teach SCST to cut them short
    cfg = compose_train(tmp_path, ["decoding.max_len=37"])
    assert cfg.scst.max_len == 37
    assert compose_train(tmp_path, ["scst.max_len=12"]).scst.max_len == 12

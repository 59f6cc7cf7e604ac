"""The pointing game: hits, noun-only hits, dilation, phrases that name no object."""

import torch

from captioning.metrics.grounding import GroundingMetric, box_iou, box_phrase_hits, phrase_hits

OBJECTS = [
    {"colour": "red", "shape": "circle", "size": "small", "box": [0, 0, 16, 16]},
    {"colour": "blue", "shape": "square", "size": "large", "box": [40, 40, 64, 64]},
]
SIZES = {"small", "large"}
GRID = (4, 4)  # 16 px cells on a 64 px image


def _one_hot(cell: int) -> torch.Tensor:
    weights = torch.full((16,), 0.001)
    weights[cell] = 1.0
    return weights / weights.sum()


def test_phrase_and_noun_hits() -> None:
    words = "a small red circle left of a blue square".split()
    rows = [_one_hot(5)] * len(words)
    rows[1] = _one_hot(0)  # "small" looks at the red circle (cell 0)
    rows[2] = _one_hot(0)  # "red" too
    rows[3] = _one_hot(15)  # "circle" looks at the blue square
    rows[7] = _one_hot(15)  # "blue" looks at the blue square
    rows[8] = _one_hot(15)  # "square" as well
    hits, noun_hits, phrases = phrase_hits(words, torch.stack(rows), OBJECTS, GRID, 64, SIZES)
    assert phrases == 2
    assert hits == 2  # summed phrase maps peak inside each object
    assert noun_hits == 1  # the word "circle" alone pointed at the square


def test_dilation_and_unknown_objects() -> None:
    words = "a green circle and a red circle".split()  # "green circle" is not in the image
    rows = [_one_hot(0)] * len(words)
    # "red circle" looks mostly at cell 1: the upsampled map peaks at x = 23, 8 px right of
    # the red circle's box (x < 16), so only a dilation of more than 7 px counts it
    rows[5] = rows[6] = torch.eye(16)[1] * 0.6 + torch.eye(16)[0] * 0.4
    attention = torch.stack(rows)
    for dilation, expected in ((0, 0), (2, 0), (7, 0), (8, 1)):
        hits, _, phrases = phrase_hits(
            words, attention, OBJECTS, GRID, 64, SIZES, dilation=dilation
        )
        assert (phrases, hits) == (1, expected), dilation


def test_metric_accumulates_over_batches() -> None:
    vocab = ["<pad>", "<bos>", "<eos>", "a", "red", "circle", "blue", "square"]
    metric = GroundingMetric(
        {0: OBJECTS, 1: OBJECTS}, lambda ids: [vocab[i] for i in ids if i > 2], GRID, 64
    )
    tokens = torch.tensor([[3, 4, 5, 2], [3, 6, 7, 2]])
    weights = torch.stack([torch.stack([_one_hot(0)] * 4), torch.stack([_one_hot(0)] * 4)])
    metric.update(torch.tensor([0, 1]), tokens, weights)
    scores = metric.compute()
    assert scores["grounding"].item() == 0.5  # the red circle found, the blue square missed
    assert scores["grounding_noun"].item() == 0.5


# region inputs: three boxes (normalised), the last one padding
BOXES = torch.tensor([[0.0, 0.0, 0.25, 0.25], [0.6, 0.6, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])


def test_box_level_hits_need_iou_half_with_the_named_object() -> None:
    words = "a small red circle left of a blue square".split()
    pixels = BOXES * 64
    rows = [torch.tensor([0.2, 0.8, 0.0])] * len(words)  # mostly the square's box
    rows[1] = rows[2] = torch.tensor([0.9, 0.1, 0.0])  # "small red" at the circle's box
    hits, noun_hits, phrases = box_phrase_hits(words, torch.stack(rows), OBJECTS, pixels, SIZES)
    assert (phrases, hits, noun_hits) == (2, 2, 1)  # "circle" alone pointed at the square's box
    # the circle's box shifted so that IoU with [0, 0, 16, 16] is 1/3 (< 0.5): a miss
    shifted = pixels.clone()
    shifted[0] = torch.tensor([8.0, 0.0, 24.0, 16.0])
    assert box_iou(shifted[0].tolist(), OBJECTS[0]["box"]) == 1 / 3
    hits, _, _ = box_phrase_hits(words, torch.stack(rows), OBJECTS, shifted, SIZES)
    assert hits == 1


def test_box_level_metric_reads_the_batch_boxes() -> None:
    vocab = ["<pad>", "<bos>", "<eos>", "a", "red", "circle", "blue", "square"]
    metric = GroundingMetric(
        {0: OBJECTS, 1: OBJECTS}, lambda ids: [vocab[i] for i in ids if i > 2], None, 64
    )
    tokens = torch.tensor([[3, 4, 5, 2], [3, 6, 7, 2]])
    weights = torch.tensor([[0.9, 0.1, 0.0]] * 4).expand(2, 4, 3)  # both look at the circle
    metric.update(torch.tensor([0, 1]), tokens, weights, boxes=BOXES.expand(2, 3, 4))
    assert metric.compute()["grounding"].item() == 0.5

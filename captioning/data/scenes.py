"""Shapes scenes: sampling coloured shapes, their captions, and drawing them.

Every caption states each object's colour, shape and position. Objects are always named
from left to right, and layouts where a position word or the left-to-right order would be
ambiguous are rejected while sampling. :mod:`captioning.data.shapes` writes the scenes into a
data folder.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from captioning.text import plural

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 175, 60),
    "blue": (50, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 30),
    "cyan": (40, 210, 215),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FORMAT_VERSION = 1  # bump when the same settings would draw other files


@dataclass
class ShapesConfig:
    """Generator settings; the defaults are the `data=shapes` scenes.

    Args:
        image_size: side of the square image in pixels.
        min_objects / max_objects: objects per scene.
        shapes / colours: the vocabulary of objects (prefixes of SHAPES / keys of COLOURS).
        sizes: size word -> object side as a fraction of the image side.
        distinct_columns: every object in its own third (left / middle / right).
        counting: merge neighbouring identical objects into "two red circles".
        repeat_prob: chance that an object copies its left neighbour's look (counting).
        clutter: number of unnamed grey distractor strokes per image.
        noise_prob / noise_std: chance of, and std of, background pixel noise.
        num_train / num_val / num_test: images per split.
        seed: generation seed; same seed, same files, byte for byte.
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    shapes: Sequence[str] = ("circle", "square", "triangle", "diamond")
    colours: Sequence[str] = ("red", "green", "blue", "yellow")
    sizes: dict[str, float] = field(default_factory=lambda: {"small": 0.17, "large": 0.28})
    distinct_columns: bool = True
    counting: bool = False
    repeat_prob: float = 0.0
    clutter: int = 0
    noise_prob: float = 0.5
    noise_std: float = 6.0
    num_train: int = 4000
    num_val: int = 500
    num_test: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown:
            raise ValueError(f"data.generator.shapes: unknown {unknown}; choose from {SHAPES}")
        unknown = [c for c in self.colours if c not in COLOURS]
        if unknown:
            raise ValueError(
                f"data.generator.colours: unknown {unknown}; choose from {list(COLOURS)}"
            )
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError("data.generator: need 1 <= min_objects <= max_objects")
        if self.distinct_columns and self.max_objects > 3:
            raise ValueError("data.generator.distinct_columns allows at most 3 objects")
        self.shapes = tuple(self.shapes)
        self.colours = tuple(self.colours)
        self.sizes = dict(self.sizes)

    def fingerprint(self) -> str:
        payload = json.dumps({"v": FORMAT_VERSION, **asdict(self)}, sort_keys=True, default=list)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class ShapeObject:
    shape: str
    colour: str
    size: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive-exclusive pixels)
    column: str  # left | middle | right
    row: str  # top | middle | bottom

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


# ----------------------------------------------------------------------------- drawing


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, phase: float) -> list[tuple[float, float]]:
        return [
            (cx + radius * math.cos(phase + 2 * math.pi * k / n),
             cy + radius * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)
        ]  # fmt: skip

    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "hexagon":
        return ring(6, r, 0.0)
    if shape == "star":
        outer, inner = ring(5, r, -math.pi / 2), ring(5, r * 0.45, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner, strict=True) for p in pair]
    if shape == "cross":
        a = r / 3
        return [
            (cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a),
            (cx + r, cy + a), (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r),
            (cx - a, cy + a), (cx - r, cy + a), (cx - r, cy - a), (cx - a, cy - a),
        ]  # fmt: skip
    raise ValueError(shape)


def _draw(draw: ImageDraw.ImageDraw, obj: ShapeObject) -> None:
    x0, y0, x1, y1 = obj.box
    fill = COLOURS[obj.colour]
    if obj.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif obj.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=fill)
    elif obj.shape == "ring":
        width = max(2, (x1 - x0) // 4)
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), outline=fill, width=width)
    else:
        cx, cy = obj.centre
        r = (x1 - x0 - 1) / 2
        draw.polygon(_polygon(obj.shape, cx - 0.5, cy - 0.5, r), fill=fill)


# ----------------------------------------------------------------------------- layout


def _third(value: float, extent: int, names: tuple[str, str, str]) -> str:
    return names[min(2, int(3 * value / extent))]


def sample_scene(rng: np.random.Generator, cfg: ShapesConfig) -> list[ShapeObject]:
    """Rejection-sample a layout whose position words and order are unambiguous."""
    side = cfg.image_size
    margin = max(2.0, side / 32)  # centres this close to a third boundary are ambiguous
    gap = max(2, side // 32)
    size_names = list(cfg.sizes)
    while True:
        count = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        columns = (
            sorted(rng.choice(3, size=count, replace=False).tolist())
            if cfg.distinct_columns
            else None
        )
        objects: list[ShapeObject] = []
        for i in range(count):
            if i > 0 and cfg.repeat_prob > 0 and rng.random() < cfg.repeat_prob:
                prev = objects[-1]
                shape, colour, size = prev.shape, prev.colour, prev.size
            else:
                shape = cfg.shapes[int(rng.integers(len(cfg.shapes)))]
                colour = cfg.colours[int(rng.integers(len(cfg.colours)))]
                size = size_names[int(rng.integers(len(size_names)))]
            extent = max(6, round(cfg.sizes[size] * side))
            if columns is not None:
                lo, hi = columns[i] * side / 3, (columns[i] + 1) * side / 3
                x0 = int(rng.integers(int(lo), max(int(lo) + 1, int(hi) - extent + 1)))
            else:
                x0 = int(rng.integers(0, side - extent + 1))
            y0 = int(rng.integers(0, side - extent + 1))
            box = (x0, y0, min(side, x0 + extent), y0 + extent)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            objects.append(
                ShapeObject(
                    shape=shape,
                    colour=colour,
                    size=size,
                    box=box,
                    column=_third(cx, side, ("left", "middle", "right")),
                    row=_third(cy, side, ("top", "middle", "bottom")),
                )
            )
        if _unambiguous(objects, side, margin, gap, cfg.distinct_columns):
            return sorted(objects, key=lambda o: o.centre[0])


def _unambiguous(
    objects: list[ShapeObject], side: int, margin: float, gap: int, distinct_columns: bool
) -> bool:
    boundaries = (side / 3, 2 * side / 3)
    for obj in objects:
        cx, cy = obj.centre
        if any(abs(cx - b) < margin or abs(cy - b) < margin for b in boundaries):
            return False
        if obj.box[2] > side:
            return False
    if distinct_columns and len({o.column for o in objects}) != len(objects):
        return False
    for i, a in enumerate(objects):
        for b in objects[i + 1 :]:
            if abs(a.centre[0] - b.centre[0]) < 2 * margin:  # left-to-right order must be clear
                return False
            overlap_x = a.box[0] - gap < b.box[2] and b.box[0] - gap < a.box[2]
            overlap_y = a.box[1] - gap < b.box[3] and b.box[1] - gap < a.box[3]
            if overlap_x and overlap_y:
                return False
    return True


# ----------------------------------------------------------------------------- captions


@dataclass
class _Group:
    """Neighbouring identical objects, named by one (possibly counted) phrase."""

    members: list[ShapeObject]

    @property
    def first(self) -> ShapeObject:
        return self.members[0]

    def phrase(self, with_size: bool) -> str:
        obj, n = self.first, len(self.members)
        size = f"{obj.size} " if with_size else ""
        if n == 1:
            article = "an" if (size or obj.colour)[0] in "aeiou" else "a"
            return f"{article} {size}{obj.colour} {obj.shape}"
        noun = plural(obj.shape)
        return f"{NUMBER_WORDS[n]} {size}{obj.colour} {noun}"

    def where(self, words: dict[str, str], key: str) -> str:
        """The members' positions, e.g. "on the left" or "on the left and in the middle"."""
        seen = dict.fromkeys(getattr(m, key) for m in self.members)
        return " and ".join(words[k] for k in seen)

    def location(self) -> str:
        seen = dict.fromkeys(_location(m) for m in self.members)
        return " and the ".join(seen)


def _groups(objects: list[ShapeObject], counting: bool) -> list[_Group]:
    groups: list[_Group] = []
    for obj in objects:
        prev = groups[-1].first if groups else None
        look = (obj.shape, obj.colour, obj.size)
        if counting and prev is not None and (prev.shape, prev.colour, prev.size) == look:
            groups[-1].members.append(obj)
        else:
            groups.append(_Group([obj]))
    return groups


def _join(parts: list[str]) -> str:
    if len(parts) == 1:
        return parts[0]
    return " , ".join(parts[:-1]) + " and " + parts[-1]


_COLUMN_PHRASE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
_ROW_PHRASE = {"top": "at the top", "middle": "in the middle", "bottom": "at the bottom"}


def _location(obj: ShapeObject) -> str:
    if obj.row == "middle" and obj.column == "middle":
        return "center"
    if obj.row == "middle":
        return obj.column
    if obj.column == "middle":
        return obj.row
    return f"{obj.row} {obj.column}"


def captions_for(objects: list[ShapeObject], counting: bool = False) -> list[str]:
    """Five captions in five different templates; objects are named left to right."""
    groups = _groups(objects, counting)
    plain = [g.phrase(with_size=False) for g in groups]
    sized = [g.phrase(with_size=True) for g in groups]
    n_objects = len(objects)

    columns = [g.where(_COLUMN_PHRASE, "column") for g in groups]
    rows = [g.where(_ROW_PHRASE, "row") for g in groups]

    # 1. horizontal relations
    if len(groups) == 1:
        relations = f"{plain[0]} {columns[0]} and nothing else"
    else:
        relations = " to the left of ".join(plain)
    # 2. existential with sizes and a 3x3 location
    located = "there " + ("are " if n_objects > 1 else "is ")
    located += _join([f"{p} at the {g.location()}" for p, g in zip(sized, groups, strict=True)])
    # 3. region words
    regions = _join([f"{p} {c}" for p, c in zip(plain, columns, strict=True)])
    # 4. count, then a left-to-right list
    noun = "object" if n_objects == 1 else "objects"
    if len(groups) == 1:
        listing = f"{NUMBER_WORDS[n_objects]} {noun} : {plain[0]} {columns[0]}"
    else:
        listing = f"{NUMBER_WORDS[n_objects]} {noun} from left to right : {_join(plain)}"
    # 5. vertical positions with sizes
    vertical = "the picture shows " + _join([f"{p} {r}" for p, r in zip(sized, rows, strict=True)])
    if len(groups) > 1:
        vertical += " , from left to right"
    return [relations, located, regions, listing, vertical]


# ----------------------------------------------------------------------------- rendering


def render(objects: list[ShapeObject], rng: np.random.Generator, cfg: ShapesConfig) -> Image.Image:
    side = cfg.image_size
    base = rng.integers(15, 60, size=3)
    pixels = np.broadcast_to(base, (side, side, 3)).astype(np.float32)
    if rng.random() < cfg.noise_prob:
        pixels = pixels + rng.normal(0.0, cfg.noise_std, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(cfg.clutter):  # unnamed distractors under the objects
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, side, size=4))
        grey = int(rng.integers(80, 130))
        draw.line((x0, y0, x1, y1), fill=(grey, grey, grey), width=1)
    for obj in objects:
        _draw(draw, obj)
    return image

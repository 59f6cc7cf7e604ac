"""Region inputs: precomputed region features (bottom-up boxes, extracted regions) in place
of images, and the encoder that projects them to the model's width.

A batch of region sets of different sizes is padded to the largest; :class:`Regions` carries
the features with the mask of the real regions and their boxes, and every consumer (the
attention modules, the decoders, the searches, grounding and the figures) honours the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Regions:
    """A padded batch of region sets.

    Args:
        features: (B, N, D) float region features, zeros at padding.
        mask: (B, N) bool, True for a real region.
        boxes: (B, N, 4) x1, y1, x2, y2 normalised by the image's width and height (in
            [0, 1]), zeros at padding; None when the regions came without boxes.
    """

    features: torch.Tensor
    mask: torch.Tensor
    boxes: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.dim() != 3:
            raise ValueError(f"region features must be (B, N, D), got {tuple(self.features.shape)}")
        if tuple(self.mask.shape) != tuple(self.features.shape[:2]):
            raise ValueError(
                f"region mask {tuple(self.mask.shape)} does not match the features "
                f"{tuple(self.features.shape)}"
            )
        if self.boxes is not None and tuple(self.boxes.shape) != (*self.features.shape[:2], 4):
            raise ValueError(
                f"region boxes must be (B, N, 4) for features {tuple(self.features.shape)}, "
                f"got {tuple(self.boxes.shape)}"
            )

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, rows) -> Regions:
        """Rows of the batch (an index tensor, a slice or a boolean mask)."""
        return Regions(
            self.features[rows],
            self.mask[rows],
            None if self.boxes is None else self.boxes[rows],
        )

    def to(self, device: torch.device | str) -> Regions:
        return Regions(
            self.features.to(device),
            self.mask.to(device),
            None if self.boxes is None else self.boxes.to(device),
        )

    @classmethod
    def of_batch(cls, batch: dict[str, torch.Tensor]) -> Regions:
        """The regions of a region-data batch (``regions``, ``region_mask``, ``boxes``)."""
        return cls(batch["regions"].float(), batch["region_mask"].bool(), batch.get("boxes"))


def box_geometry(boxes: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) normalised boxes -> (B, N, 5): x1, y1, x2, y2 and the box's area share."""
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )
    return torch.cat([boxes, area.unsqueeze(-1)], dim=-1)


class RegionEncoder(nn.Module):
    """Region features (B, N, D) -> regions (B, N, out_dim): a linear projection with ReLU,
    dropout and a LayerNorm (as AoA and M² embed bottom-up features), plus, with
    ``box_embed``, a learned embedding of each box's geometry (its corners and area, the
    boxes normalised by the image size) added to it.

    Args:
        feature_dim: D, the width of the feature files (``null`` in the config: taken from
            the data at start-up).
        out_dim: the width the decoder (or refiner) sees.
        box_embed: add the box-geometry embedding (needs boxes).
        dropout: dropout after the projection.
        norm: LayerNorm the projected regions.
    """

    def __init__(
        self,
        feature_dim: int,
        out_dim: int = 512,
        box_embed: bool = False,
        dropout: float = 0.1,
        norm: bool = True,
    ) -> None:
        super().__init__()
        if feature_dim is None:
            raise ValueError(
                "encoder.feature_dim is not set: the entry points fill it from the data's "
                "region files (data.region_features); set it to their width D to build one alone"
            )
        self.feature_dim = int(feature_dim)
        self.out_dim = int(out_dim)
        self.project = nn.Sequential(
            nn.Linear(self.feature_dim, self.out_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.box_embed = nn.Linear(5, self.out_dim) if box_embed else None
        self.norm = nn.LayerNorm(self.out_dim) if norm else nn.Identity()

    def forward(self, regions: Regions) -> torch.Tensor:
        if not isinstance(regions, Regions):
            raise TypeError(
                "encoder=regions reads region features (data.region_features=...), not images"
            )
        if regions.features.shape[-1] != self.feature_dim:
            raise ValueError(
                f"the region files hold {regions.features.shape[-1]}-d features, "
                f"encoder.feature_dim={self.feature_dim}"
            )
        out = self.project(regions.features)
        if self.box_embed is not None:
            if regions.boxes is None:
                raise ValueError(
                    "encoder.box_embed=true needs region boxes: the region files have none "
                    "(give data.region_boxes=DIR or boxes inside the files)"
                )
            out = out + self.box_embed(box_geometry(regions.boxes.to(out.dtype)))
        return self.norm(out) * regions.mask.unsqueeze(-1).to(out.dtype)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        raise TypeError(
            "region inputs have boxes, not a grid: attention is drawn and grounded over boxes"
        )

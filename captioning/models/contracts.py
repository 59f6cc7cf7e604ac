"""The component contracts, as ``typing.Protocol`` s: what an encoder, an attention module and a
decoder must offer to be composed by ``conf/`` and searched by ``captioning.decoding``.

Shapes: B batch, N image regions, T caption steps, V vocabulary, D widths. Nothing here has to
be inherited: any ``nn.Module`` with these members fits (``isinstance(x, AttentionProtocol)``
checks that the members exist; ``captioning.testing`` checks that they behave). The classes in
``captioning.models`` are one implementation of each.

How the config tree builds them (the keyword arguments a user's class receives):

- the encoder: ``encoder(**cfg.encoder)``, its config keys only.
- the refiner (``_partial_: true``): ``refiner(region_dim=, **cfg.refiner)`` from
  :class:`~captioning.models.Captioner`, ``region_dim`` being the encoder's ``out_dim``; the
  decoder is then built for the refiner's ``out_dim`` (and given ``levels=`` when the
  refiner returns several layers and the decoder takes them).
- the attention (``_partial_: true``): ``attention(query_dim=, region_dim=, **cfg.attention)``,
  called by the decoder, which knows both widths; it may be called once per decoder layer.
- the decoder (``_partial_: true``): ``decoder(vocab_size=, encoder_dim=, pad_id=,
  **cfg.decoder)`` from :class:`~captioning.models.Captioner`, where ``encoder_dim`` is the
  encoder's ``out_dim`` and ``cfg.decoder.attention`` is ``${attention}`` (the attention
  partial above, when the decoder's config names it).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class EncoderProtocol(Protocol):
    """Images in, regions out.

    ``forward(images (B, 3, H, W), values in [0, 1]) -> regions (B, N, out_dim)``; the encoder
    normalises the images itself. ``grid(H, W) -> (h, w)`` with ``h * w == N``, the regions
    row-major over an h x w grid, so attention maps can be drawn back onto the image.
    """

    out_dim: int

    def forward(self, images: torch.Tensor) -> torch.Tensor: ...

    def grid(self, height: int, width: int) -> tuple[int, int]: ...


@runtime_checkable
class RefinerProtocol(Protocol):
    """Regions in, refined regions out, between the encoder and the decoder.

    ``forward(regions (B, N, region_dim), mask (B, N) | None) -> (B, N, out_dim)``: the last
    ``levels`` layer outputs concatenated on the feature axis, the earliest first (``levels``
    chunks of ``out_dim // levels``; a decoder that reads them all takes ``levels``). Padded
    regions (mask False) must not change the real regions' outputs, and every output stays
    finite (a zero weight times a NaN would still reach the decoder's context).
    """

    out_dim: int
    levels: int

    def forward(self, regions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class AttentionProtocol(Protocol):
    """Queries attend to regions.

    ``forward(query (B, T, Dq), regions (B, N, De), mask (B, N) | None) -> (context (B, T,
    out_dim), weights (B, T, N))``. ``weights`` is a distribution over the regions: every row
    sums to 1, and where a ``mask`` is given (bool, True for a real region, False for padding)
    the padded regions get exactly 0. A module with several heads reports their mean.
    The mask is optional: today's encoders give every image the same N real regions, and
    the decoders do not pass one.

    The decoders call the two halves of ``forward``: ``prepare(regions)`` once per image (the
    query-independent part, kept in the decoder state as a dict of batch-first tensors) and
    ``attend(query, memory)`` at every step. Beam search keeps one memory row per image for
    its k hypotheses, so ``attend`` must accept ``g`` query rows per memory row, image-major
    (row ``b * g + j`` is hypothesis j of image b). Subclassing
    :class:`captioning.models.attention.Attention` and writing ``prepare`` and ``_attend``
    (one query row per memory row) gives this grouping and ``forward``.
    """

    out_dim: int

    def forward(
        self, query: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def prepare(self, regions: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def attend(
        self, query: torch.Tensor, memory: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@runtime_checkable
class DecoderState(Protocol):
    """A decoder's incremental state: a tree of batch-first tensors.

    ``index_select(index)`` takes rows ``index`` of every tensor (reorders, repeats or drops
    hypotheses); ``index_select(index, skip=frozenset({"memory"}))`` leaves the entries named
    in ``skip`` as they are. :class:`captioning.models.State` (a dict) is one.
    """

    def index_select(self, index: torch.Tensor, skip: frozenset[str] = ...) -> Any: ...


@runtime_checkable
class DecoderProtocol(Protocol):
    """Words from regions, in two modes over the same weights.

    - teacher forcing: ``forward(regions (B, N, De), tokens (B, T)) -> (logits (B, T, V),
      weights (B, T, N))``, position t having seen ``tokens[:, : t + 1]``;
    - incremental: ``init_state(regions) -> state``; ``step(tokens (B,), state) ->
      (logprobs (B, V), weights (B, N), state)``, log-probabilities (a log-softmax) equal to
      ``forward``'s at the same position.

    The state is a :class:`DecoderState`. Its entry ``memory`` (when there is one) holds per-image
    constants: beam search keeps it at one row per image while the other entries hold k rows
    per image, so ``step`` must let its rows outnumber the memory's rows by a whole factor
    (an attention honouring :class:`AttentionProtocol` does this for its part).
    """

    def forward(
        self, regions: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def init_state(self, regions: torch.Tensor) -> DecoderState: ...

    def step(
        self, tokens: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, torch.Tensor, DecoderState]: ...


class AttentionFactory(Protocol):
    """The ``attention`` a decoder receives: a Hydra partial it calls with both widths."""

    def __call__(self, *, query_dim: int, region_dim: int) -> AttentionProtocol: ...


class DecoderFactory(Protocol):
    """The ``decoder`` a :class:`~captioning.models.Captioner` receives (a Hydra partial)."""

    def __call__(self, *, vocab_size: int, encoder_dim: int, pad_id: int) -> DecoderProtocol: ...


class RefinerFactory(Protocol):
    """The ``refiner`` a :class:`~captioning.models.Captioner` receives (a Hydra partial)."""

    def __call__(self, *, region_dim: int) -> RefinerProtocol: ...

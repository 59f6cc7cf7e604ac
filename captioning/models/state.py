"""Decoder state: a tree of batch-first tensors that beam search can re-index."""

from __future__ import annotations

import torch


class State(dict):
    """A dict of tensors (or nested States / lists of them), batch axis first.

    By convention the entry ``memory`` holds per-image constants (the attention's prepared
    regions). Beam search keeps it at one row per image while the other entries hold k rows
    per image (image-major), so a decoder must let its queries outnumber the memory rows by
    a whole factor: ``Attention.attend`` does, by grouping each image's rows.
    """

    def index_select(self, index: torch.Tensor, skip: frozenset[str] = frozenset()) -> State:
        """Rows ``index`` of every tensor: reorders, repeats or drops hypotheses.

        Entries named in ``skip`` are kept as they are (valid when ``index`` maps every row
        to a row holding the same values, e.g. a hypothesis of the same image).
        """
        return State(
            {
                key: value if key in skip else select_rows(value, index)
                for key, value in self.items()
            }
        )


def select_rows(value, index: torch.Tensor):
    """Rows ``index`` of a tensor, a State / dict, or a list / tuple of them (else as is)."""
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index)
    if isinstance(value, State):
        return value.index_select(index)
    if isinstance(value, dict):
        return {key: select_rows(v, index) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(select_rows(v, index) for v in value)
    return value


def start_state(decoder, regions: torch.Tensor, mask: torch.Tensor | None = None):
    """``decoder.init_state(regions, mask)``; a decoder is asked for a mask only when there is
    one (a decoder written before masks existed keeps working on unpadded regions)."""
    if mask is None:
        return decoder.init_state(regions)
    return decoder.init_state(regions, mask)


def decode_masked(decoder, regions: torch.Tensor, tokens: torch.Tensor, mask=None):
    """``decoder(regions, tokens, mask)`` (teacher forcing), the mask passed only when given."""
    if mask is None:
        return decoder(regions, tokens)
    return decoder(regions, tokens, mask)


def per_row(value: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-image constant of the ``memory`` (M, ...) for ``rows`` state rows: each image's
    row repeated ``rows // M`` times, image-major (beam search keeps one memory row per image
    for its k hypotheses, as ``Attention.attend`` groups them)."""
    images = value.shape[0]
    if rows == images:
        return value
    if rows % images:
        raise ValueError(f"{rows} query rows do not group over {images} memory rows")
    return value.repeat_interleave(rows // images, dim=0)

"""Contract checks for an encoder, attention module, decoder or dataset reader: yours or ours.

Call them from your own pytest tests (they need no pytest themselves)::

    from functools import partial

    from captioning import testing
    from my_pkg import GatedAttention

    def test_gated_attention_honours_the_contract():
        testing.check_attention(partial(GatedAttention, attention_dim=16))

Every check raises :class:`ContractError` (an ``AssertionError``) that says what failed, with
the numbers. The contracts themselves are the Protocols of :mod:`captioning.models.contracts`;
``docs/extending.md`` walks through a package that adds one component of each kind.

- :func:`check_encoder`: regions (B, N, out_dim) and a grid of N cells.
- :func:`check_attention`: shapes, weights a distribution over the (unmasked) regions,
  ``prepare``/``attend`` equal to ``forward``, k hypotheses grouped over one memory row.
- :func:`check_decoder`: shapes, teacher forcing equal to ``step`` at every position, a state
  whose rows ``index_select`` can move.
- :func:`check_beam_search`: ``captioning.decoding.beam_search`` (batched) equal to
  :func:`reference_beam_search` (one image and one hypothesis at a time), greedy decoding
  equal to a beam of one.
- :func:`check_padding`: region sets of different sizes, padded into one batch with a mask,
  give each image what it gets alone (teacher forcing, steps, beam search, greedy), the
  padding exactly zero attention.
- :func:`check_learns`: a few AdamW steps on one fixed batch lower the loss by a factor.
- :func:`check_captioner` / :func:`check_components`: all of the above on a composed model.
- :func:`check_reader`: a dataset reader's records, as :class:`~captioning.data.CaptionDataModule`
  calls it (the call is the :class:`DatasetReader` Protocol of :mod:`captioning.data.formats`,
  importable from here too).

Floating-point comparisons use a tolerance that scales with the values compared,
``rtol * max(|expected|.max(), 1)`` (see :func:`assert_scaled_close`): float32 sums round
differently on other CPU kinds, by amounts that grow with the values.

Import the checks from ``captioning.testing``; each is written in the module named after what
it checks (``encoders``, ``attention``, ``decoders``, ``search``, ``padding``, ``captioner``,
``data``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from captioning.testing._common import WEIGHT_SUM_TOLERANCE, ContractError, assert_scaled_close
from captioning.testing.attention import check_attention
from captioning.testing.captioner import check_captioner, check_components, check_learns
from captioning.testing.data import check_reader
from captioning.testing.decoders import check_decoder
from captioning.testing.encoders import check_encoder
from captioning.testing.padding import check_padding, pad_regions
from captioning.testing.search import ReferenceHypothesis, check_beam_search, reference_beam_search

if TYPE_CHECKING:
    from captioning.data.formats import DatasetReader

__all__ = [
    "WEIGHT_SUM_TOLERANCE",
    "ContractError",
    "DatasetReader",
    "ReferenceHypothesis",
    "assert_scaled_close",
    "check_attention",
    "check_beam_search",
    "check_captioner",
    "check_components",
    "check_decoder",
    "check_encoder",
    "check_learns",
    "check_padding",
    "check_reader",
    "pad_regions",
    "reference_beam_search",
]


def __getattr__(name: str) -> Any:
    # DatasetReader lives with the readers; importing captioning.data (and Lightning with it)
    # only when it is asked for keeps `import captioning.testing` as light as the checks need
    if name == "DatasetReader":
        from captioning.data.formats import DatasetReader

        return DatasetReader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

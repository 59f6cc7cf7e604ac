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
- :func:`check_learns`: a few AdamW steps on one fixed batch lower the loss by a factor.
- :func:`check_captioner` / :func:`check_components`: all of the above on a composed model.
- :func:`check_reader`: a dataset reader's records, as :class:`~captioning.data.CaptionDataModule`
  calls it.

Floating-point comparisons use a tolerance that scales with the values compared,
``rtol * max(|expected|.max(), 1)`` (see :func:`assert_scaled_close`): float32 sums round
differently on other CPU kinds, by amounts that grow with the values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from captioning.decoding import beam_search, greedy_decode, length_penalty
from captioning.models.captioner import Captioner

if TYPE_CHECKING:
    from captioning.data.formats import BadData, ImageRecord

WEIGHT_SUM_TOLERANCE = 1e-5  # |sum_n weights - 1| per row: float32 rounding of a softmax


class ContractError(AssertionError):
    """A component does not honour its contract; the message says where and by how much."""


class DatasetReader(Protocol):
    """How :class:`~captioning.data.CaptionDataModule` calls ``data.reader`` (a Hydra partial).

    The keywords below come from the data config's top level (``data.root``, ``data.layout``,
    ``data.image_dir``, ``data.on_error`` as a :class:`~captioning.data.BadData`,
    ``data.allow_outside_root``); the keys under ``data.reader`` (besides ``_target_`` and
    ``_partial_``) arrive as further keyword arguments. It returns one
    :class:`~captioning.data.ImageRecord` per image: a unique ``image_id``, the image file's
    ``path``, its raw (untokenised) ``captions`` and its ``split`` (``train`` | ``val`` |
    ``test``). A bad record is reported with ``errors(kind, message)``, which raises or counts
    it as ``data.on_error`` says; the reader then leaves it out.
    """

    def __call__(
        self,
        root: Path,
        *,
        layout: str,
        image_dir: str | None,
        errors: BadData,
        allow_outside_root: bool,
    ) -> list[ImageRecord]: ...


# --------------------------------------------------------------------------- helpers


def assert_scaled_close(
    actual: torch.Tensor | float,
    expected: torch.Tensor | float,
    rtol: float = 1e-5,
    what: str = "values",
) -> None:
    """``|actual - expected| <= rtol * scale + rtol * |expected|`` elementwise, where ``scale``
    is ``max(|expected|.max(), 1)``; equal infinities pass, NaN fails."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise ContractError(
            f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
        )
    if not expected.numel():
        return
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    finite = expected[expected.isfinite()]
    scale = max(float(finite.abs().max()) if finite.numel() else 0.0, 1.0)
    allowed = rtol * scale + rtol * expected.abs()
    difference = (actual - expected).abs()
    good = (actual == expected) | (difference <= allowed)
    if bool(good.all()):
        return
    excess = torch.where(good, torch.zeros_like(difference), difference.nan_to_num(torch.inf))
    worst = int(excess.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), expected.shape))
    raise ContractError(
        f"{what} differ at {int((~good).sum())} of {expected.numel()} entries: the largest "
        f"|difference| is {float(excess.flatten()[worst]):.3g} at index {index} (got "
        f"{float(actual[index]):.6g}, expected {float(expected[index]):.6g}); allowed "
        f"{rtol:g} x {scale:.3g} + {rtol:g} x |expected|"
    )


def _fail_unless(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def _shape(tensor: object, expected: tuple[int, ...], what: str) -> torch.Tensor:
    """``tensor`` as a tensor of shape ``expected`` with finite values, or a ContractError."""
    if not isinstance(tensor, torch.Tensor):
        raise ContractError(f"{what}: a {type(tensor).__name__}, not a tensor")
    if tuple(tensor.shape) != expected:
        raise ContractError(f"{what}: shape {tuple(tensor.shape)}, expected {expected}")
    if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
        raise ContractError(f"{what}: {int((~tensor.isfinite()).sum())} non-finite values")
    return tensor


def _check_distribution(weights: torch.Tensor, what: str, mask: torch.Tensor | None = None) -> None:
    """Non-negative rows summing to 1; exactly 0 where ``mask`` (B, N) is False."""
    smallest = float(weights.min())
    _fail_unless(smallest >= 0, f"{what}: a negative weight ({smallest:.3g})")
    error = (weights.double().sum(-1) - 1).abs()
    worst = float(error.max())
    if worst > WEIGHT_SUM_TOLERANCE:
        row = tuple(int(i) for i in torch.unravel_index(error.argmax(), error.shape))
        raise ContractError(
            f"{what}: rows must sum to 1 over the regions; row {row} sums to "
            f"{float(weights.double().sum(-1)[row]):.7f} (|error| {worst:.3g} > "
            f"{WEIGHT_SUM_TOLERANCE:g})"
        )
    if mask is not None:
        padded = ~mask.unsqueeze(1).expand_as(weights)  # (B, T, N)
        leaked = weights[padded].abs()
        _fail_unless(
            not leaked.numel() or float(leaked.max()) == 0.0,
            f"{what}: padded regions (mask False) must get exactly 0, got up to "
            f"{float(leaked.max()) if leaked.numel() else 0.0:.3g}",
        )


def _device(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def _evaluating(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block (no dropout), then the mode it had."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- encoder


@torch.no_grad()
def check_encoder(
    encoder: nn.Module,
    image_size: int | tuple[int, int] = 224,
    *,
    batch: int = 2,
    images: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``encoder(images (B, 3, H, W)) -> regions (B, N, out_dim)``, finite, with
    ``grid(H, W) == (h, w)`` and ``h * w == N``. Runs in eval mode on random images in [0, 1]
    (or on ``images``); returns the regions."""
    name = type(encoder).__name__
    out_dim = getattr(encoder, "out_dim", None)
    _fail_unless(
        isinstance(out_dim, int) and not isinstance(out_dim, bool) and out_dim >= 1,
        f"{name}.out_dim must be an integer >= 1 (the region width), got {out_dim!r}",
    )
    _fail_unless(callable(getattr(encoder, "grid", None)), f"{name} has no grid(height, width)")
    if images is None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        images = torch.rand(batch, 3, height, width, generator=_generator(seed))
    images = images.to(_device(encoder))
    height, width = int(images.shape[-2]), int(images.shape[-1])
    with _evaluating(encoder):
        regions = encoder(images)
    _fail_unless(
        isinstance(regions, torch.Tensor) and regions.dim() == 3,
        f"{name}({tuple(images.shape)}): expected regions (B, N, out_dim), got "
        f"{tuple(regions.shape) if isinstance(regions, torch.Tensor) else type(regions).__name__}",
    )
    regions_n = int(regions.shape[1])
    _shape(regions, (len(images), regions_n, out_dim), f"{name} regions of {height}x{width} images")
    grid = encoder.grid(height, width)
    _fail_unless(
        isinstance(grid, tuple) and len(grid) == 2 and all(isinstance(side, int) for side in grid),
        f"{name}.grid({height}, {width}) must be a tuple (h, w) of ints, got {grid!r}",
    )
    _fail_unless(
        grid[0] * grid[1] == regions_n,
        f"{name}.grid({height}, {width}) = {grid}: {grid[0] * grid[1]} cells for "
        f"{regions_n} regions",
    )
    return regions


# --------------------------------------------------------------------------- attention


def _attention_modules(
    attention: nn.Module | Callable[..., nn.Module], query_dim: int, region_dim: int
) -> list[tuple[nn.Module, int, int]]:
    """The modules to check with their (query, region) widths: a factory is built both with
    different widths and with equal ones (the two cases a decoder may give it)."""
    if isinstance(attention, nn.Module):
        return [(attention, query_dim, region_dim)]
    widths = [(query_dim, region_dim)]
    if query_dim != region_dim:
        widths.append((region_dim, region_dim))
    return [(attention(query_dim=q, region_dim=r), q, r) for q, r in widths]


def _takes_mask(module: nn.Module) -> bool:
    try:
        return "mask" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def check_attention(
    attention: nn.Module | Callable[..., nn.Module],
    *,
    query_dim: int = 12,
    region_dim: int = 16,
    batch: int = 3,
    regions: int = 7,
    steps: int = 4,
    group: int = 3,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """An attention module against :class:`~captioning.models.contracts.AttentionProtocol`.

    Args:
        attention: a module built for ``query_dim`` / ``region_dim``, or (better) what its
            config gives the decoder: a factory ``attention(query_dim=, region_dim=)``, e.g.
            ``functools.partial(MyAttention, attention_dim=16)``, then checked both with
            different widths and with ``query_dim == region_dim``.
        batch / regions / steps: B, N and T of the random inputs.
        group: query rows per memory row in the beam-search grouping check.
        rtol: relative tolerance of the comparisons (see :func:`assert_scaled_close`).

    Checks, in eval mode: ``out_dim``; context (B, T, out_dim) and weights (B, T, N), finite;
    weights >= 0 with rows summing to 1; ``attend(query, prepare(regions))`` equal to
    ``forward``; ``group`` query rows per image against one memory row equal to the same
    rows against ``group`` copies of it; with a ``mask`` argument, padded regions at exactly 0
    and an all-True mask equal to none; in train mode, the context depends on every parameter
    (each receives a gradient, possibly zero: a softmax ignores a score's bias).
    """
    generator = _generator(seed)
    for module, q_dim, r_dim in _attention_modules(attention, query_dim, region_dim):
        name = f"{type(module).__name__}(query_dim={q_dim}, region_dim={r_dim})"
        out_dim = getattr(module, "out_dim", None)
        _fail_unless(
            isinstance(out_dim, int) and not isinstance(out_dim, bool) and out_dim >= 1,
            f"{name}.out_dim must be an integer >= 1 (the context width), got {out_dim!r}",
        )
        for method in ("prepare", "attend"):
            _fail_unless(
                callable(getattr(module, method, None)),
                f"{name} has no {method}(): the decoders call prepare(regions) once per image "
                "and attend(query, memory) every step (subclass "
                "captioning.models.attention.Attention and write prepare and _attend)",
            )
        device = _device(module)
        query = torch.randn(batch, steps, q_dim, generator=generator).to(device)
        image = torch.randn(batch, regions, r_dim, generator=generator).to(device)
        with torch.no_grad(), _evaluating(module):
            context, weights = module(query, image)
            _shape(context, (batch, steps, out_dim), f"{name} context")
            _shape(weights, (batch, steps, regions), f"{name} weights")
            _check_distribution(weights, f"{name} weights")
            prepared = module.attend(query, module.prepare(image))
            assert_scaled_close(
                prepared[0], context, rtol, f"{name}: attend(prepare) context vs forward"
            )
            assert_scaled_close(
                prepared[1], weights, rtol, f"{name}: attend(prepare) weights vs forward"
            )
            rows = torch.randn(batch * group, steps, q_dim, generator=generator).to(device)
            grouped = module.attend(rows, module.prepare(image))
            copied = module.attend(rows, module.prepare(image.repeat_interleave(group, dim=0)))
            _shape(grouped[0], (batch * group, steps, out_dim), f"{name} grouped context")
            _shape(grouped[1], (batch * group, steps, regions), f"{name} grouped weights")
            for ours, reference, part in zip(grouped, copied, ("context", "weights"), strict=True):
                assert_scaled_close(
                    ours, reference, rtol,
                    f"{name}: {part} of {group} query rows per image against one memory row "
                    f"vs against {group} copies of it (beam search)",
                )  # fmt: skip
            if _takes_mask(module):
                _check_mask(module, name, query, image, context, weights, rtol)
        _check_attention_gradients(module, name, query, image)


def _check_mask(
    module: nn.Module,
    name: str,
    query: torch.Tensor,
    image: torch.Tensor,
    context: torch.Tensor,
    weights: torch.Tensor,
    rtol: float,
) -> None:
    batch, regions = image.shape[:2]
    unmasked = module(
        query, image, mask=torch.ones(batch, regions, dtype=torch.bool, device=image.device)
    )
    assert_scaled_close(
        unmasked[0], context, rtol, f"{name}: context with an all-True mask vs none"
    )
    assert_scaled_close(
        unmasked[1], weights, rtol, f"{name}: weights with an all-True mask vs none"
    )
    mask = torch.ones(batch, regions, dtype=torch.bool, device=image.device)
    mask[0, (regions + 1) // 2 :] = False  # image 0: its last regions are padding
    if batch > 1:
        mask[1, 1:] = False  # image 1: one real region
    masked_context, masked_weights = module(query, image, mask=mask)
    _shape(masked_context, tuple(context.shape), f"{name} masked context")
    _shape(masked_weights, tuple(weights.shape), f"{name} masked weights")
    _check_distribution(masked_weights, f"{name} masked weights", mask)


def _check_attention_gradients(
    module: nn.Module, name: str, query: torch.Tensor, image: torch.Tensor
) -> None:
    if not any(parameter.requires_grad for parameter in module.parameters()):
        return
    was_training = module.training
    module.train()
    try:
        module.zero_grad(set_to_none=True)
        context, _ = module(query, image)
        context.square().sum().backward()
    finally:
        module.train(was_training)
    missing = [
        key
        for key, parameter in module.named_parameters()
        if parameter.requires_grad and parameter.grad is None
    ]
    module.zero_grad(set_to_none=True)
    _fail_unless(
        not missing, f"{name}: parameters the context does not depend on (no gradient): {missing}"
    )


# --------------------------------------------------------------------------- decoder


def _vocab_size(decoder: nn.Module, regions: torch.Tensor) -> int:
    first = torch.ones(len(regions), dtype=torch.long, device=regions.device)
    logprobs, _, _ = decoder.step(first, decoder.init_state(regions))
    return int(logprobs.shape[-1])


def _reindexing(batch: int, device: torch.device) -> torch.Tensor:
    """Rows reversed, the first repeated last: a reorder, a repeat and a drop at once."""
    index = torch.arange(batch - 1, -1, -1, device=device)
    if batch > 1:
        index[-1] = index[0]
    return index


@torch.no_grad()
def check_decoder(
    decoder: nn.Module,
    regions: torch.Tensor,
    tokens: torch.Tensor | None = None,
    *,
    steps: int = 6,
    rtol: float = 1e-5,
    seed: int = 0,
) -> None:
    """A decoder against :class:`~captioning.models.contracts.DecoderProtocol`, in eval mode.

    Args:
        decoder: the decoder (built with ``vocab_size=``, ``encoder_dim=regions.shape[-1]``).
        regions: (B, N, De) regions, e.g. from :func:`check_encoder` or ``torch.randn``.
        tokens: (B, T) word ids to teacher-force; default: ``steps`` random ids in 1..V-1.
        rtol: relative tolerance (see :func:`assert_scaled_close`).

    Checks: teacher forcing gives logits (B, T, V) and weights (B, T, N), the weights a
    distribution over the regions; ``init_state`` then ``step`` at each position t gives
    log-probabilities (B, V) equal to ``log_softmax(logits[:, t])`` and weights (B, N) equal
    to ``weights[:, t]``; half-way, ``state.index_select(index)`` moves the state's rows (the
    step on the re-indexed state equals rows ``index`` of the step on the original).
    """
    name = type(decoder).__name__
    for method in ("init_state", "step"):
        _fail_unless(callable(getattr(decoder, method, None)), f"{name} has no {method}()")
    batch, regions_n = int(regions.shape[0]), int(regions.shape[1])
    with _evaluating(decoder):
        vocab = _vocab_size(decoder, regions)
        if tokens is None:
            tokens = torch.randint(1, vocab, (batch, steps), generator=_generator(seed))
        tokens = tokens.to(regions.device)
        length = int(tokens.shape[1])
        logits, weights = decoder(regions, tokens)
        _shape(logits, (batch, length, vocab), f"{name} teacher-forced logits")
        _shape(weights, (batch, length, regions_n), f"{name} teacher-forced weights")
        _check_distribution(weights, f"{name} teacher-forced weights")
        expected = logits.log_softmax(-1)  # (B, T, V)
        state = decoder.init_state(regions)
        _fail_unless(
            callable(getattr(state, "index_select", None)),
            f"{name}.init_state returned a {type(state).__name__} without index_select(index): "
            "beam search re-indexes it (use captioning.models.State)",
        )
        index = _reindexing(batch, regions.device)
        for t in range(length):
            if t == length // 2:
                picked = decoder.step(tokens[index, t], state.index_select(index))
            logprobs, step_weights, state = decoder.step(tokens[:, t], state)
            _shape(logprobs, (batch, vocab), f"{name}.step log-probabilities at position {t}")
            _shape(step_weights, (batch, regions_n), f"{name}.step weights at position {t}")
            assert_scaled_close(
                logprobs, expected[:, t], rtol,
                f"{name}: step log-probabilities vs log_softmax(teacher-forced logits) at position {t}",
            )  # fmt: skip
            assert_scaled_close(
                step_weights, weights[:, t], rtol,
                f"{name}: step weights vs teacher-forced weights at position {t}",
            )  # fmt: skip
            if t == length // 2:
                what = f"{name}: step after state.index_select({index.tolist()}) at position {t}"
                assert_scaled_close(picked[0], logprobs[index], rtol, f"{what}, log-probabilities")
                assert_scaled_close(picked[1], step_weights[index], rtol, f"{what}, weights")


# --------------------------------------------------------------------------- beam search


class ReferenceHypothesis(NamedTuple):
    """The best hypothesis of one image from :func:`reference_beam_search`."""

    tokens: list[int]  # after <bos>: <eos> included when reached, <pad> after it
    logprob: float  # the sum of its log-probabilities
    score: float  # logprob / length penalty: what ranks the final hypotheses
    weights: torch.Tensor  # (len(tokens), N) attention of each step


@torch.no_grad()
def reference_beam_search(
    decoder: nn.Module,
    regions: torch.Tensor,
    beam_size: int,
    max_len: int,
    *,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    block_trigrams: bool = False,
    suppress_ids: Sequence[int] = (),
    length_penalty_mode: str = "none",
    alpha: float = 0.6,
) -> list[ReferenceHypothesis]:
    """Beam search one image and one hypothesis at a time, in Python lists: the specification
    ``captioning.decoding.beam_search`` must match. It costs B x max_len x k x V Python steps:
    keep the vocabulary small (tens of words)."""
    results = []
    never = {pad_id, bos_id, *suppress_ids}
    for b in range(regions.shape[0]):
        # (score, tokens, finished, state, weights of each step)
        hypotheses = [(0.0, [], False, decoder.init_state(regions[b : b + 1]), [])]
        for _ in range(max_len):
            candidates = []
            for score, tokens, done, state, weights in hypotheses:
                if done:
                    candidates.append(
                        (score, [*tokens, pad_id], True, state, [*weights, weights[-1]])
                    )
                    continue
                previous = torch.tensor([tokens[-1] if tokens else bos_id], device=regions.device)
                logprobs, step_weights, new_state = decoder.step(previous, state)
                logprobs = logprobs[0].double().tolist()
                for word, logprob in enumerate(logprobs):
                    if word in never:
                        continue
                    trigram = [*tokens[-2:], word]
                    if (
                        block_trigrams
                        and len(tokens) >= 2
                        and any(tokens[i : i + 3] == trigram for i in range(len(tokens) - 2))
                    ):
                        continue
                    candidates.append(
                        (score + logprob, [*tokens, word], word == eos_id, new_state,
                         [*weights, step_weights[0]])
                    )  # fmt: skip
            candidates.sort(key=lambda candidate: -candidate[0])
            hypotheses = candidates[:beam_size]
            if all(h[2] for h in hypotheses):
                break
        lengths = torch.tensor([sum(t != pad_id for t in h[1]) for h in hypotheses])
        divisors = length_penalty(lengths, length_penalty_mode, alpha).tolist()
        penalised = [h[0] / d for h, d in zip(hypotheses, divisors, strict=True)]
        best = max(range(len(hypotheses)), key=lambda i: penalised[i])
        score, tokens, _, _, weights = hypotheses[best]
        results.append(ReferenceHypothesis(tokens, score, penalised[best], torch.stack(weights)))
    return results


class _ShapedEos:
    """A decoder whose ``<eos>`` log-probability is lowered by 10 for the first ``EARLY``
    words and raised by ``boost`` after (then renormalised): even an untrained decoder then
    gives hypotheses of a few words that end at different steps, so the searches' bookkeeping
    of re-indexed, finished and dropped hypotheses is exercised.

    The step count rides in the state under ``KEY`` (a plain int, which ``index_select``
    keeps as it is); a state that is no dict gets the boost from the first word on.
    """

    KEY = "captioning.testing.step"
    EARLY = 2

    def __init__(self, decoder: nn.Module, eos_id: int, boost: float) -> None:
        self.decoder, self.eos_id, self.boost = decoder, eos_id, boost

    def _tag(self, state, step: int | None):
        if step is not None and isinstance(state, dict):
            state[self.KEY] = step
        return state

    def init_state(self, regions: torch.Tensor):
        return self._tag(self.decoder.init_state(regions), 0)

    def step(self, tokens: torch.Tensor, state):
        step = state.get(self.KEY) if isinstance(state, dict) else None
        logprobs, weights, state = self.decoder.step(tokens, state)
        logprobs = logprobs.clone()
        logprobs[:, self.eos_id] += -10.0 if step is not None and step < self.EARLY else self.boost
        return (
            logprobs.log_softmax(-1),
            weights,
            self._tag(state, None if step is None else step + 1),
        )


@torch.no_grad()
def check_beam_search(
    decoder: nn.Module,
    regions: torch.Tensor,
    *,
    beam_sizes: Sequence[int] = (1, 3),
    max_len: int = 8,
    bos_id: int = 1,
    eos_id: int = 2,
    pad_id: int = 0,
    block_trigrams: bool = False,
    suppress_ids: Sequence[int] = (),
    length_penalty_mode: str = "none",
    alpha: float = 0.6,
    eos_boost: float | None = 1.5,
    rtol: float = 1e-5,
    weights_atol: float = 1e-6,
) -> None:
    """The batched ``beam_search`` over this decoder equals :func:`reference_beam_search`.

    For each beam size: the best hypothesis of every image has the reference's words (then
    ``<pad>``), its log-probability and score (relative tolerance ``rtol``) and the attention
    of each real step (absolute ``weights_atol``); ``suppress_ids`` never appear. Then greedy
    decoding equals a beam of one. The decoder runs in eval mode, its ``<eos>``
    log-probability lowered by 10 for the first two words and raised by ``eos_boost`` after,
    so that the hypotheses have a few words and end at different steps (None leaves the
    decoder as it is). Use a small vocabulary: the reference runs in Python.
    """
    name = type(decoder).__name__
    searched = _ShapedEos(decoder, eos_id, eos_boost) if eos_boost is not None else decoder
    ids = {"bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id}
    with _evaluating(decoder):
        for k in beam_sizes:
            out = beam_search(
                searched, regions, beam_size=k, max_len=max_len,
                length_penalty_mode=length_penalty_mode, alpha=alpha,
                block_trigrams=block_trigrams, suppress_ids=tuple(suppress_ids), **ids,
            )  # fmt: skip
            expected = reference_beam_search(
                searched, regions, k, max_len, block_trigrams=block_trigrams,
                suppress_ids=suppress_ids, length_penalty_mode=length_penalty_mode,
                alpha=alpha, **ids,
            )  # fmt: skip
            for b, reference in enumerate(expected):
                where = f"{name}, beam_size={k}, image {b}"
                got = out.tokens[b, 0].tolist()
                words = reference.tokens
                _fail_unless(
                    got[: len(words)] == words and all(t == pad_id for t in got[len(words) :]),
                    f"{where}: the batched search gave {got}, the per-image reference {words}",
                )
                assert_scaled_close(
                    out.logprobs[b, 0], torch.tensor(reference.logprob), rtol,
                    f"{where}: log-probability",
                )  # fmt: skip
                assert_scaled_close(
                    out.scores[b, 0], torch.tensor(reference.score), rtol, f"{where}: score"
                )
                real = sum(t != pad_id for t in words)  # attention after <eos> is not defined
                difference = (out.weights[b, 0, :real] - reference.weights[:real].float()).abs()
                _fail_unless(
                    not difference.numel() or float(difference.max()) <= weights_atol,
                    f"{where}: attention differs from the reference's by up to "
                    f"{float(difference.max()) if difference.numel() else 0.0:.3g} "
                    f"(allowed {weights_atol:g})",
                )
            for word in suppress_ids:
                _fail_unless(
                    not bool((out.tokens == word).any()),
                    f"{name}, beam_size={k}: the suppressed word {word} was generated",
                )
        greedy_tokens, greedy_weights = greedy_decode(searched, regions, max_len=max_len, **ids)
        single = beam_search(searched, regions, beam_size=1, max_len=max_len, **ids)
        _fail_unless(
            torch.equal(single.tokens[:, 0], greedy_tokens),
            f"{name}: greedy decoding gave {greedy_tokens.tolist()}, a beam of one "
            f"{single.tokens[:, 0].tolist()}",
        )
        assert_scaled_close(
            single.weights[:, 0], greedy_weights.float(), rtol,
            f"{name}: attention of greedy decoding vs a beam of one",
        )  # fmt: skip


# --------------------------------------------------------------------------- learning


def check_learns(
    captioner: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 3e-3,
    factor: float = 0.5,
    train_encoder: bool = True,
    pad_id: int = 0,
) -> list[float]:
    """``steps`` AdamW steps of teacher-forced cross-entropy on one fixed batch bring the
    loss to at most ``factor`` x the first one; returns the losses.

    Args:
        captioner: ``encode(images) -> regions`` and ``forward(images | regions, tokens)``
            (a :class:`~captioning.models.Captioner`); it is trained in place.
        images: (B, 3, H, W) images.
        tokens: (B, T) captions: ``tokens[:, :-1]`` in, ``tokens[:, 1:]`` predicted
            (``pad_id`` targets ignored).
        train_encoder: False computes the regions once and trains the decoder only (a frozen
            encoder, as with ``data.cache_features``).
    """
    device = _device(captioner)
    images, tokens = images.to(device), tokens.to(device)
    was_training = captioner.training
    if train_encoder:
        inputs, module = images, captioner
    else:
        with torch.no_grad(), _evaluating(captioner.encoder):
            inputs = captioner.encode(images)
        module = captioner.decoder
    parameters = [p for p in module.parameters() if p.requires_grad]
    _fail_unless(bool(parameters), f"{type(module).__name__} has no trainable parameters")
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    losses: list[float] = []
    module.train()
    try:
        for _ in range(steps):
            logits, _ = captioner(inputs, tokens[:, :-1])
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=pad_id
            )
            _fail_unless(
                bool(torch.isfinite(loss.detach())),
                f"loss {loss.item()} after {len(losses)} AdamW steps",
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    finally:
        captioner.train(was_training)
    _fail_unless(
        losses[-1] <= factor * losses[0],
        f"{type(captioner).__name__} did not learn one fixed batch: the loss went from "
        f"{losses[0]:.4f} to {losses[-1]:.4f} in {steps} AdamW steps (lr {lr:g}), expected "
        f"<= {factor:g} x {losses[0]:.4f} = {factor * losses[0]:.4f}; losses "
        f"{[round(x, 3) for x in losses]}",
    )
    return losses


# --------------------------------------------------------------------------- all together


def check_captioner(
    captioner: nn.Module,
    images: torch.Tensor,
    tokens: torch.Tensor,
    *,
    beam_sizes: Sequence[int] = (1, 3),
    max_len: int = 8,
    learn_steps: int = 30,
    lr: float = 3e-3,
    factor: float = 0.5,
    train_encoder: bool = True,
    rtol: float = 1e-5,
) -> None:
    """Every check on a composed model (``captioner.encoder``, ``captioner.decoder``):
    :func:`check_encoder` on ``images``, :func:`check_decoder` on their regions with
    ``tokens``, :func:`check_beam_search` (skipped when ``beam_sizes`` is empty) and
    :func:`check_learns` (skipped when ``learn_steps`` is 0; trains the captioner in place)."""
    images = images.to(_device(captioner))
    regions = check_encoder(captioner.encoder, images=images)
    check_decoder(captioner.decoder, regions, tokens, rtol=rtol)
    if beam_sizes:
        check_beam_search(
            captioner.decoder, regions, beam_sizes=beam_sizes, max_len=max_len, rtol=rtol
        )
    if learn_steps:
        check_learns(
            captioner, images, tokens, steps=learn_steps, lr=lr, factor=factor,
            train_encoder=train_encoder,
        )  # fmt: skip


def check_components(
    encoder: nn.Module,
    attention: Callable[..., nn.Module] | None,
    decoder: Callable[..., nn.Module],
    *,
    vocab_size: int = 19,
    image_size: int | tuple[int, int] = 32,
    batch: int = 3,
    steps: int = 6,
    seed: int = 0,
    **options: Any,
) -> Captioner:
    """Compose ``encoder`` + ``decoder`` (owning ``attention``) as the config tree does and run
    every check; returns the trained :class:`~captioning.models.Captioner`.

    Args:
        encoder: the encoder module.
        attention: the attention factory (``attention(query_dim=, region_dim=)``, what
            ``conf/attention/*.yaml`` gives), checked with :func:`check_attention`
            (``region_dim`` = the encoder's ``out_dim``) and handed to the decoder as
            ``attention=``; None for a decoder that brings its own.
        decoder: the decoder factory (``decoder(vocab_size=, encoder_dim=, pad_id=, attention=)``).
        vocab_size / image_size / batch / steps: V, H x W, B and T+1 of the random batch.
        options: for :func:`check_captioner` (``beam_sizes``, ``learn_steps``, ``factor``, ...).
    """
    if attention is not None:
        check_attention(attention, region_dim=encoder.out_dim, seed=seed)
        decoder = partial(decoder, attention=attention)
    captioner = Captioner(encoder, decoder, vocab_size=vocab_size)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    generator = _generator(seed)
    images = torch.rand(batch, 3, height, width, generator=generator)
    tokens = torch.randint(1, vocab_size, (batch, steps), generator=generator)
    check_captioner(captioner, images, tokens, **options)
    return captioner


# --------------------------------------------------------------------------- data


def check_reader(
    reader: Callable[..., Sequence[ImageRecord]],
    root: str | Path,
    *,
    layout: str = "auto",
    image_dir: str | None = None,
    on_error: str = "raise",
    allow_outside_root: bool = False,
    splits: Sequence[str] = ("train", "val", "test"),
) -> list[ImageRecord]:
    """Call a dataset reader as :class:`~captioning.data.CaptionDataModule` does (see
    :class:`DatasetReader`) and check its records: ImageRecords with unique non-empty ids,
    image files that exist, non-empty string captions, a split of train/val/test, and images
    in every split of ``splits``. Returns the records."""
    from captioning.data.formats import SPLITS, BadData, ImageRecord

    name = getattr(getattr(reader, "func", reader), "__name__", repr(reader))
    records = list(
        reader(
            root=Path(root), layout=layout, image_dir=image_dir, errors=BadData(on_error),
            allow_outside_root=allow_outside_root,
        )
    )  # fmt: skip
    seen: set[str] = set()
    for number, record in enumerate(records):
        where = f"{name}: record {number}"
        _fail_unless(
            isinstance(record, ImageRecord),
            f"{where} is a {type(record).__name__}, not a captioning.data.ImageRecord",
        )
        _fail_unless(
            isinstance(record.image_id, str) and bool(record.image_id),
            f"{where}: image_id {record.image_id!r} is not a non-empty string",
        )
        _fail_unless(record.image_id not in seen, f"{where}: image_id {record.image_id!r} repeats")
        seen.add(record.image_id)
        _fail_unless(
            isinstance(record.path, Path) and record.path.is_file(),
            f"{where} ({record.image_id}): the image {record.path} is not a file",
        )
        _fail_unless(
            isinstance(record.captions, tuple)
            and bool(record.captions)
            and all(isinstance(c, str) and c.strip() for c in record.captions),
            f"{where} ({record.image_id}): captions must be a non-empty tuple of non-empty "
            f"strings, got {record.captions!r}",
        )
        _fail_unless(
            record.split in SPLITS,
            f"{where} ({record.image_id}): split {record.split!r} is not one of {SPLITS}",
        )
    counts = {split: sum(r.split == split for r in records) for split in splits}
    empty = [split for split, count in counts.items() if not count]
    _fail_unless(not empty, f"{name}({root}): no images in the {'/'.join(empty)} split ({counts})")
    return records

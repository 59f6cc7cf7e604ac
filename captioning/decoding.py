"""Decoding over the decoder's incremental contract (``init_state`` / ``step``) only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captioning.models.state import select_rows, start_state


@torch.no_grad()
def greedy_decode(
    decoder: nn.Module,
    regions: torch.Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_len: int = 30,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step (``mask`` (B, N): the real regions of padded sets).

    Returns:
        tokens (B, L): generated ids after ``<bos>``, ``<eos>`` included, ``<pad>`` after it.
        weights (B, L, N): the attention weights of the step that emitted each token (zero
            after ``<eos>``).
    """
    batch = regions.shape[0]
    state = start_state(decoder, regions, mask)
    previous = torch.full((batch,), bos_id, dtype=torch.long, device=regions.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=regions.device)
    tokens, weights = [], []
    for _ in range(max_len):
        logprobs, step_weights, state = decoder.step(previous, state)
        logprobs = logprobs.clone()
        logprobs[:, [pad_id, bos_id]] = float("-inf")  # never words, whatever the model says
        choice = logprobs.argmax(dim=-1)  # (B,)
        choice = torch.where(finished, torch.full_like(choice, pad_id), choice)
        tokens.append(choice)
        weights.append(step_weights.masked_fill(finished.unsqueeze(1), 0.0))
        finished = finished | (choice == eos_id)
        previous = choice
        if bool(finished.all()):
            break
    return torch.stack(tokens, dim=1), torch.stack(weights, dim=1)


PER_IMAGE = frozenset({"memory"})  # State entries kept once per image (see ``State``)


@dataclass
class BeamOutput:
    """The ``n_best`` hypotheses of each image, best first.

    tokens (B, n, L): ids after ``<bos>``, ``<eos>`` included when reached, ``<pad>`` after.
    scores (B, n): the ranking score (sum of log-probabilities, length-penalised if asked).
    logprobs (B, n): the plain sum of log-probabilities.
    weights (B, n, L, N): attention of the step that emitted each token (zero after ``<eos>``).
    """

    tokens: torch.Tensor
    scores: torch.Tensor
    logprobs: torch.Tensor
    weights: torch.Tensor


def length_penalty(lengths: torch.Tensor, mode: str = "none", alpha: float = 0.6) -> torch.Tensor:
    """Divisor of a hypothesis's log-probability: 1, its length, or Wu et al.'s ((5+l)/6)^alpha."""
    lengths = lengths.to(torch.float32).clamp(min=1)
    if mode == "none":
        return torch.ones_like(lengths)
    if mode == "average":
        return lengths
    if mode == "wu":
        return ((5.0 + lengths) / 6.0) ** alpha
    raise ValueError(f"decoding.length_penalty must be none, average or wu, got {mode!r}")


def _count(value: Any, key: str, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"decoding.{key} must be an integer >= {least}, got {value!r}")


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class DecodingConfig:
    """How captions are decoded: the ``decoding`` config group (``conf/decoding/``), typed.

    The defaults here fill only keys a stored setting lacks (a checkpoint written before the
    key existed); every run gets its values from its config group. Checked when built, each
    error naming its ``decoding.<key>``.

    Three strategies: beam search (``beam_size`` hypotheses; 1 is greedy), diverse beam
    search (``groups`` > 1: the beam split into groups kept apart by ``diversity``) and
    sampling (``sample``: ``n_best`` captions drawn per image; ``beam_size`` is not used and
    ``groups`` must be 1).

    Args:
        max_len: longest caption decoded, in words.
        beam_size: hypotheses kept per image (1: greedy).
        n_best: captions returned per image, best first (<= beam_size for the searches; the
            number of samples per image when sampling).
        length_penalty: ``none`` | ``average`` | ``wu`` (with ``alpha``).
        alpha: the exponent of Wu et al.'s penalty.
        block_trigrams: forbid a word that would repeat a trigram of the hypothesis.
        suppress_unk: never generate ``<unk>``.
        groups: diverse beam search's groups of ``beam_size / groups`` beams (1: beam search).
        diversity: the Hamming diversity penalty: a group's word loses ``diversity`` per time
            the earlier groups of the image chose it at this step.
        sample: draw the captions from the model instead of searching.
        temperature: divides the log-probabilities before sampling (< 1: sharper).
        top_k: sample among the ``top_k`` most likely words only (0: all).
        top_p: sample within the smallest set of words of probability >= ``top_p`` (1: all).
        seed: seeds the sampling generator (the same seed, the same captions).
    """

    max_len: int = 30
    beam_size: int = 1
    n_best: int = 1
    length_penalty: str = "none"
    alpha: float = 0.6
    block_trigrams: bool = False
    suppress_unk: bool = False
    groups: int = 1
    diversity: float = 0.5
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for key in ("beam_size", "max_len", "n_best", "groups"):
            _count(getattr(self, key), key)
        _count(self.top_k, "top_k", least=0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"decoding.seed must be an integer, got {self.seed!r}")
        for key in ("block_trigrams", "suppress_unk", "sample"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(
                    f"decoding.{key} must be true or false, got {getattr(self, key)!r}"
                )
        if self.sample and self.groups > 1:
            raise ValueError(
                f"decoding.groups={self.groups} with decoding.sample=true: groups split a beam "
                "search; set decoding.groups=1 to sample, or decoding.sample=false"
            )
        if not self.sample and self.n_best > self.beam_size:
            raise ValueError(
                f"decoding.n_best={self.n_best} exceeds decoding.beam_size={self.beam_size}: "
                "a search keeps only beam_size hypotheses"
            )
        if self.beam_size % self.groups:
            raise ValueError(
                f"decoding.groups={self.groups} does not divide decoding.beam_size="
                f"{self.beam_size}: each group holds beam_size / groups beams"
            )
        length_penalty(torch.ones(1), self.length_penalty)  # names the key
        for key, least in (("alpha", "a number >= 0"), ("diversity", "a number >= 0")):
            value = getattr(self, key)
            if not _number(value) or value < 0:
                raise ValueError(f"decoding.{key} must be {least}, got {value!r}")
        if not _number(self.temperature) or self.temperature <= 0:
            raise ValueError(f"decoding.temperature must be a number > 0, got {self.temperature!r}")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            raise ValueError(f"decoding.top_p must be a number in (0, 1], got {self.top_p!r}")

    @classmethod
    def of(cls, settings: Mapping[str, Any] | DecodingConfig) -> DecodingConfig:
        """The config of a ``decoding`` node or a stored dict (missing keys: the defaults)."""
        if isinstance(settings, DecodingConfig):
            return settings
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"decoding.{unknown[0]} is not a decoding setting: {sorted(known)}")
        return cls(**settings)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, as a checkpoint stores it."""
        return asdict(self)

    @property
    def plain_greedy(self) -> bool:
        """Greedy decoding with nothing banned: ``greedy_decode`` gives the same captions."""
        return (
            self.beam_size == 1
            and not self.sample
            and not (self.suppress_unk or self.block_trigrams)
        )


def check_decoding(settings: Mapping[str, Any]) -> None:
    """Fail at start-up, naming the key, on decoding settings the search would refuse later."""
    DecodingConfig.of(settings)


def _banned_trigrams(history: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(M, V) mask of words that would repeat a trigram already in each hypothesis."""
    banned = torch.zeros(history.shape[0], vocab_size, device=history.device)
    if history.shape[1] >= 3:
        last_two = history[:, -2:]  # (M, 2)
        match = (history[:, :-2] == last_two[:, :1]) & (history[:, 1:-1] == last_two[:, 1:])
        banned.scatter_add_(1, history[:, 2:], match.to(banned.dtype))
    return banned > 0


def _rows_of(images: torch.Tensor, k: int) -> torch.Tensor:
    """The k hypothesis rows of each image index, image-major."""
    return (images.unsqueeze(1) * k + torch.arange(k, device=images.device)).view(-1)


def _choose(
    candidates: torch.Tensor, width: int, diversity: float, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``width`` best candidates of each group, groups in order (diverse beam search).

    Args:
        candidates: (I, G, width * V) each beam's score plus each word's log-probability,
            beam-major within a group.

    Returns:
        scores (I, G * width) of the chosen hypotheses (log-probabilities, no penalty), their
        parent beams within the image (I, G * width) and their words (I, G * width).
    """
    images, groups, flat_size = candidates.shape
    vocab = flat_size // width
    if groups == 1:  # beam search: no penalty to add
        scores, flat = candidates[:, 0].topk(width, dim=-1)  # (I, width)
        return scores, flat // vocab, flat % vocab
    chosen = torch.zeros(images, vocab, device=candidates.device)  # (I, V) uses at this step
    scores, parents, words = [], [], []
    for group in range(groups):
        plain = candidates[:, group]  # (I, width * V)
        # the counts tiled over the group's beams; <pad> is never counted, so never penalised
        ranked = plain - diversity * chosen.repeat(1, width) if group else plain
        flat = ranked.topk(width, dim=-1).indices  # (I, width)
        group_scores = plain.gather(1, flat)
        word = flat % vocab
        counted = (word != pad_id) & group_scores.isfinite()  # a real choice of a live beam
        chosen.scatter_add_(1, word, counted.to(chosen.dtype))
        scores.append(group_scores)
        parents.append(group * width + flat // vocab)
        words.append(word)
    return torch.cat(scores, dim=1), torch.cat(parents, dim=1), torch.cat(words, dim=1)


def _keep_images(state: Any, keep: torch.Tensor, k: int) -> tuple[Any, torch.Tensor]:
    """The decoder state of the images ``keep`` (positions among the live ones), each with
    its k rows, and those rows: per-hypothesis entries lose the other images' rows,
    per-image entries (``PER_IMAGE``) the other images."""
    rows = _rows_of(keep, k)  # (I'*k,)
    state = state.index_select(rows, skip=PER_IMAGE)
    for key in PER_IMAGE & state.keys():
        state[key] = select_rows(state[key], keep)
    return state, rows


@torch.no_grad()
def beam_search(
    decoder: nn.Module,
    regions: torch.Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    beam_size: int = 3,
    max_len: int = 30,
    length_penalty_mode: str = "none",
    alpha: float = 0.6,
    block_trigrams: bool = False,
    suppress_ids: tuple[int, ...] = (),
    n_best: int = 1,
    mask: torch.Tensor | None = None,
    groups: int = 1,
    diversity: float = 0.5,
) -> BeamOutput:
    """Beam search for a whole batch at once: the B x k hypotheses are one tensor batch.

    Hypotheses are ranked by their summed log-probability while searching (a finished one
    keeps its score and continues with ``<pad>`` at no cost); the length penalty ranks the
    final k. An image leaves the batch as soon as all its k hypotheses have ended, so the
    search costs the sum of the images' caption lengths, not the longest one times B. A
    hypothesis that never reaches ``<eos>`` is returned as it stands at ``max_len``.

    With ``groups`` > 1 it is diverse beam search (Vijayakumar et al. 2018): the k beams of an
    image form ``groups`` groups of k / groups, each a beam search of its own, chosen in order
    at every step: group g's candidate word loses ``diversity`` for each time groups 0..g-1
    of the image chose it at this step (Hamming diversity; a finished beam's ``<pad>`` is no
    choice). The penalty steers only the choice: a hypothesis's score stays its
    log-probability, and the n best are ranked over all groups as above. One decoder step
    serves all groups; ``groups=1`` is plain beam search.

    It is one function of about 120 lines on purpose: the loop shares a dozen tensors (scores,
    tokens, finished flags, trigram history, the decoder state, the live-image index) that
    change shape together when an image leaves the batch; split into helpers, each would take
    and return most of them.

    Args:
        decoder: any decoder with ``init_state`` / ``step``.
        regions: (B, N, D) encoder output.
        beam_size: hypotheses kept per image (1 is greedy decoding).
        length_penalty_mode: ``none`` | ``average`` | ``wu`` (with ``alpha``).
        block_trigrams: forbid a word that would repeat a trigram of the hypothesis.
        suppress_ids: words never generated (e.g. ``<unk>``).
        n_best: hypotheses returned per image (<= beam_size).
        mask: (B, N) True for a real region, when region sets of different sizes were padded
            (it rides in the decoder state's per-image memory).
        groups: diverse beam search's groups (a divisor of ``beam_size``; 1: beam search).
        diversity: the Hamming diversity penalty (>= 0) between groups.
    """
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"decoding.n_best must be in 1..beam_size={beam_size}, got {n_best}")
    if groups < 1 or beam_size % groups:
        raise ValueError(f"decoding.groups={groups} does not divide decoding.beam_size={beam_size}")
    if max_len < 1:
        raise ValueError(f"decoding.max_len must be >= 1, got {max_len}")
    length_penalty(torch.ones(1), length_penalty_mode, alpha)  # a bad mode fails before decoding
    batch, k = regions.shape[0], beam_size
    device = regions.device
    # One row per image until the first word: all k beams of an image start identical, and
    # the per-image memory keeps a single copy throughout (the attention groups the k rows).
    state = start_state(decoder, regions, mask)
    previous = torch.full((batch,), bos_id, dtype=torch.long, device=device)
    alive = torch.arange(batch, device=device)  # images still searching, in row order
    width = k // groups  # beams per group
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, ::width] = 0.0  # expand only the first of each group's identical beams
    finished = torch.zeros(batch * k, dtype=torch.bool, device=device)
    history = torch.empty(batch * k, 0, dtype=torch.long, device=device)
    # attention kept in float32 whatever autocast makes of the regions and the weights
    attention = torch.empty(batch * k, 0, regions.shape[1], device=device)  # (B*k, t, N)
    lengths = torch.zeros(batch * k, dtype=torch.long, device=device)
    out_tokens = torch.full((batch, n_best, max_len), pad_id, dtype=torch.long, device=device)
    out_weights = torch.zeros(batch, n_best, max_len, regions.shape[1], device=device)
    out_scores = torch.empty(batch, n_best, device=device)  # (B, n)
    out_logprobs = torch.empty(batch, n_best, device=device)  # (B, n)
    never: torch.Tensor | None = None
    steps = 0

    def finish(images: torch.Tensor) -> None:
        """Rank the k hypotheses of ``images`` (positions in ``alive``) and store the n best."""
        image_scores = scores[images]  # (I, k)
        divisor = length_penalty(lengths.view(-1, k)[images], length_penalty_mode, alpha)
        ranked, ranking = (image_scores / divisor).topk(n_best, dim=-1)  # (I, n)
        rows = (images.unsqueeze(1) * k + ranking).view(-1)
        target = alive[images]
        out_scores[target] = ranked
        out_logprobs[target] = image_scores.gather(1, ranking)
        out_tokens[target, :, :steps] = history[rows].view(len(images), n_best, steps)
        out_weights[target, :, :steps] = attention[rows].view(len(images), n_best, steps, -1)

    for step in range(max_len):
        logprobs, weights, state = decoder.step(previous, state)  # (rows, V), (rows, N)
        if step == 0:
            logprobs = logprobs.repeat_interleave(k, dim=0)  # (B*k, V)
            weights = weights.repeat_interleave(k, dim=0)  # (B*k, N)
        images, vocab = len(alive), logprobs.shape[-1]
        if never is None:  # words no hypothesis may choose, whatever the model says
            never = torch.zeros(vocab, dtype=torch.bool, device=device)
            never[[pad_id, bos_id, *suppress_ids]] = True
        logprobs = logprobs.float().masked_fill(never, float("-inf"))
        if block_trigrams:
            logprobs.masked_fill_(_banned_trigrams(history, vocab), float("-inf"))
        logprobs.masked_fill_(finished.unsqueeze(1), float("-inf"))
        logprobs[:, pad_id].masked_fill_(finished, 0.0)  # a finished beam continues for free
        candidates = scores.view(-1, 1) + logprobs  # (I*k, V)
        scores, parent, choice = _choose(
            candidates.view(images, groups, width * vocab), width, diversity, pad_id
        )  # (I, k) each
        offsets = torch.arange(images, device=device).unsqueeze(1) * k  # (I, 1)
        origin = (offsets + parent).view(-1)  # (I*k,) parent row of each new beam
        choice = choice.view(-1)  # (I*k,)
        # memory rows of an image are shared, so only the per-hypothesis entries move
        state = state.index_select(origin // k if step == 0 else origin, skip=PER_IMAGE)
        was_finished = finished[origin]
        history = torch.cat([history[origin], choice.unsqueeze(1)], dim=1)
        step_weights = (
            weights[origin].float().masked_fill(was_finished.unsqueeze(1), 0.0)
        )  # (I*k, N)
        attention = torch.cat([attention[origin], step_weights.unsqueeze(1)], dim=1)
        lengths = lengths[origin] + (~was_finished).long()
        finished = was_finished | (choice == eos_id)
        previous = choice
        steps = step + 1
        done = finished.view(images, k).all(dim=1)  # (I,)
        ended = int(done.sum())  # the one host sync of a step
        if steps == max_len or ended == images:
            finish(torch.arange(images, device=device))
            break
        if ended:  # drop the images whose k hypotheses have all ended
            finish(done.nonzero().squeeze(1))
            keep = (~done).nonzero().squeeze(1)  # (I',) positions in alive
            state, rows = _keep_images(state, keep, k)  # rows: (I'*k,)
            alive, scores = alive[keep], scores[keep]
            finished, lengths, previous = finished[rows], lengths[rows], previous[rows]
            history, attention = history[rows], attention[rows]
    return BeamOutput(
        tokens=out_tokens[:, :, :steps],
        scores=out_scores,
        logprobs=out_logprobs,
        weights=out_weights[:, :, :steps],
    )


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """``logits`` (M, V) with ``-inf`` outside each row's ``top_k`` most likely words (0: all)
    and outside the smallest set of most likely words whose probability reaches ``top_p``
    (nucleus sampling; 1: all). The most likely word always stays."""
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (M, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (M, V)
        probabilities = ordered.softmax(dim=-1)
        before = probabilities.cumsum(dim=-1) - probabilities  # mass of the likelier words
        cut = before >= top_p  # (M, V) in sorted order
        logits = logits.masked_fill(torch.empty_like(cut).scatter_(1, order, cut), float("-inf"))
    return logits


@torch.no_grad()
def sample_decode(
    decoder: nn.Module,
    regions: torch.Tensor,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    n: int = 1,
    max_len: int = 30,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    length_penalty_mode: str = "none",
    alpha: float = 0.6,
    block_trigrams: bool = False,
    suppress_ids: tuple[int, ...] = (),
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> BeamOutput:
    """``n`` captions sampled per image, the B x n rows one batch of one decoder step a word.

    Each word is drawn from the model's distribution divided by ``temperature`` and cut to
    ``top_k`` / ``top_p`` (:func:`filter_logits`); ``<pad>``, ``<bos>``, ``suppress_ids`` and,
    with ``block_trigrams``, a repeated trigram are never drawn. An image leaves the batch
    when its n captions have ended, as in :func:`beam_search`. Its captions are returned
    ranked by score (the model's log-probability, length-penalised as in beam search), best
    first, equal scores in the order drawn. ``top_k=1``, or a temperature near 0, is greedy
    decoding.

    Args:
        n: captions per image.
        generator: the random generator (on the regions' device); None: torch's global one.
    """
    if n < 1:
        raise ValueError(f"decoding.n_best must be >= 1, got {n}")
    if max_len < 1:
        raise ValueError(f"decoding.max_len must be >= 1, got {max_len}")
    if not temperature > 0:
        raise ValueError(f"decoding.temperature must be > 0, got {temperature}")
    length_penalty(torch.ones(1), length_penalty_mode, alpha)
    batch, device = regions.shape[0], regions.device
    state = start_state(decoder, regions, mask)  # one row per image until the first word
    previous = torch.full((batch,), bos_id, dtype=torch.long, device=device)
    alive = torch.arange(batch, device=device)  # images still sampling, in row order
    logprob = torch.zeros(batch * n, device=device)  # (B*n,) the model's, summed
    finished = torch.zeros(batch * n, dtype=torch.bool, device=device)
    lengths = torch.zeros(batch * n, dtype=torch.long, device=device)
    history = torch.empty(batch * n, 0, dtype=torch.long, device=device)
    attention = torch.empty(batch * n, 0, regions.shape[1], device=device)  # (B*n, t, N)
    out_tokens = torch.full((batch, n, max_len), pad_id, dtype=torch.long, device=device)
    out_weights = torch.zeros(batch, n, max_len, regions.shape[1], device=device)
    out_scores = torch.empty(batch, n, device=device)  # (B, n)
    out_logprobs = torch.empty(batch, n, device=device)  # (B, n)
    never: torch.Tensor | None = None
    steps = 0

    def finish(images: torch.Tensor) -> None:
        """Rank the n captions of ``images`` (positions in ``alive``) and store them."""
        rows = _rows_of(images, n)
        image_logprobs = logprob[rows].view(len(images), n)  # (I, n)
        divisor = length_penalty(lengths[rows].view(len(images), n), length_penalty_mode, alpha)
        ranked, ranking = (image_logprobs / divisor).sort(dim=-1, descending=True, stable=True)
        rows = (images.unsqueeze(1) * n + ranking).view(-1)
        target = alive[images]
        out_scores[target] = ranked
        out_logprobs[target] = image_logprobs.gather(1, ranking)
        out_tokens[target, :, :steps] = history[rows].view(len(images), n, steps)
        out_weights[target, :, :steps] = attention[rows].view(len(images), n, steps, -1)

    for step in range(max_len):
        logprobs, weights, state = decoder.step(previous, state)  # (rows, V), (rows, N)
        if step == 0:  # the n captions of an image start alike: one step, then n rows
            logprobs = logprobs.repeat_interleave(n, dim=0)  # (B*n, V)
            weights = weights.repeat_interleave(n, dim=0)  # (B*n, N)
            state = state.index_select(
                torch.arange(batch, device=device).repeat_interleave(n), skip=PER_IMAGE
            )
        vocab = logprobs.shape[-1]
        if never is None:
            never = torch.zeros(vocab, dtype=torch.bool, device=device)
            never[[pad_id, bos_id, *suppress_ids]] = True
        logprobs = logprobs.float().masked_fill(never, float("-inf"))
        if block_trigrams:
            logprobs.masked_fill_(_banned_trigrams(history, vocab), float("-inf"))
        logits = filter_logits(logprobs / temperature, top_k, top_p)
        stuck = ~logits.isfinite().any(dim=-1, keepdim=True)  # every word banned: end it
        logits[:, eos_id].masked_fill_(stuck.squeeze(1), 0.0)
        drawn = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (M, 1)
        choice = drawn.squeeze(1).masked_fill(finished, pad_id)  # (M,)
        chosen = logprobs.gather(1, choice.unsqueeze(1)).squeeze(1)
        logprob = logprob + chosen.masked_fill(finished, 0.0)
        lengths = lengths + (~finished).long()
        history = torch.cat([history, choice.unsqueeze(1)], dim=1)
        step_weights = weights.float().masked_fill(finished.unsqueeze(1), 0.0)  # (M, N)
        attention = torch.cat([attention, step_weights.unsqueeze(1)], dim=1)
        finished = finished | (choice == eos_id)
        previous = choice
        steps = step + 1
        images = len(alive)
        done = finished.view(images, n).all(dim=1)  # (I,)
        ended = int(done.sum())  # the one host sync of a step
        if steps == max_len or ended == images:
            finish(torch.arange(images, device=device))
            break
        if ended:  # drop the images whose n captions have all ended
            finish(done.nonzero().squeeze(1))
            keep = (~done).nonzero().squeeze(1)  # (I',) positions in alive
            state, rows = _keep_images(state, keep, n)  # rows: (I'*n,)
            alive = alive[keep]
            logprob, finished, lengths, previous = (
                logprob[rows],
                finished[rows],
                lengths[rows],
                previous[rows],
            )
            history, attention = history[rows], attention[rows]
    return BeamOutput(
        tokens=out_tokens[:, :, :steps],
        scores=out_scores,
        logprobs=out_logprobs,
        weights=out_weights[:, :, :steps],
    )

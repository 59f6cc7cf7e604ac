"""The attention check: shapes, weights a distribution over the (unmasked) regions,
``prepare``/``attend`` equal to ``forward``, k hypotheses grouped over one memory row."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from captioning.testing._common import (
    assert_scaled_close,
    check_distribution,
    device_of,
    evaluating,
    expect_shape,
    fail_unless,
    seeded_generator,
)


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
    generator = seeded_generator(seed)
    for module, q_dim, r_dim in _attention_modules(attention, query_dim, region_dim):
        name = f"{type(module).__name__}(query_dim={q_dim}, region_dim={r_dim})"
        out_dim = _check_members(module, name)
        device = device_of(module)
        query = torch.randn(batch, steps, q_dim, generator=generator).to(device)
        image = torch.randn(batch, regions, r_dim, generator=generator).to(device)
        with torch.no_grad(), evaluating(module):
            context, weights = module(query, image)
            expect_shape(context, (batch, steps, out_dim), f"{name} context")
            expect_shape(weights, (batch, steps, regions), f"{name} weights")
            check_distribution(weights, f"{name} weights")
            prepared = module.attend(query, module.prepare(image))
            assert_scaled_close(
                prepared[0], context, rtol, f"{name}: attend(prepare) context vs forward"
            )
            assert_scaled_close(
                prepared[1], weights, rtol, f"{name}: attend(prepare) weights vs forward"
            )
            rows = torch.randn(batch * group, steps, q_dim, generator=generator).to(device)
            _check_grouping(module, name, rows, image, group, out_dim, rtol)
            if _takes_mask(module):
                _check_mask(module, name, query, image, context, weights, rtol)
        _check_attention_gradients(module, name, query, image)


def _check_members(module: nn.Module, name: str) -> int:
    """The module's ``out_dim`` (an int >= 1), once ``prepare`` and ``attend`` are there too."""
    out_dim = getattr(module, "out_dim", None)
    fail_unless(
        isinstance(out_dim, int) and not isinstance(out_dim, bool) and out_dim >= 1,
        f"{name}.out_dim must be an integer >= 1 (the context width), got {out_dim!r}",
    )
    for method in ("prepare", "attend"):
        fail_unless(
            callable(getattr(module, method, None)),
            f"{name} has no {method}(): the decoders call prepare(regions) once per image "
            "and attend(query, memory) every step (subclass "
            "captioning.models.attention.Attention and write prepare and _attend)",
        )
    return out_dim


def _check_grouping(
    module: nn.Module,
    name: str,
    rows: torch.Tensor,
    image: torch.Tensor,
    group: int,
    out_dim: int,
    rtol: float,
) -> None:
    """``group`` query rows per image against one memory row, as beam search attends, equal to
    the same rows against ``group`` copies of it."""
    grouped = module.attend(rows, module.prepare(image))
    copied = module.attend(rows, module.prepare(image.repeat_interleave(group, dim=0)))
    (rows_n, steps), regions = rows.shape[:2], image.shape[1]
    expect_shape(grouped[0], (rows_n, steps, out_dim), f"{name} grouped context")
    expect_shape(grouped[1], (rows_n, steps, regions), f"{name} grouped weights")
    for ours, reference, part in zip(grouped, copied, ("context", "weights"), strict=True):
        assert_scaled_close(
            ours, reference, rtol,
            f"{name}: {part} of {group} query rows per image against one memory row "
            f"vs against {group} copies of it (beam search)",
        )  # fmt: skip


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
    expect_shape(masked_context, tuple(context.shape), f"{name} masked context")
    expect_shape(masked_weights, tuple(weights.shape), f"{name} masked weights")
    check_distribution(masked_weights, f"{name} masked weights", mask)


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
    fail_unless(
        not missing, f"{name}: parameters the context does not depend on (no gradient): {missing}"
    )

"""What every check shares: the error it raises, the scaled tolerance and small helpers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

WEIGHT_SUM_TOLERANCE = 1e-5  # |sum_n weights - 1| per row: float32 rounding of a softmax


class ContractError(AssertionError):
    """A component does not honour its contract; the message says where and by how much."""


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


def fail_unless(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def expect_shape(tensor: object, expected: tuple[int, ...], what: str) -> torch.Tensor:
    """``tensor`` as a tensor of shape ``expected`` with finite values, or a ContractError."""
    if not isinstance(tensor, torch.Tensor):
        raise ContractError(f"{what}: a {type(tensor).__name__}, not a tensor")
    if tuple(tensor.shape) != expected:
        raise ContractError(f"{what}: shape {tuple(tensor.shape)}, expected {expected}")
    if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
        raise ContractError(f"{what}: {int((~tensor.isfinite()).sum())} non-finite values")
    return tensor


def check_distribution(weights: torch.Tensor, what: str, mask: torch.Tensor | None = None) -> None:
    """Non-negative rows summing to 1; exactly 0 where ``mask`` (B, N) is False."""
    smallest = float(weights.min())
    fail_unless(smallest >= 0, f"{what}: a negative weight ({smallest:.3g})")
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
        fail_unless(
            not leaked.numel() or float(leaked.max()) == 0.0,
            f"{what}: padded regions (mask False) must get exactly 0, got up to "
            f"{float(leaked.max()) if leaked.numel() else 0.0:.3g}",
        )


def device_of(module: nn.Module) -> torch.device:
    """Where the module's first parameter (or buffer) is; the CPU for a module with neither."""
    tensor = next(module.parameters(), None)
    if tensor is None:
        tensor = next(module.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module.eval()`` for the block (no dropout), then the mode it had."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def seeded_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

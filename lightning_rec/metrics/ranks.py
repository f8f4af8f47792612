"""Pessimistic full-ranking ranks: the one comparison pass every ranking metric builds on."""

import math

import torch
from torch import Tensor


def check_scores(scores: Tensor) -> None:
    """Reject scores that are not a ``[B, N+1]`` floating matrix, naming the offending property."""
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must have shape [B, N+1] with N >= 1 items, got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")


def check_targets(scores: Tensor, targets: Tensor) -> None:
    """Reject targets that do not name exactly one real item (1..N) per row of ``scores``."""
    if targets.ndim != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(
            f"targets must have shape [B] = [{scores.shape[0]}] (one item per row of scores), "
            f"got {tuple(targets.shape)}"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be integer item ids, got {targets.dtype}")
    num_items = scores.shape[1] - 1
    if targets.numel() and (targets.min() < 1 or targets.max() > num_items):
        raise ValueError(
            f"targets must be item ids in 1..{num_items} (0 is padding), "
            f"got values in {targets.min().item()}..{targets.max().item()}"
        )


def pessimistic_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each row's target among items 1..N, counting every tie against the model.

    A rank is the number of other items scored >= the target, with NaN read as -inf: a model that
    scores everything the same (or NaN, as a fully masked transformer row does) ranks its target
    last instead of first. One comparison over ``[B, N]``; no sort and no copy of ``scores``.
    """
    check_scores(scores)
    check_targets(scores, targets)
    items = scores.detach()[:, 1:]
    target_scores = scores.detach().gather(1, targets.long().unsqueeze(1))
    target_scores = target_scores.masked_fill(target_scores.isnan(), -math.inf)
    # NaN items compare False, which is right (NaN = -inf) unless the target itself is -inf:
    # then every other item ties with it, whatever its score, so the rank is N - 1.
    # int32 accumulation is several times faster than the default int64 on CPU.
    at_or_above = (items >= target_scores).sum(dim=1, dtype=torch.int32).long() - 1
    num_items = items.shape[1]
    return torch.where(target_scores.squeeze(1) == -math.inf, num_items - 1, at_or_above)

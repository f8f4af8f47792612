"""Next-item scores over the whole catalogue, with the items that cannot be the answer masked.

Every ranking of the catalogue (the recommender's and the baselines' evaluation, the offline policy
table, the meta-learner's policies) masks the same items the same way: the padding column (item 0)
and, where asked, the user's history at -inf. Out of place and shape-generic, so it runs under vmap.
"""

from __future__ import annotations

import torch


def mask_scores(scores: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """`scores` [..., N + 1] with item 0 and, when given, each row's `history` items [..., H] at -inf."""
    scores = scores.masked_fill(torch.arange(scores.shape[-1], device=scores.device) == 0, float("-inf"))
    return scores if history is None else scores.scatter(-1, history, float("-inf"))


def catalogue_scores(
    states: torch.Tensor,
    items: torch.Tensor,
    input: torch.Tensor,
    popularity: torch.Tensor,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores [B, N + 1] of states [B, D] against the item table [N + 1, D], masked by `mask_scores`.
    A row whose `input` [B, L] has no item at all (a user the model knows nothing about) gets
    `popularity` [N + 1] instead."""
    scores = states @ items.T
    empty = (input != 0).sum(1) == 0
    scores = torch.where(empty.unsqueeze(1), popularity.to(scores.dtype), scores)
    return mask_scores(scores, history)

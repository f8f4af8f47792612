"""A policy head over the session so far: what a next-item model does not see it has to learn.

A sequence model pretrained on logs scores the next item from the history; it was never told that
a user who is shown more of what they just clicked may leave. The head gives the RL policy a
direct handle on that: a few weights over how recently each category was clicked in the episode,
learned from reward alone (the quit rule's window and threshold are never given to it).
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_rec.data.errors import DataError


class CategoryRecency(nn.Module):
    """Adds to each item's sampling logit sum_w weight_w x (how many of the episode's last w clicks
    share the item's category), one weight per window of `windows`. The windows are a fixed ladder,
    not any rule's N: the policy learns which of them matter and how much. Items without a
    category (0) get nothing. Weights start at 0, so the fine-tuned policy starts as the pretrained
    one; `lr` is their learning rate (they must move by whole logits within a few updates, where
    the recommender's weights move by small steps)."""

    def __init__(self, windows: list[int] = [1, 2, 4, 8, 16], lr: float = 0.05):
        super().__init__()
        if not windows or min(windows) < 1:
            raise ValueError(f"CategoryRecency.windows must be a non-empty list of windows >= 1, got {windows}")
        if lr <= 0:
            raise ValueError(f"CategoryRecency.lr must be > 0, got {lr}")
        self.register_buffer("windows", torch.tensor(windows), persistent=False)
        self.weights = nn.Parameter(torch.zeros(len(windows)))
        self.lr = lr

    def bias(self, clicks: torch.Tensor, count: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
        """[B, N + 1]: each item's logit change after the first `count` [B] entries of each row of
        `clicks` [B, J] (the episode's clicked items in order, 0 = none), with items' `categories` [N + 1]."""
        recency = count.unsqueeze(1) - 1 - torch.arange(clicks.shape[1], device=clicks.device)  # 0 = latest
        live = (recency >= 0) & (clicks != 0)
        within = recency.unsqueeze(-1) < self.windows.to(clicks.device)  # [B, J, W]
        weight = (within * self.weights).sum(-1) * live
        per_category = torch.zeros(len(clicks), int(categories.max()) + 1, device=clicks.device)
        per_category = per_category.scatter_add(1, categories[clicks], weight)
        per_category[:, 0] = 0.0  # uncategorised items are never steered
        return per_category.index_select(1, categories)  # faster forward + backward than [:, categories]

    def describe(self) -> str:
        """The learned weights by window, e.g. 'w1=-0.8 w2=-0.3 ...' (the evaluation table's setting)."""
        return " ".join(f"w{int(w)}={float(v):.2g}" for w, v in zip(self.windows, self.weights.detach()))


def head_categories(head: CategoryRecency | None, categories: torch.Tensor | None) -> torch.Tensor | None:
    """The item categories a policy with `head` plays with; a clear error where the data has none."""
    if head is not None and categories is None:
        raise DataError(
            "the policy's CategoryRecency head needs item categories: set the data module's `category` "
            "(e.g. {column: genres, pick: first})"
        )
    return categories

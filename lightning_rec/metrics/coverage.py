"""Catalogue coverage: how much of the item set the recommender ever puts in front of users."""

import math

import torch
from torch import Tensor

from lightning_rec.metrics.base import EmptyIsZeroMetric
from lightning_rec.metrics.ranks import check_scores


class CoverageAtK(EmptyIsZeroMetric):
    """Fraction of items 1..N that appear in at least one user's top k.

    The state counts, per item, the users who got it in their top k, so it sums across DDP ranks.
    Masked (-inf) and NaN scores are never recommended; ties at the cut-off are broken by
    ``torch.topk``, as they would be when serving the list.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_items: int, k: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_items < 1 or k < 1:
            raise ValueError(f"CoverageAtK needs num_items >= 1 and k >= 1, got num_items={num_items}, k={k}")
        self.num_items = num_items
        self.k = k
        self.add_state("item_counts", torch.zeros(num_items, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """Count each user's top-k items. ``targets`` is taken (and unused) so a MetricCollection can
        call every ranking metric with the same arguments."""
        check_scores(scores)
        if scores.shape[1] != self.num_items + 1:
            raise ValueError(
                f"CoverageAtK(num_items={self.num_items}) needs scores of shape [B, {self.num_items + 1}], "
                f"got {tuple(scores.shape)}"
            )
        # topk ranks NaN first; read it as -inf (one fused pass, infinities kept as they are).
        items = scores.detach()[:, 1:].nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
        top_scores, top_items = items.topk(min(self.k, self.num_items), dim=1)
        # Unrecommendable picks (-inf) go to bin 0, which is dropped, so no data-dependent indexing is needed.
        item_ids = torch.where(top_scores > -math.inf, top_items + 1, 0)
        self.item_counts += torch.bincount(item_ids.flatten(), minlength=self.num_items + 1)[1:]

    def compute(self) -> Tensor:
        """Share of the catalogue recommended at least once."""
        return (self.item_counts > 0).sum() / self.num_items

"""Leave-one-out ranking metrics at a cut-off k, and the collection a task logs."""

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from lightning_rec.metrics.base import EmptyIsZeroMetric
from lightning_rec.metrics.coverage import CoverageAtK
from lightning_rec.metrics.ranks import pessimistic_ranks


class RankCutoffMetric(EmptyIsZeroMetric):
    """Mean over users of ``gain(rank)`` for targets ranked below k, 0 otherwise.

    The state is a histogram of target ranks below k plus a user count: every cut-off metric is a
    weighted sum of it, so Recall, NDCG, HR and MRR at the same k hold identical states and a
    MetricCollection (see ``ranking_metrics``) updates them with one comparison pass. Both states
    are sums, so DDP reduction is right by construction.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, k: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"{type(self).__name__} needs k >= 1, got k={k}")
        self.k = k
        self.add_state("rank_counts", torch.zeros(k, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("users", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, targets: Tensor) -> None:
        """Add each user's pessimistic target rank to the histogram (ranks >= k fall in a dropped bin)."""
        ranks = pessimistic_ranks(scores, targets)
        self.rank_counts += torch.bincount(ranks.clamp(max=self.k), minlength=self.k + 1)[: self.k]
        self.users += ranks.numel()

    def compute(self) -> Tensor:
        """Histogram-weighted gain over the number of users (0 when there are none)."""
        ranks = torch.arange(self.k, device=self.rank_counts.device, dtype=torch.float32)
        total = (self.rank_counts.float() * self.gain(ranks)).sum()
        return total / self.users.clamp(min=1)

    @abstractmethod
    def gain(self, ranks: Tensor) -> Tensor:
        """Value of a hit at each 0-based rank below k."""


class RecallAtK(RankCutoffMetric):
    """Share of users whose target is in their top k."""

    def gain(self, ranks: Tensor) -> Tensor:
        return torch.ones_like(ranks)


class HitRateAtK(RecallAtK):
    """Hit rate at k: with one target per user it equals Recall@K; named separately as papers report both."""


class NDCGAtK(RankCutoffMetric):
    """NDCG at k with one relevant item, so IDCG = 1 and a hit at rank r is worth 1/log2(r+2)."""

    def gain(self, ranks: Tensor) -> Tensor:
        return 1.0 / torch.log2(ranks + 2)


def ndcg_of_ranks(ranks: Tensor, k: int) -> Tensor:
    """Each row's NDCG@k from its 0-based rank of the one relevant item (1/log2(r+2) below k, else 0):
    per-row values, for paired comparisons and standard errors that the summed metric cannot give."""
    return torch.where(ranks < k, 1.0 / torch.log2(ranks.float() + 2.0), 0.0)


class MRRAtK(RankCutoffMetric):
    """Mean reciprocal rank truncated at k: a hit at rank r is worth 1/(r+1)."""

    def gain(self, ranks: Tensor) -> Tensor:
        return 1.0 / (ranks + 1)


_RANK_METRICS: dict[str, type[RankCutoffMetric]] = {
    "recall": RecallAtK,
    "ndcg": NDCGAtK,
    "hr": HitRateAtK,
    "mrr": MRRAtK,
}


def ranking_metrics(ks: Sequence[int] = (10, 20), num_items: int | None = None, prefix: str = "") -> MetricCollection:
    """Recall, NDCG, HR and MRR (and coverage when ``num_items`` is given) at each k, keyed ``"<name>@<k>"``.

    Metrics at the same k are declared one compute group, so each ``update`` makes one comparison
    pass per k (plus one top-k per coverage). Call ``update``/``compute``, not ``forward``, which
    bypasses the groups.
    """
    ks = list(dict.fromkeys(ks))
    if not ks:
        raise ValueError("ranking_metrics needs at least one cut-off k")
    metrics = {}
    groups = []
    for k in ks:
        group = {f"{name}@{k}": cls(k=k) for name, cls in _RANK_METRICS.items()}
        metrics.update(group)
        groups.append(list(group))
        if num_items is not None:
            metrics[f"coverage@{k}"] = CoverageAtK(num_items=num_items, k=k)
    return MetricCollection(metrics, prefix=prefix, compute_groups=groups)

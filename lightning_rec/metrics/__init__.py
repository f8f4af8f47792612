"""Ranking metrics for leave-one-out full ranking, as torchmetrics Metrics (DDP-safe sum states)."""

from lightning_rec.metrics.coverage import CoverageAtK
from lightning_rec.metrics.ranking import (
    HitRateAtK,
    MRRAtK,
    NDCGAtK,
    RankCutoffMetric,
    RecallAtK,
    ndcg_of_ranks,
    ranking_metrics,
)
from lightning_rec.metrics.ranks import pessimistic_ranks

__all__ = [
    "CoverageAtK",
    "HitRateAtK",
    "MRRAtK",
    "NDCGAtK",
    "RankCutoffMetric",
    "RecallAtK",
    "ndcg_of_ranks",
    "pessimistic_ranks",
    "ranking_metrics",
]

"""Baselines evaluated exactly like the models (`lightning-rec test` with the same data YAML):
popularity and random rankings. Nothing to train."""

from __future__ import annotations

import torch

from lightning_rec.scoring import mask_scores
from lightning_rec.stages.pretraining import RankingRecommender


class _Baseline(RankingRecommender):
    def __init__(self, eval_ks: list[int] = [10, 20], mask_history: bool = True, top_k: int = 10):
        super().__init__()
        self.save_hyperparameters()

    def base_scores(self, input: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, input: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        return mask_scores(self.base_scores(input), history if self.hparams.mask_history else None)


class PopularityRecommender(_Baseline):
    """Every user gets the items most often seen in training. Items never seen in training (cold
    items) all score 0 and, ties counting against the model, rank last."""

    def base_scores(self, input: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(len(input), -1).clone()


class RandomRecommender(_Baseline):
    """A fresh uniformly random ranking for every row: the chance level of each metric."""

    def base_scores(self, input: torch.Tensor) -> torch.Tensor:
        return torch.rand(len(input), self.num_items + 1, device=input.device)

"""Training objectives for sequential recommenders: how hidden states and item vectors become a loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Objective(nn.Module):
    """`prepare` turns a training window into (model input, per-position targets, 0 = no target),
    `prepare_inference` an evaluation input into the model input; `forward` scores the selected hidden
    states against items and returns the loss."""

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return input, target * (input != 0)  # next item at every real position

    def prepare_inference(self, input: torch.Tensor) -> torch.Tensor:
        """The model input whose last position predicts the next item (masked-item objectives append a mask)."""
        return input

    def forward(self, hidden: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FullSoftmax(Objective):
    """Cross-entropy over every item: strong and simple up to ~100k items on one device."""

    def forward(self, hidden: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logits = hidden @ items.T
        logits[:, 0] = float("-inf")  # padding is never an answer
        return F.cross_entropy(logits, target)


class SampledSoftmax(Objective):
    """Cross-entropy over the target and `num_negatives` items drawn uniformly, shared by the batch,
    for catalogues too large to score whole. A negative that equals the row's target is removed."""

    def __init__(self, num_negatives: int = 1000):
        super().__init__()
        self.num_negatives = num_negatives

    def forward(self, hidden: torch.Tensor, target: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        negatives = torch.randint(1, items.shape[0], (self.num_negatives,), device=hidden.device)
        positive = (hidden * items[target]).sum(-1, keepdim=True)
        negative = hidden @ items[negatives].T
        negative = negative.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(target))

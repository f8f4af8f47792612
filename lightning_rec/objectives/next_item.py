"""Training objectives for sequential recommenders: how hidden states and item vectors become a loss."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


class Objective(nn.Module):
    """`prepare` turns a training window into (model input, per-position targets, 0 = no target),
    `prepare_inference` an evaluation input into the model input; `forward` scores the selected hidden
    states against the item table and returns the loss (`counts`: each item row's training events)."""

    def prepare(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return input, target * (input != 0)  # next item at every real position

    def prepare_inference(self, input: torch.Tensor) -> torch.Tensor:
        """The model input whose last position predicts the next item (masked-item objectives append a mask)."""
        return input

    def forward(
        self, hidden: torch.Tensor, target: torch.Tensor, items: torch.Tensor, counts: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class FullSoftmax(Objective):
    """Cross-entropy over every item: strong and simple up to ~100k items on one device."""

    def forward(
        self, hidden: torch.Tensor, target: torch.Tensor, items: torch.Tensor, counts: torch.Tensor | None = None
    ) -> torch.Tensor:
        logits = hidden @ items.T
        logits[:, 0] = float("-inf")  # padding is never an answer
        return F.cross_entropy(logits, target)


class SampledSoftmax(Objective):
    """Cross-entropy over the target and `num_negatives` items shared by the batch, for catalogues too
    large to score whole (docs/scale.md). `sampling: uniform` draws negatives uniformly;
    `sampling: popularity` draws them in proportion to their training events (harder negatives, as an
    in-batch softmax sees them) and applies the logQ correction (every candidate's logit minus the log
    of its expected count among the draws), so the loss still estimates the full softmax's instead of
    punishing popular items. A negative that equals the row's target is removed."""

    def __init__(self, num_negatives: int = 1000, sampling: Literal["uniform", "popularity"] = "uniform"):
        super().__init__()
        if num_negatives < 1:
            raise ValueError(f"SampledSoftmax.num_negatives must be >= 1, got {num_negatives}")
        if sampling not in ("uniform", "popularity"):
            raise ValueError(f"SampledSoftmax.sampling must be 'uniform' or 'popularity', got {sampling!r}")
        self.num_negatives, self.sampling = num_negatives, sampling

    def forward(
        self, hidden: torch.Tensor, target: torch.Tensor, items: torch.Tensor, counts: torch.Tensor | None = None
    ) -> torch.Tensor:
        positive = (hidden * items[target]).sum(-1, keepdim=True)
        if self.sampling == "uniform" or counts is None or not counts[1:].any():  # uniform: the correction cancels
            negatives = torch.randint(1, items.shape[0], (self.num_negatives,), device=hidden.device)
            negative = hidden @ items[negatives].T
        else:
            q = counts.float() / counts[1:].sum()  # padding has no events: never drawn
            negatives = torch.multinomial(q, self.num_negatives, replacement=True)
            log_expected = (q * self.num_negatives).log()
            positive = positive - log_expected[target].unsqueeze(1)
            negative = hidden @ items[negatives].T - log_expected[negatives]
        negative = negative.masked_fill(negatives.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
        logits = torch.cat([positive, negative], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(target))

"""The learned half of the user simulator: will this user click this item, and how would they rate it."""

from __future__ import annotations

import torch
from torch import nn


class ResponseModel(nn.Module):
    """Click logits and predicted ratings for (user history, item) pairs.

    A GRU reads the user's recent items; a click logit is a bilinear score of its state with the
    item plus an item bias, trained on observed next items against sampled negatives; a rating is
    a second bilinear score around the mean rating, trained on the observed ratings. A GRU, not
    the policy's transformer, so that a policy cannot win by matching its own scorer; and a GRU
    state advances by one item per click, so simulating thousands of users costs one cell call
    a step. `calibration` (scale, shift) maps raw logits to calibrated ones (Platt scaling, fit on
    held-out users by the simulator training).
    """

    def __init__(self, dim: int = 64, dropout: float = 0.2, init_std: float = 0.02):
        super().__init__()
        self.dim, self.dropout, self.init_std = dim, dropout, init_std
        self.items: nn.Embedding | None = None

    def build(self, num_items: int, rating_range: tuple[float, float] | None, mean_rating: float = 0.0) -> None:
        """Create the catalogue-sized parts; ratings parts only when the data has ratings."""
        d = self.dim
        self.num_items = num_items
        self.items = nn.Embedding(num_items + 1, d, padding_idx=0)
        nn.init.normal_(self.items.weight, std=self.init_std)
        with torch.no_grad():
            self.items.weight[0].zero_()
        self.click_bias = nn.Embedding(num_items + 1, 1)
        nn.init.zeros_(self.click_bias.weight)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.drop = nn.Dropout(self.dropout)
        self.click_head = nn.Linear(d, d)
        self.register_buffer("calibration", torch.tensor([1.0, 0.0]))
        self.has_ratings = rating_range is not None
        if self.has_ratings:
            self.rating_head = nn.Linear(d, d)
            self.rating_bias = nn.Embedding(num_items + 1, 1)
            nn.init.zeros_(self.rating_bias.weight)
            self.register_buffer("rating_range", torch.tensor([float(rating_range[0]), float(rating_range[1])]))
            self.register_buffer("mean_rating", torch.tensor(float(mean_rating)))

    @property
    def is_built(self) -> bool:
        return self.items is not None

    # -- user state --------------------------------------------------------------------------------
    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """States after each item of left-padded histories [B, H] -> [B, H, D]."""
        return self.gru(self.drop(self.items(history)))[0]

    def advance(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """State [B, D] after consuming one more item each [B]."""
        return self.gru(self.items(items).unsqueeze(1), state.unsqueeze(0).contiguous())[0].squeeze(1)

    # -- responses ---------------------------------------------------------------------------------
    def click_logits(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Uncalibrated click logits of items [..., K] for states [..., D] -> [..., K]."""
        query = self.click_head(self.drop(state)).unsqueeze(-2)
        return (query * self.drop(self.items(items))).sum(-1) + self.click_bias(items).squeeze(-1)

    def calibrated_logits(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        scale, shift = self.calibration
        return scale * self.click_logits(state, items) + shift

    def click_probability(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Calibrated probability that the user clicks each item when shown it alone, [..., K]."""
        return torch.sigmoid(self.calibrated_logits(state, items))

    def rating_estimate(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Unclamped predicted rating of items [..., K] (the training target is the logged rating)."""
        query = self.rating_head(self.drop(state)).unsqueeze(-2)
        return self.mean_rating + (query * self.items(items)).sum(-1) + self.rating_bias(items).squeeze(-1)

    def rating(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Predicted rating clamped to the data's rating range, [..., K]."""
        if not self.has_ratings:
            raise ValueError("this response model was fit on data without ratings")
        low, high = self.rating_range
        return self.rating_estimate(state, items).clamp(low, high)

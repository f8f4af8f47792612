"""The learned half of the user simulator: will this user click this item, and how would they rate it."""

from __future__ import annotations

import torch
from torch import nn

from lightning_rec.softmax import logsumexp


class ResponseModel(nn.Module):
    """Click probabilities and predicted ratings for (user history, item) pairs.

    A GRU reads the user's recent items. Its state scores every item (bilinear + item bias); the
    softmax over the catalogue is the user's next-item distribution p(item | history), trained like
    a recommender on logged next items. The click logit of an item is a calibrated function of its
    log-probability, scale * log p + shift (Platt scaling on held-out users, fit by the simulator
    training): with a perfect p, a logged next item against `r` uniform random items is told apart
    exactly by log p + log(N / r), so the scale of clicks is that of a positive among r random
    items. A rating is the mean rating plus a user bias (from the state), an item bias and a second
    bilinear score, trained on logged ratings.

    A GRU, not the policy's transformer, so that a policy cannot win by matching its own scorer; and
    a GRU state advances by one cell call per click, so thousands of users step at once.
    """

    def __init__(self, dim: int = 64, dropout: float = 0.1, init_std: float = 0.02):
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
            self.user_rating_bias = nn.Linear(d, 1)
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
        return self.gru(self.drop(self._inputs(history)))[0]

    def start(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Each user's state [B, D] at the start of an episode: after the last item of their history."""
        return self.encode(history)[:, -1]

    def advance(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """State [B, D] after consuming one more item each [B]."""
        return self.gru(self._inputs(items).unsqueeze(1), state.unsqueeze(0).contiguous())[0].squeeze(1)

    def _inputs(self, items: torch.Tensor) -> torch.Tensor:
        """Item vectors scaled up to unit size for the GRU (the table is initialised small for scoring)."""
        return self.items(items) * self.dim**0.5

    # -- clicks ------------------------------------------------------------------------------------
    def scores(self, state: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised next-item scores for states [..., D] of items [..., K] (one set per state), of
        items [K] (shared by all states), or of the whole catalogue (None: [..., N + 1], padding -inf)."""
        query = self.click_head(self.drop(state))
        if items is None:
            scores = query @ self.items.weight.T + self.click_bias.weight.T
            scores[..., 0] = float("-inf")
            return scores
        if items.dim() == 1:
            return query @ self.items(items).T + self.click_bias(items).T
        return (query.unsqueeze(-2) * self.items(items)).sum(-1) + self.click_bias(items).squeeze(-1)

    def log_normaliser(self, state: torch.Tensor) -> torch.Tensor:
        """log of the softmax's normaliser over the whole catalogue [...]: the costly part of log p,
        which a simulator keeps per user until the user's state changes."""
        return logsumexp(self.scores(state)).squeeze(-1)

    def log_probs(
        self, state: torch.Tensor, items: torch.Tensor, normaliser: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log p(item | history) of items [..., K] under the softmax over the whole catalogue
        (`normaliser`: the state's log_normaliser, if already known)."""
        normaliser = self.log_normaliser(state) if normaliser is None else normaliser
        return self.scores(state, items) - normaliser.unsqueeze(-1)

    def click_logits(
        self, state: torch.Tensor, items: torch.Tensor, normaliser: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Calibrated click logits of items [..., K]: the MNL utilities of the simulated choice."""
        scale, shift = self.calibration
        return scale * self.log_probs(state, items, normaliser) + shift

    def click_probability(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Calibrated probability that the user clicks each item when shown it alone, [..., K]."""
        return torch.sigmoid(self.click_logits(state, items))

    # -- ratings -----------------------------------------------------------------------------------
    def rating_estimate(self, state: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Unclamped predicted rating of items [..., K], or of the whole catalogue (None: [..., N + 1]);
        the training target is the logged rating."""
        state = self.drop(state)
        query = self.rating_head(state)
        user_bias = self.user_rating_bias(state)
        if items is None:
            return self.mean_rating + user_bias + query @ self.items.weight.T + self.rating_bias.weight.T
        return (
            self.mean_rating
            + user_bias
            + (query.unsqueeze(-2) * self.items(items)).sum(-1)
            + self.rating_bias(items).squeeze(-1)
        )

    def rating(self, state: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted rating clamped to the data's rating range, [..., K] (None: the whole catalogue)."""
        if not self.has_ratings:
            raise ValueError("this response model was fit on data without ratings")
        low, high = self.rating_range
        return self.rating_estimate(state, items).clamp(low, high)

"""The rule-based half of the user simulator: choosing from a slate, satisfaction and leaving."""

from __future__ import annotations

from typing import Literal

import torch


class UserBehaviour:
    """How a simulated user turns the learned click utilities and ratings into a session.

    Choice: a multinomial logit over the slate plus a no-click option of utility
    `no_click_utility` (0 makes a slate of one item clicked with exactly its calibrated click
    probability); at most one click per slate. Reward: 1 per click, or, where the data has ratings,
    the predicted rating rescaled to [0, 1] (`satisfaction`). Leaving: patience starts at
    `initial_patience` and drops by `ignore_cost` for a slate without a click, by
    `dissatisfaction_cost` for a click predicted to rate below `satisfied_rating`, and (in
    `repeats="forbid"` mode) by `repeat_cost` for every already-consumed or duplicated item shown;
    the user leaves when it reaches 0 or after `max_steps` slates. In "forbid" mode consumed items
    cannot be clicked and earn nothing; in "allow" mode they are ordinary items.
    """

    def __init__(
        self,
        max_steps: int = 20,
        initial_patience: float = 3.0,
        ignore_cost: float = 1.0,
        dissatisfaction_cost: float = 1.0,
        satisfied_rating: float = 3.5,
        repeat_cost: float = 1.0,
        repeats: Literal["forbid", "allow"] = "forbid",
        no_click_utility: float = 0.0,
    ):
        if max_steps < 1 or initial_patience <= 0:
            raise ValueError(
                f"UserBehaviour needs max_steps >= 1 and initial_patience > 0, got {max_steps}, {initial_patience}"
            )
        if repeats not in ("forbid", "allow"):
            raise ValueError(f"UserBehaviour.repeats must be 'forbid' or 'allow', got {repeats!r}")
        self.max_steps, self.initial_patience = max_steps, initial_patience
        self.ignore_cost, self.dissatisfaction_cost, self.satisfied_rating = (
            ignore_cost,
            dissatisfaction_cost,
            satisfied_rating,
        )
        self.repeat_cost, self.repeats, self.no_click_utility = repeat_cost, repeats, no_click_utility

    def choice_probabilities(self, utilities: torch.Tensor, clickable: torch.Tensor) -> torch.Tensor:
        """[B, K + 1]: probability of clicking each slate position, and (last column) of no click."""
        utilities = utilities.masked_fill(~clickable, float("-inf"))
        no_click = torch.full_like(utilities[:, :1], self.no_click_utility)
        return torch.softmax(torch.cat([utilities, no_click], dim=1), dim=1)

    def choose(
        self, utilities: torch.Tensor, clickable: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sampled slate position each user clicks [B], -1 for no click."""
        probs = self.choice_probabilities(utilities, clickable)
        choice = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return torch.where(choice == utilities.shape[1], -1, choice)

    def satisfaction(
        self, rating: torch.Tensor | None, rating_range: torch.Tensor | None, clicked: torch.Tensor
    ) -> torch.Tensor:
        """Reward of each user's step: the click's rating rescaled to [0, 1], or 1 per click without ratings."""
        if rating is None:
            return clicked.float()
        low, high = rating_range
        return clicked * ((rating - low) / (high - low)).clamp(0, 1)

    def patience_cost(
        self, clicked: torch.Tensor, repeats_shown: torch.Tensor, rating: torch.Tensor | None
    ) -> torch.Tensor:
        """Patience each user loses this step [B]."""
        cost = self.ignore_cost * (~clicked).float()
        if rating is not None:
            cost = cost + self.dissatisfaction_cost * (clicked & (rating < self.satisfied_rating)).float()
        if self.repeats == "forbid":
            cost = cost + self.repeat_cost * repeats_shown.float()
        return cost

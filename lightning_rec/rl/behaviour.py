"""The rule-based half of the user simulator: choosing from a slate, satisfaction and how a session ends."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Literal

import torch

from lightning_rec.distributed import inverse_cdf

Mode = Literal["patience", "FreeB", "NX_0", "NX_X"]
MODES = ("patience", "FreeB", "NX_0", "NX_X")


def remember(recent: torch.Tensor, categories: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """A window of the last categories `recent` [B, W] (newest last) after appending each row's
    `categories` [B, J] where `present`, in order."""
    sequence = torch.cat([recent, categories], 1)
    keep = torch.cat([torch.ones_like(recent, dtype=torch.bool), present], 1)
    order = torch.sort(keep.int(), dim=1, stable=True).indices  # absent entries first, the rest in order
    return sequence.gather(1, order)[:, categories.shape[1] :]


@dataclasses.dataclass(frozen=True)
class QuitRule:
    """The field's boredom rule (EasyRL4Rec, DORL on KuaiRec / KuaiRand / Coat), for slates with at
    most one click: the user quits right after clicking an item whose category already appears more
    than `threshold` times among the categories of their last `window` CLICKED items (slates without
    a click add nothing). That click still counts (it is consumed and earns its reward), as the
    field's recommended item does. `over: shown` fills the window with every item shown instead
    (slate order, empty positions skipped); the check is still on the clicked item. The window
    starts empty each episode; items of category 0 (none) never make anyone quit."""

    window: int
    threshold: int = 0
    over: Literal["clicked", "shown"] = "clicked"

    def __post_init__(self) -> None:
        if self.window < 1 or self.threshold < 0:
            raise ValueError(
                f"quit needs window >= 1 and threshold >= 0 (quit when a clicked item's category appears more than "
                f"`threshold` times among the last `window`), got window={self.window}, threshold={self.threshold}"
            )
        if self.over not in ("clicked", "shown"):
            raise ValueError(f"quit.over must be 'clicked' or 'shown', got {self.over!r}")

    def bored(self, recent: torch.Tensor, category: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
        """Which users quit on this step's click [B]: `recent` [B, window] categories (0 = none),
        `category` [B] of the clicked item."""
        repeats = (recent == category.unsqueeze(1)).sum(1)
        return clicked & (category > 0) & (repeats > self.threshold)


@dataclasses.dataclass(frozen=True)
class Temper:
    """KuaiSim's leave model: temper starts at `initial` and falls every step by `decay` plus
    `cost` x the probability that the slate gets no click under the choice model (1 - its click
    probability), so poor slates use it up faster; the user leaves once it reaches 0."""

    initial: float
    cost: float = 1.0
    decay: float = 0.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cost < 0 or self.decay < 0 or self.cost + self.decay == 0:
            raise ValueError(
                f"temper needs initial > 0, cost >= 0 and decay >= 0, not both 0 (else it never falls), "
                f"got initial={self.initial}, cost={self.cost}, decay={self.decay}"
            )

    def fall(self, no_click: torch.Tensor) -> torch.Tensor:
        """Temper lost this step [B], from each slate's no-click probability [B]."""
        return self.decay + self.cost * no_click


class UserBehaviour:
    """How a simulated user turns the learned click utilities and ratings into a session.

    Choice: a multinomial logit over the slate plus a no-click option of utility
    `no_click_utility` (0 makes a slate of one item clicked with exactly its calibrated click
    probability); at most one click per slate, and one every slate with `no_click_utility: -.inf`
    (EasyRL4Rec's user consumes every recommended item). Reward (`satisfaction`): 1 per click, or,
    where the data has ratings, the clicked item's (predicted or ground-truth) rating rescaled to
    [0, 1] (`reward: rescaled`, the default) or as it is (`reward: rating`: the field's units, e.g.
    KuaiRec's watch ratio). `variety` in [-1, 1] is what the population values beyond the click: a
    click in another category than the episode's previous click earns (1 + variety) times its
    reward, one in the same category (1 - variety) times (variety-seeking users > 0, depth-seeking
    ones < 0; the first click and uncategorised items, which leave the previous category as it
    was, earn it unchanged). `category_reward` ({category id: factor}, ids as the data module's
    `catalog.categories` numbers them, others 1) is what the population values by kind of item: a
    click's reward is multiplied by its item's category's factor.

    How a session ends is the `mode`; every mode ends it after `max_steps` slates:
    - "patience" (the default): patience starts at `initial_patience` and drops by `ignore_cost`
      for a slate without a click, by `dissatisfaction_cost` for a click predicted to rate below
      `satisfied_rating`, and (with `repeats: forbid`) by `repeat_cost` for every already-consumed
      or duplicated item shown; the user leaves when it reaches 0. `quit` and `temper` may be added.
    - "FreeB", "NX_0" (EasyRL4Rec): no patience; the user leaves by the `quit` rule (required) or a
      `temper`. FreeB allows repeats (consumed and already shown items may be shown again and are
      ordinary items), NX_0 forbids them.
    - "NX_X": no repeats, no patience, no quit rule, no temper: exactly `max_steps` slates.
    With `repeats: forbid` consumed items cannot be clicked and earn nothing; with "allow" they are
    ordinary items. `repeats` defaults to the mode's ("allow" in FreeB, else "forbid").
    """

    def __init__(
        self,
        max_steps: int = 20,
        initial_patience: float = 3.0,
        ignore_cost: float = 1.0,
        dissatisfaction_cost: float = 1.0,
        satisfied_rating: float = 3.5,
        repeat_cost: float = 1.0,
        repeats: Literal["forbid", "allow"] | None = None,
        no_click_utility: float = 0.0,
        mode: Mode = "patience",
        quit: QuitRule | None = None,
        temper: Temper | None = None,
        reward: Literal["rescaled", "rating"] = "rescaled",
        variety: float = 0.0,
        category_reward: dict[int, float] | None = None,
    ):
        if max_steps < 1 or initial_patience <= 0:
            raise ValueError(
                f"UserBehaviour needs max_steps >= 1 and initial_patience > 0, got {max_steps}, {initial_patience}"
            )
        if reward not in ("rescaled", "rating"):
            raise ValueError(f"UserBehaviour.reward must be 'rescaled' or 'rating', got {reward!r}")
        if not -1 <= variety <= 1:
            raise ValueError(f"UserBehaviour.variety must be in [-1, 1], got {variety}")
        if category_reward is not None and any(c < 1 or f < 0 for c, f in category_reward.items()):
            raise ValueError(
                f"UserBehaviour.category_reward maps category ids >= 1 to factors >= 0, got {category_reward}"
            )
        if mode not in MODES:
            raise ValueError(f"UserBehaviour.mode must be one of {', '.join(MODES)}, got {mode!r}")
        mode_repeats = "allow" if mode == "FreeB" else "forbid"
        if repeats is not None and repeats not in ("forbid", "allow"):
            raise ValueError(f"UserBehaviour.repeats must be 'forbid' or 'allow', got {repeats!r}")
        if mode != "patience" and repeats not in (None, mode_repeats):
            raise ValueError(f"mode {mode!r} {mode_repeats}s repeats: leave UserBehaviour.repeats unset")
        if mode in ("FreeB", "NX_0") and quit is None:
            raise ValueError(
                f"mode {mode!r} ends sessions by the quit rule: set quit (e.g. {{window: 4, threshold: 0}})"
            )
        if mode == "NX_X" and (quit is not None or temper is not None):
            raise ValueError("mode 'NX_X' plays exactly max_steps slates: leave quit and temper unset")
        self.max_steps, self.initial_patience = max_steps, initial_patience
        self.ignore_cost, self.dissatisfaction_cost, self.satisfied_rating = (
            ignore_cost,
            dissatisfaction_cost,
            satisfied_rating,
        )
        self.repeat_cost, self.no_click_utility = repeat_cost, no_click_utility
        self.repeats = repeats if repeats is not None else mode_repeats
        self.mode, self.quit, self.temper, self.reward, self.variety = mode, quit, temper, reward, variety
        self.category_reward = category_reward

    def in_mode(self, mode: Mode) -> UserBehaviour:
        """The same user (choice, reward, patience costs, quit rule, temper) under another session
        protocol: the mode's repeats, and NX_X without the quit rule and temper (it plays exactly
        max_steps slates), so one evaluation can report FreeB, NX_0 and NX_X side by side. Every
        constructor argument is kept as the attribute of its name."""
        settings = {name: getattr(self, name) for name in inspect.signature(UserBehaviour).parameters}
        exact = mode == "NX_X"
        settings.update(
            mode=mode,
            repeats=self.repeats if mode == "patience" else None,
            quit=None if exact else self.quit,
            temper=None if exact else self.temper,
        )
        return UserBehaviour(**settings)

    @property
    def masks_repeats(self) -> bool:
        """Whether slates must leave out what the user consumed or was already shown (all modes but FreeB)."""
        return self.mode != "FreeB"

    @property
    def reads_categories(self) -> bool:
        """Whether the simulator needs item categories (quit rule, variety, category_reward)."""
        return self.quit is not None or self.variety != 0 or self.category_reward is not None

    @property
    def has_patience(self) -> bool:
        return self.mode == "patience"

    def choice_probabilities(self, utilities: torch.Tensor, clickable: torch.Tensor) -> torch.Tensor:
        """[B, K + 1]: probability of clicking each slate position, and (last column) of no click."""
        utilities = utilities.masked_fill(~clickable, float("-inf"))
        nothing = ~clickable.any(1, keepdim=True)  # no click for certain, even at no_click_utility -inf
        no_click = torch.full_like(utilities[:, :1], self.no_click_utility).masked_fill(nothing, 0.0)
        return torch.softmax(torch.cat([utilities, no_click], dim=1), dim=1)

    def choose(
        self, probs: torch.Tensor, generator: torch.Generator | None = None, uniform: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sampled slate position each user clicks [B], -1 for no click, from `choice_probabilities`:
        drawn by `generator`, or (given `uniform`, [B] floats in [0, 1)) by inverting each row's CDF."""
        if uniform is None:
            choice = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            choice = inverse_cdf(probs, uniform.unsqueeze(1)).squeeze(1)
        return torch.where(choice == probs.shape[1] - 1, -1, choice)

    def satisfaction(
        self, rating: torch.Tensor | None, rating_range: torch.Tensor | None, clicked: torch.Tensor
    ) -> torch.Tensor:
        """Reward of each user's step: the click's rating rescaled to [0, 1] (or as it is, with
        `reward: rating`), or 1 per click without ratings."""
        if rating is None:
            return clicked.float()
        if self.reward == "rating":
            return clicked * rating
        low, high = rating_range
        return clicked * ((rating - low) / (high - low)).clamp(0, 1)

    def variety_factor(self, previous: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """What each click's reward is multiplied by [B], from the category of the episode's previous
        click `previous` [B] and of this one `category` [B] (0: none)."""
        known = (previous > 0) & (category > 0)
        sign = torch.where(category == previous, -1.0, 1.0) * known
        return 1 + self.variety * sign

    def category_factor(self, category: torch.Tensor) -> torch.Tensor:
        """`category_reward`'s factor of each click's category [B] (0: none, factor 1)."""
        factors = torch.ones(max([int(category.max()), *self.category_reward]) + 1, device=category.device)
        factors[list(self.category_reward)] = torch.tensor(list(self.category_reward.values()), device=category.device)
        return factors[category]

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

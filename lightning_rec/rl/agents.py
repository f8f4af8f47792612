"""Agents that recommend slates to simulated users: the baselines and any SequentialRecommender.

An agent only scores items; the rollout masks what each user consumed or was already shown and
turns scores into slates (top-K, or sampled), so every agent is judged under the same rules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lightning_rec.rl.episode_states import EpisodeStates, check_positions, episode_layout
from lightning_rec.rl.session_head import CategoryRecency, head_categories
from lightning_rec.rl.simulator import SimulatorState


class SlateAgent:
    """`start` at an episode's beginning, `scores` [B, N + 1] before each step, `observe` the
    clicked item of each user [B] (0 = no click) after it. A greedy slate is `select`ed from the
    scores once the rollout has masked them; re-rankers override it."""

    def start(self, state: SimulatorState) -> None:
        self.batch_size = len(state.users)

    def scores(self) -> torch.Tensor:
        raise NotImplementedError

    def select(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        """The slate [B, K] of masked scores `logits` [B, N + 1] (blocked items at -inf): the top K."""
        return logits.topk(k, dim=1).indices

    def observe(self, clicked: torch.Tensor) -> None:
        pass

    def reseed(self, seed: int) -> None:
        """Restart the agent's own randomness (none by default) from `seed`."""

    def recorded(self) -> dict[str, torch.Tensor]:
        """What the agent kept of the episode for its updates: extra `Episodes` fields."""
        return {}


class RandomAgent(SlateAgent):
    """Uniformly random slates."""

    def __init__(self, num_items: int, seed: int = 0):
        self.num_items, self.generator = num_items, torch.Generator().manual_seed(seed)

    def scores(self) -> torch.Tensor:
        return torch.rand(self.batch_size, self.num_items + 1, generator=self.generator)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)


class PopularityAgent(SlateAgent):
    """The most popular items (by training-event count) the user has not consumed or been shown."""

    def __init__(self, popularity: torch.Tensor):
        self.popularity = popularity.float()

    def scores(self) -> torch.Tensor:
        return self.popularity.unsqueeze(0).expand(self.batch_size, -1)


class RecommenderAgent(SlateAgent):
    """A SequentialRecommender's next-item scores from its state after the user's last
    `context_len` logged items and the clicks so far (see rl/episode_states), divided by `temperature`
    (the softmax a sampled slate is drawn from; top-K slates do not depend on it), plus a fine-tuned
    policy's session `head` (rl/session_head) over the episode's clicks, with the items' `categories`.
    Keeps the row, each step's state slot and each step's state, which the policy updates read back."""

    def __init__(
        self,
        recommender,
        context_len: int,
        max_steps: int,
        temperature: float = 1.0,
        head: CategoryRecency | None = None,
        categories: torch.Tensor | None = None,
    ):
        check_positions(recommender, context_len, max_steps)
        self.recommender, self.context_len, self.max_steps = recommender, context_len, max_steps
        self.temperature, self.head, self.categories = temperature, head, head_categories(head, categories)

    def start(self, state: SimulatorState) -> None:
        super().start(state)
        device = next(self.recommender.parameters()).device
        layout = episode_layout(state.history.to(device), self.context_len, self.max_steps)
        self.states = EpisodeStates(self.recommender, layout, self.context_len)
        self.slots: list[torch.Tensor] = []
        self.hidden: list[torch.Tensor] = []

    def scores(self) -> torch.Tensor:
        self.slots.append(self.states.slot.clone())
        self.hidden.append(self.states.hidden.clone())
        scores = (self.states.hidden / self.temperature) @ self.states.items.T
        if self.head is None:
            return scores
        clicks = self.states.sequence[:, self.context_len :]  # the episode's clicks so far, in order
        count = self.states.slot - self.context_len + 1
        return scores + self.head.bias(clicks, count, self.categories.to(clicks.device))

    def observe(self, clicked: torch.Tensor) -> None:
        self.states.append(clicked.to(self.states.sequence.device))

    def recorded(self) -> dict[str, torch.Tensor]:
        slots, states = torch.stack(self.slots, 1), torch.stack(self.hidden, 1)
        return {"sequence": self.states.sequence, "slots": slots, "states": states}


class HistoryAgent(SlateAgent):
    """Scores from a function of the users' current histories (the observation's `history`
    [B, H], newest last), divided by `temperature`; keeps the histories it acted on, from which
    a policy that is not a module (the meta stage's batch of adapted parameters) recomputes its
    log-probabilities."""

    def __init__(self, score: Callable[[torch.Tensor], torch.Tensor], temperature: float = 1.0):
        self.score, self.temperature = score, temperature

    def start(self, state: SimulatorState) -> None:
        super().start(state)
        self.state, self.histories = state, []

    def scores(self) -> torch.Tensor:
        self.histories.append(self.state.history.clone())
        return self.score(self.histories[-1]) / self.temperature

    def recorded(self) -> dict[str, torch.Tensor]:
        return {"histories": torch.stack(self.histories, 1)}

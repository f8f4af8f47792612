"""Slate baselines an RL policy must beat: exploration and re-rankers over another agent's scores.

Each is a YAML component holding only its knobs; `wrap(base, categories)` gives the agent that
plays: the base agent's scores (masked by the rollout as usual), turned into slates by `select`.
Slates are built position by position for all users at once (a loop over the K positions only).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch

from lightning_rec.rl.agents import SlateAgent
from lightning_rec.rl.behaviour import QuitRule, remember
from lightning_rec.rl.rollout import play_in_chunks
from lightning_rec.rl.simulator import SimulatorState, UserSimulator


def category_counts(categories: torch.Tensor, num_categories: int) -> torch.Tensor:
    """[B, C + 1]: how often each category occurs in each row of `categories` [B, J]; category 0 (none) counts 0."""
    counts = torch.zeros(len(categories), num_categories + 1, dtype=torch.long, device=categories.device)
    counts.scatter_add_(1, categories, torch.ones_like(categories))
    counts[:, 0] = 0
    return counts


def tune(
    candidates: dict[float, SlateAgent], env: UserSimulator, users: torch.Tensor, slate_size: int, seed: int = 0
) -> tuple[float, dict[float, float]]:
    """The knob value whose agent earns the highest mean return playing `users` greedily in `env`
    (the same random clicks for each), and every value's mean return. Pass the environment the
    policies are trained in, never the one they are judged in: a baseline tuned on the evaluation
    users would have seen the test. Ties go to the first value."""
    returns = {}
    for value, agent in candidates.items():
        returns[value] = float(play_in_chunks(env, agent, users, slate_size, seed).rewards.sum(1).mean())
    return max(returns, key=returns.get), returns


class Reranker(SlateAgent):
    """Plays a base agent (its scores, observations and records) with its own slate construction."""

    base: SlateAgent
    categories: torch.Tensor | None = None  # LongTensor[N + 1], 0 = none

    def wrap(self, base: SlateAgent, categories: torch.Tensor | None = None) -> Reranker:
        """This re-ranker over `base`'s scores, with the items' `categories` (catalog.categories) if it needs them."""
        agent = copy.copy(self)
        agent.base, agent.categories = base, categories
        return agent

    def start(self, state: SimulatorState) -> None:
        super().start(state)
        self.base.start(state)

    def scores(self) -> torch.Tensor:
        return self.base.scores()

    def observe(self, clicked: torch.Tensor) -> None:
        self.base.observe(clicked)

    def reseed(self, seed: int) -> None:
        self.base.reseed(seed)

    def recorded(self) -> dict[str, torch.Tensor]:
        return self.base.recorded()

    def _categories(self, device: torch.device) -> torch.Tensor:
        if self.categories is None:
            raise ValueError(
                f"{type(self).__name__} needs item categories: set the data module's `category` option "
                "(e.g. {column: genres, pick: first}) and wrap it with catalog.categories"
            )
        return self.categories.to(device)


class EpsilonGreedy(Reranker):
    """The base agent's slate, each position replaced with probability `epsilon` by a uniformly
    random item that is neither blocked nor already in the slate."""

    def __init__(self, epsilon: float = 0.1, seed: int = 0):
        if not 0 <= epsilon <= 1:
            raise ValueError(f"EpsilonGreedy.epsilon must be in [0, 1], got {epsilon}")
        self.epsilon, self.seed = epsilon, seed
        self.generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        self.seed, self.generator = seed, None
        super().reseed(seed)

    def select(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        if self.generator is None or self.generator.device != logits.device:
            self.generator = torch.Generator(logits.device).manual_seed(self.seed)
        slate = self.base.select(logits, k).clone()
        free = torch.isfinite(logits).scatter(1, slate, False)
        for position in range(k):
            draws = torch.rand(logits.shape, generator=self.generator, device=logits.device)
            pick = draws.masked_fill(~free, -1).argmax(1)
            explore = free.any(1) & (
                torch.rand(len(logits), generator=self.generator, device=logits.device) < self.epsilon
            )
            slate[:, position] = torch.where(explore, pick, slate[:, position])
            free[explore, pick[explore]] = False
        return slate


class CategorySpread(Reranker):
    """A diversity re-ranker that knows nothing of any quit rule: the slate is built greedily, each
    position taking the item of the highest base score minus `penalty` x the number of items of its
    category already in the slate or among the user's last `memory` clicks in the episode (its own
    memory of what it observed; items without a category are never penalised)."""

    def __init__(self, penalty: float = 1.0, memory: int = 10):
        if penalty < 0 or memory < 0:
            raise ValueError(f"CategorySpread needs penalty >= 0 and memory >= 0, got {penalty} and {memory}")
        self.penalty, self.memory = penalty, memory

    def start(self, state: SimulatorState) -> None:
        super().start(state)
        self.clicked = torch.zeros(len(state.users), self.memory, dtype=torch.long, device=state.history.device)

    def observe(self, clicked: torch.Tensor) -> None:
        super().observe(clicked)
        categories = self._categories(clicked.device)[clicked].unsqueeze(1)
        self.clicked = remember(self.clicked.to(clicked.device), categories, (clicked > 0).unsqueeze(1))

    def select(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        categories = self._categories(logits.device)
        counts = category_counts(self.clicked.to(logits.device), int(categories.max())).to(logits.dtype)
        available, penalised, slate = logits.clone(), torch.empty_like(logits), []
        for _ in range(k):  # in place: two passes over the [B, N + 1] scores per position
            torch.index_select(counts, 1, categories, out=penalised)
            pick = penalised.mul_(-self.penalty).add_(available).argmax(1)
            slate.append(pick)
            available.scatter_(1, pick.unsqueeze(1), float("-inf"))
            counts += category_counts(categories[pick].unsqueeze(1), counts.shape[1] - 1)
        return torch.stack(slate, 1)


class QuitOracle(Reranker):
    """A re-ranker told the user's quit rule (`window`, `threshold`, `over` as the behaviour's
    QuitRule): it never places an item whose category would make the user quit if clicked (tracking
    the user's window from what it observes), and otherwise ranks by the base scores. Positions no
    safe, unblocked item can fill stay empty (item 0). With `over: shown` it remembers the slates it
    selected, so it plays greedy rollouts (not sampled ones)."""

    def __init__(self, window: int, threshold: int = 0, over: Literal["clicked", "shown"] = "clicked"):
        self.rule = QuitRule(window, threshold, over)

    def start(self, state: SimulatorState) -> None:
        super().start(state)
        self.recent = torch.zeros(len(state.users), self.rule.window, dtype=torch.long, device=state.history.device)

    def observe(self, clicked: torch.Tensor) -> None:
        super().observe(clicked)
        categories = self._categories(clicked.device)
        if self.rule.over == "shown":
            pushed = (categories[self.shown], self.shown != 0)
        else:
            pushed = (categories[clicked].unsqueeze(1), (clicked > 0).unsqueeze(1))
        self.recent = remember(self.recent.to(clicked.device), *pushed)

    def select(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        categories = self._categories(logits.device)
        counts = category_counts(self.recent.to(logits.device), int(categories.max()))
        boring = counts[:, categories] > self.rule.threshold  # category 0 counts 0: never boring
        safe = logits.masked_fill(boring, float("-inf"))
        slate = self.base.select(safe, k)
        self.shown = torch.where(torch.isfinite(safe.gather(1, slate)), slate, 0)
        return self.shown

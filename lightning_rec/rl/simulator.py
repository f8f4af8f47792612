"""UserSimulator: a batched environment of simulated users, started from their real histories.

    simulator = load_simulators(checkpoint, data, train_end, UserBehaviour(), seed=0)["train"]
    state = simulator.reset(users)                   # users: LongTensor [B] of simulator.users
    while not state.done.all():
        clicks, rewards, done = simulator.step(slates)   # slates: LongTensor [B, K] of item ids (0 = empty)

Every tensor has one row per user, so a step for thousands of users is a handful of tensor
operations. Users who are done stay in the batch: they get no clicks, no reward and done=True.
"""

from __future__ import annotations

import dataclasses

import torch

from lightning_rec.data.datasets import gather_windows
from lightning_rec.data.preprocess import SequenceData
from lightning_rec.distributed import keyed_uniform
from lightning_rec.rl.behaviour import UserBehaviour, remember
from lightning_rec.rl.response_model import ResponseModel
from lightning_rec.rl.reward_matrix import MatrixResponse


@dataclasses.dataclass
class SimulatorState:
    """What the environment knows about each user; `history` and `consumed` are the observation."""

    users: torch.Tensor  # LongTensor[B]: user indices into the data
    history: torch.Tensor  # LongTensor[B, H]: most recent consumed items, left-padded, newest last
    consumed: torch.Tensor  # BoolTensor[B, N + 1]: every item the user has consumed (logs + clicks)
    response: torch.Tensor  # [B, D]: the response model's state of the user (a MatrixResponse's: its row)
    normaliser: torch.Tensor  # FloatTensor[B]: the response model's log_normaliser of that state
    patience: torch.Tensor  # FloatTensor[B]
    done: torch.Tensor  # BoolTensor[B]: the session is over
    left: torch.Tensor  # BoolTensor[B]: over because the user left (patience, temper, quit rule), not max_steps
    steps: int = 0
    temper: torch.Tensor | None = None  # FloatTensor[B], under a behaviour with a temper
    recent: torch.Tensor | None = None  # LongTensor[B, window]: the quit rule's last categories, newest last
    previous: torch.Tensor | None = None  # LongTensor[B]: the category of the last categorised click (0: none)
    dice: torch.Tensor | None = None  # LongTensor[B]: keys of each row's own clicks (see UserSimulator.reset)


class UserSimulator:
    """Simulated users: a learned ResponseModel (clicks, ratings), or a ground-truth
    MatrixResponse (rl/reward_matrix.py), plus a UserBehaviour (choice, reward, leaving), with
    episodes that start from `data`'s logged histories of `users`.

    `users` are the users this environment may simulate (those its response model was fit on);
    `reset` refuses others, so that a policy is never trained on the evaluation environment's users.
    `categories` (LongTensor[N + 1], 0 = none: the data module's `catalog.categories`) are what a
    behaviour's quit rule counts. `available` (BoolTensor[N + 1], default: every item) are the items
    the environment can show (a ground-truth matrix's items): others are never clicked, and
    `rollout` masks them.
    """

    def __init__(
        self,
        response_model: ResponseModel | MatrixResponse,
        behaviour: UserBehaviour,
        data: SequenceData,
        train_end: torch.Tensor,
        users: torch.Tensor,
        history_len: int = 50,
        seed: int = 0,
        categories: torch.Tensor | None = None,
        available: torch.Tensor | None = None,
    ):
        if behaviour.reads_categories and categories is None:
            raise ValueError(
                "UserBehaviour.quit, .variety and .category_reward read item categories, and this simulator was "
                "given none: set the data module's `category` option (e.g. {column: genres, pick: first})"
            )
        if categories is not None and len(categories) != data.num_items + 1:
            raise ValueError(
                f"categories must hold one id per item and padding ({data.num_items + 1}), got {len(categories)}"
            )
        self.model = response_model.eval()
        self.behaviour = behaviour
        self.device = next(response_model.buffers()).device
        self.categories = None if categories is None else categories.to(self.device)
        self.items, self.offsets = data.items.to(self.device), data.offsets.to(self.device)
        self.train_end = train_end.to(self.device)
        self.users = users.to(self.device)
        self.allowed = torch.zeros(data.num_users, dtype=torch.bool, device=self.device)
        self.allowed[self.users] = True
        self.num_items, self.history_len = data.num_items, history_len
        available = torch.ones(data.num_items + 1, dtype=torch.bool) if available is None else available.clone()
        self.available = available.to(self.device)
        self.available[0] = False
        self.generator = torch.Generator(self.device)
        self.seed(seed)
        self.state: SimulatorState | None = None

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)
        self.dice_seed = seed

    @torch.no_grad()
    def reset(
        self, users: torch.Tensor, positions: torch.Tensor | None = None, dice: torch.Tensor | None = None
    ) -> SimulatorState:
        """Start one episode per user right after `positions` (events within each user's sequence;
        default: the end of their training history). With `dice` (LongTensor [B] of keys), row b's
        clicks are drawn from `keyed_uniform(seed, dice[b], step)` instead of the generator: an episode's
        dice then depend on its key alone, not on which other episodes share the batch."""
        users = users.to(self.device)
        if dice is not None and dice.shape != users.shape:
            raise ValueError(f"dice has shape {tuple(dice.shape)}, users {tuple(users.shape)}: one key per episode")
        if not self.allowed[users].all():
            bad = users[~self.allowed[users]][:5].tolist()
            raise ValueError(f"users {bad} are not simulated by this environment (see UserSimulator.users)")
        positions = self.train_end[users] if positions is None else positions.to(self.device)
        if (positions < 1).any():
            raise ValueError("every episode needs at least one logged event before it (positions >= 1)")
        starts = self.offsets[users]
        history = gather_windows(self.items, starts, starts + positions, self.history_len)
        row = torch.repeat_interleave(torch.arange(len(users), device=self.device), positions)
        event = starts[row] + torch.arange(len(row), device=self.device) - (torch.cumsum(positions, 0) - positions)[row]
        consumed = torch.zeros(len(users), self.num_items + 1, dtype=torch.bool, device=self.device)
        consumed[row, self.items[event]] = True
        false = torch.zeros(len(users), dtype=torch.bool, device=self.device)
        response = self.model.start(users, history)
        temper, quit = self.behaviour.temper, self.behaviour.quit
        self.state = SimulatorState(
            users=users,
            history=history,
            consumed=consumed,
            response=response,
            normaliser=self.model.log_normaliser(response),
            patience=torch.full((len(users),), self.behaviour.initial_patience, device=self.device),
            done=false,
            left=false.clone(),
            temper=None if temper is None else torch.full((len(users),), temper.initial, device=self.device),
            recent=None if quit is None else torch.zeros(len(users), quit.window, dtype=torch.long, device=self.device),
            previous=torch.zeros(len(users), dtype=torch.long, device=self.device) if self.behaviour.variety else None,
            dice=None if dice is None else dice.to(self.device),
        )
        return self.state

    @torch.no_grad()
    def click_probabilities(self, slates: torch.Tensor) -> torch.Tensor:
        """[B, K + 1]: each slate position's click probability, and (last column) no click's."""
        utilities, clickable, _ = self._utilities(slates)
        return self.behaviour.choice_probabilities(utilities, clickable)

    @torch.no_grad()
    def step(self, slates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Show each user a slate [B, K]; returns (clicks [B, K] bool, rewards [B], done [B])."""
        state, behaviour = self.state, self.behaviour
        if state is None:
            raise RuntimeError("call reset(users) before step(slates)")
        utilities, clickable, repeats = self._utilities(slates)
        probs = behaviour.choice_probabilities(utilities, clickable)
        if state.dice is None:
            choice = behaviour.choose(probs, self.generator)
        else:
            step = torch.tensor(state.steps, device=self.device)
            choice = behaviour.choose(probs, uniform=keyed_uniform(self.dice_seed, state.dice, step))
        clicked = choice >= 0
        item = slates.gather(1, choice.clamp(min=0).unsqueeze(1)).squeeze(1) * clicked
        rating = self.model.rating(state.response, item.unsqueeze(1)).squeeze(1) if self.model.has_ratings else None
        rating_range = self.model.rating_range if self.model.has_ratings else None
        rewards = behaviour.satisfaction(rating, rating_range, clicked)
        if behaviour.category_reward is not None:
            rewards = rewards * behaviour.category_factor(self.categories[item])
        if behaviour.variety:
            category = self.categories[item]
            rewards = rewards * behaviour.variety_factor(state.previous, category)
            state.previous = torch.where(category > 0, category, state.previous)  # item 0: no click
        active = ~state.done
        leaving = self._leaving(slates, item, clicked, probs[:, -1], repeats.sum(1), rating, active)
        moved = torch.cat([state.history[:, 1:], item.unsqueeze(1)], dim=1)
        state.history = torch.where(clicked.unsqueeze(1), moved, state.history)
        state.response = torch.where(clicked.unsqueeze(1), self.model.advance(state.response, item), state.response)
        state.normaliser[clicked] = self.model.log_normaliser(state.response[clicked])
        state.consumed[clicked, item[clicked]] = True
        state.steps += 1
        state.left = state.left | (active & leaving)
        state.done = state.done | state.left | (state.steps >= behaviour.max_steps)
        clicks = torch.zeros_like(slates, dtype=torch.bool).scatter_(
            1, choice.clamp(min=0).unsqueeze(1), clicked.unsqueeze(1)
        )
        return clicks, rewards, state.done.clone()

    def _leaving(
        self,
        slates: torch.Tensor,
        item: torch.Tensor,
        clicked: torch.Tensor,
        no_click: torch.Tensor,
        repeats_shown: torch.Tensor,
        rating: torch.Tensor | None,
        active: torch.Tensor,
    ) -> torch.Tensor:
        """Charge this step to each active user's patience, temper and quit-rule window; who leaves [B]."""
        state, behaviour = self.state, self.behaviour
        leaving = torch.zeros_like(clicked)
        if behaviour.has_patience:
            cost = behaviour.patience_cost(clicked, repeats_shown, rating)
            state.patience = torch.where(active, state.patience - cost, state.patience)
            leaving |= state.patience <= 0
        if behaviour.temper is not None:
            state.temper = torch.where(active, state.temper - behaviour.temper.fall(no_click), state.temper)
            leaving |= state.temper <= 0
        if behaviour.quit is not None:
            quit, category = behaviour.quit, self.categories[item]
            leaving |= quit.bored(state.recent, category, clicked)
            shown = (self.categories[slates], (slates != 0) & active.unsqueeze(1))
            pushed = shown if quit.over == "shown" else (category.unsqueeze(1), clicked.unsqueeze(1))
            state.recent = remember(state.recent, *pushed)
        return leaving

    def _utilities(self, slates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Calibrated click utilities [B, K], which positions can be clicked, and which are repeats."""
        state = self.state
        if slates.ndim != 2 or slates.shape[0] != len(state.users) or slates.dtype != torch.long:
            raise ValueError(
                f"slates must be a LongTensor [{len(state.users)}, K], got {slates.dtype} {tuple(slates.shape)}"
            )
        if slates.numel() and (slates.min() < 0 or slates.max() > self.num_items):
            raise ValueError(f"slate items must be ids in 0..{self.num_items} (0 = empty position)")
        shown = slates != 0
        k = slates.shape[1]
        earlier = torch.ones(k, k, dtype=torch.bool, device=slates.device).tril(-1)
        duplicate = ((slates.unsqueeze(2) == slates.unsqueeze(1)) & earlier).any(2)
        repeats = shown & (state.consumed.gather(1, slates) | duplicate)
        clickable = shown & ~state.done.unsqueeze(1) & self.available[slates]
        if self.behaviour.repeats == "forbid":
            clickable = clickable & ~repeats
        return self.model.click_logits(state.response, slates, state.normaliser), clickable, repeats

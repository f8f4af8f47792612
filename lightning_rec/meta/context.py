"""Context-based adaptation (RL^2 / PEARL style): the policy conditions on a summary of the episodes
it has played in this environment, instead of taking gradient steps on them.

What a population rewards or tolerates is not in any user's history; it shows only in how the
policy's own episodes went (which clicks paid, when users quit). A gradient step on a few episodes
moves the policy little and noisily; a summary network meta-trained across a family's environments
can learn to read those episodes directly. Adaptation is then a forward pass: play, summarise, play
again with the summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from lightning_rec.meta.adaptive_heads import StateHead
from lightning_rec.meta.adaptive_policy import AdaptivePolicy
from lightning_rec.meta.inner import InnerLoop, Params
from lightning_rec.meta.task_batch import TaskBatch
from lightning_rec.meta.task_environment import TaskEnvironment, by_task
from lightning_rec.rl.rollout import Episodes

CONTEXT = "head.context"  # the adapted value's name: a buffer the inner loop replaces, never a gradient step


class ContextHead(StateHead):
    """Adds `apply(context)` and `repeat(context)` times the latest item's vector to the user state:
    the first moves the user's taste, the second how much the next item should be like the last one
    (a knob that wants opposite signs where a population quits on repetition or pays for depth).
    `context` [C] (a buffer, zero before any episode) is the mean over every turn played so far of
    `summary(turn features)`; a turn's features are the clicked item's vector, its product with the
    episode's previous click (how alike the two are: whether a repeat or a change paid shows only
    through it, as a mean of single turns cannot), each of the two also times the turn's reward,
    the reward, whether anything was clicked and whether the episode ended there. `apply` and
    `repeat` start at zero, so a fresh head scores exactly as the recommender does."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.width = width
        self.summary: nn.Sequential | None = None
        self.apply_context: nn.Linear | None = None

    def build(self, dim: int) -> None:
        self.summary = nn.Sequential(nn.Linear(4 * dim + 3, self.width), nn.GELU(), nn.Linear(self.width, self.width))
        self.apply_context, self.repeat = nn.Linear(self.width, dim), nn.Linear(self.width, dim)
        for layer in (self.apply_context, self.repeat):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("context", torch.zeros(self.width), persistent=False)

    @property
    def is_built(self) -> bool:
        return self.summary is not None

    def forward(self, state: torch.Tensor, latest: torch.Tensor) -> torch.Tensor:
        return state + self.apply_context(self.context) + self.repeat(self.context) * latest

    def turns(self, episodes: Episodes, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each turn's summary [R, S, C] (attached to the summary network) and whether it happened
        [R, S], for episodes [R, S] and the item table [N + 1, D]."""
        clicked = episodes.clicked
        vectors = items[clicked] * (clicked != 0).unsqueeze(-1)
        alike = vectors * previous_click(vectors, clicked != 0)
        reward = episodes.rewards.unsqueeze(-1)
        valid = episodes.valid
        ended = valid & ~torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], 1)
        flags = torch.stack([clicked != 0, ended], -1).float()
        features = torch.cat([vectors, alike, reward * vectors, reward * alike, reward, flags], -1)
        return self.summary(features), valid


def previous_click(vectors: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
    """[R, S, D]: at each turn, the vector of the episode's last click before it (zero before the
    first), for the turns' vectors [R, S, D] and whether each turn had a click [R, S]."""
    turn = torch.arange(clicked.shape[1], device=clicked.device).expand_as(clicked)
    last = torch.where(clicked, turn, -1).cummax(1).values  # the latest click up to each turn
    before = torch.cat([last.new_full((len(last), 1), -1), last[:, :-1]], 1)
    found = vectors.gather(1, before.clamp(min=0).unsqueeze(-1).expand_as(vectors))
    return found * (before >= 0).unsqueeze(-1)


class ContextLoop(InnerLoop):
    """The inner loop of a ContextHead policy: each of `steps` steps plays `environment.episodes`
    exploring episodes per task in its "train" simulator with the current context, then sets the
    context to the mean summary of every turn played so far. The adapted context stays attached to
    the summary network, so FOMAML's query gradient reaches it through the context (as it reaches
    Meta-SGD's learned rates through the steps). Tasks without an environment (cold-start users)
    keep the empty context and their next-item query loss."""

    def __init__(self, policy: AdaptivePolicy, steps: int, environment: TaskEnvironment):
        super().__init__(policy, [CONTEXT], steps, 0.0, "policy_gradient", environment)

    def split(self) -> tuple[Params, Params]:
        """(the context buffer, every parameter): the context is the only adapted value, and every
        parameter (the summary network and `apply` too) is meta-trained."""
        return {CONTEXT: self.policy.head.context}, dict(self.policy.named_parameters())

    def fast_weights(
        self, tasks: TaskBatch, steps: int | None = None, with_query: bool = False, items: torch.Tensor | None = None
    ) -> Iterator[Params]:
        head = self.policy.head
        items = (self.item_table() if items is None else items).detach()
        fast = {CONTEXT: head.context.detach().expand(len(tasks), -1)}
        yield fast
        if not self._in_environment(tasks):  # cold-start tasks: no environment to play, the context stays empty
            for _ in range(self.steps if steps is None else steps):
                yield fast
            return
        total = torch.zeros(len(tasks), head.width, device=items.device)
        count = torch.zeros(len(tasks), 1, device=items.device)
        for _ in range(self.steps if steps is None else steps):
            with torch.no_grad():
                episodes = self._episodes({CONTEXT: fast[CONTEXT].detach()}, tasks, "train", True, items)
            summaries, valid = head.turns(episodes, items)
            total = total + by_task(summaries * valid.unsqueeze(-1), len(tasks)).sum((1, 2))
            count = count + by_task(valid, len(tasks)).sum((1, 2)).unsqueeze(1)
            fast = {CONTEXT: total / count.clamp(min=1)}
            yield fast

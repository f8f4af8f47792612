"""The contract between the fine-tuning stage and a policy-gradient algorithm (a YAML component).

The stage owns the policy, the environment and the optimisation; an algorithm reads what
`PolicyContext` offers and turns a training batch into `Gradient`s, which the stage backpropagates
and steps on. Nothing passes between the two through attributes set on either between calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

if TYPE_CHECKING:
    from lightning_rec.rl.rollout import Episodes


@dataclasses.dataclass
class Gradient:
    """A loss for the stage to backpropagate; with `step` it then takes one optimiser step (False:
    more chunks of the same step follow, their gradients add up). `logs` are this loss's share of
    the numbers to log: the stage sums each over the batch's gradients."""

    loss: torch.Tensor
    logs: dict[str, float]
    step: bool = True


@runtime_checkable
class PolicyContext(Protocol):
    """What an algorithm may read from the fine-tuning stage (PolicyFineTuner implements it)."""

    recommender: nn.Module  # the SequentialRecommender being fine-tuned
    state_dim: int  # width of the policy's states, for the heads an algorithm adds
    slate_size: int

    def play(self, batch: dict) -> tuple[Episodes, dict[str, float]]:
        """Episodes sampled from the policy in the training environment, from the batch's users,
        and their summary numbers (return, ctr, length) to log."""

    def episode_logits(
        self, episodes: Episodes, rows: torch.Tensor, recommender: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(states [b, T, D], the slates' sampling logits [b, T, N + 1]) of users `rows`, under the
        policy or another `recommender`, with the items masked during the episode at -inf."""

    def progress(self, steps: int) -> torch.Tensor:
        """[1, steps]: each step's share of the longest episode (the value heads' time input)."""

    def logged_rewards(self, batch: dict) -> torch.Tensor:
        """[B, L]: the reward of each logged target of the batch's windows."""

    def minibatches(self, size: int, minibatch: int, shuffle: bool) -> list[torch.Tensor]:
        """Row indices of `size` rows in minibatches, shuffled with the stage's generator."""


class PolicyAlgorithm(nn.Module):
    """One policy update per training batch.

    `build(context)` creates what the algorithm adds to the policy (value head, logging-policy
    head, frozen reference), sized from the context; its parameters are trained at the stage's
    `head_lr`. `update(context, batch)` gathers its experience (episodes in the training
    environment, or the batch's logged windows) and yields the Gradients of its optimiser steps.
    """

    def build(self, context: PolicyContext) -> None:
        raise NotImplementedError

    def update(self, context: PolicyContext, batch: dict) -> Iterator[Gradient]:
        raise NotImplementedError

"""Small heads the RL algorithms put on the policy's state (which they read without changing it)."""

from __future__ import annotations

import torch
from torch import nn


class ValueHead(nn.Module):
    """V(state, step): the expected return from a step. The step's share of the episode is an input,
    since how much reward is left depends on how many slates are left."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor, progress: torch.Tensor) -> torch.Tensor:
        """state [..., D] (gradients are not passed into it), progress [...] in [0, 1] -> [...]."""
        return self.net(torch.cat([state.detach(), progress.unsqueeze(-1)], dim=-1)).squeeze(-1)


class LoggingPolicyHead(nn.Module):
    """beta(item | state): the logging policy, estimated from logged (state, item) pairs by maximum
    likelihood on the policy's state and item vectors with gradients stopped (Chen et al., 2019)."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Linear(dim, dim)

    def forward(self, state: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits [..., N + 1] (padding -inf) for states [..., D] and the item table [N + 1, D]."""
        logits = self.project(state.detach()) @ items.detach().T
        logits[..., 0] = float("-inf")
        return logits

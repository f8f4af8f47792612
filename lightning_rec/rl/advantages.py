"""Returns and advantages of batched episodes: tensors [B, T] with a `valid` mask of the steps that
happened (an episode's valid steps are a prefix; the step after its last one is terminal)."""

from __future__ import annotations

import torch


def discounted_returns(rewards: torch.Tensor, valid: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = sum_{u >= t} gamma^(u - t) r_u over each episode's valid steps; 0 on invalid steps."""
    rewards = rewards * valid
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns * valid


def generalized_advantages(
    rewards: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lambda) advantages and the value targets (advantages + values), both [B, T], 0 on
    invalid steps. An episode ends after its last valid step, so nothing is bootstrapped past it."""
    rewards, values = rewards * valid, values * valid
    next_valid = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], dim=1)
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1) * next_valid
    deltas = rewards + gamma * next_values - values
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = deltas[:, t] + gamma * lam * next_valid[:, t] * running
        advantages[:, t] = running
    advantages = advantages * valid
    return advantages, (advantages + values) * valid


def mean_baseline(returns: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Returns minus their mean over `dim` among valid entries, 0 on invalid steps: REINFORCE's
    baseline without a value head, the return of the other episodes of a group at the same step."""
    live = valid.to(returns.dtype)
    baseline = (returns * live).sum(dim, keepdim=True) / live.sum(dim, keepdim=True).clamp(min=1)
    return (returns - baseline) * live

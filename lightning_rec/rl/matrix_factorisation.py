"""Biased matrix factorisation fit on the observed cells of a user x item matrix: the model that
completes a randomly exposed ground-truth matrix, and the baseline a learned simulator's ratings
are checked against (benchmarks/coat_check.py)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class MatrixFactorisation:
    """value(u, i) = mean + user_bias[u] + item_bias[i] + users[u] . items[i]."""

    mean: torch.Tensor  # FloatTensor[]
    user_bias: torch.Tensor  # FloatTensor[U]
    item_bias: torch.Tensor  # FloatTensor[I]
    users: torch.Tensor  # FloatTensor[U, D]
    items: torch.Tensor  # FloatTensor[I, D]

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Values of (users[j], items[j]) pairs, broadcast like the two index tensors."""
        dot = (self.users[users] * self.items[items]).sum(-1)
        return self.mean + self.user_bias[users] + self.item_bias[items] + dot

    def rows(self, users: torch.Tensor) -> torch.Tensor:
        """FloatTensor[len(users), I]: every item's value for each user (one matrix product)."""
        return self.mean + self.user_bias[users, None] + self.item_bias + self.users[users] @ self.items.T


def fit_matrix_factorisation(
    users: torch.Tensor,
    items: torch.Tensor,
    values: torch.Tensor,
    num_users: int,
    num_items: int,
    dim: int = 16,
    l2: float = 0.1,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
) -> MatrixFactorisation:
    """Squared error on the observed cells (users[j], items[j], values[j]) plus l2 x each observed
    cell's squared factors and biases (the usual per-rating penalty, so rarely seen users and items
    are shrunk most), minimised by full-batch Adam from a seeded start: deterministic, and one pass
    over the cells per step."""
    if not (len(users) == len(items) == len(values)) or len(values) == 0:
        raise ValueError("fit_matrix_factorisation needs as many users, items and values, at least one")
    generator = torch.Generator().manual_seed(seed)
    values = values.float()
    mean = values.mean()
    user_factors = (0.01 * torch.randn(num_users, dim, generator=generator)).requires_grad_()
    item_factors = (0.01 * torch.randn(num_items, dim, generator=generator)).requires_grad_()
    user_bias = torch.zeros(num_users, requires_grad=True)
    item_bias = torch.zeros(num_items, requires_grad=True)
    parameters = [user_factors, item_factors, user_bias, item_bias]
    optimiser = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        p, q, bu, bi = user_factors[users], item_factors[items], user_bias[users], item_bias[items]
        error = mean + bu + bi + (p * q).sum(-1) - values
        penalty = (p.square().sum(-1) + q.square().sum(-1) + bu.square() + bi.square()).mean()
        loss = error.square().mean() + l2 * penalty
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return MatrixFactorisation(mean, *(t.detach() for t in (user_bias, item_bias, user_factors, item_factors)))

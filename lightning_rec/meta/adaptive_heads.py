"""Small modules on top of the policy's user state that the inner loop can adapt alone.

Both start as the identity, so a pretrained policy with a fresh head scores exactly as before.
They are sized in `build(dim)` because the state's width comes from the pretrained checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


class StateHead(nn.Module):
    """Base class: maps user states [..., D] to adapted states [..., D], given also `latest` [..., D],
    the vector of the user's latest item at each state (a head may read what was just clicked)."""

    def build(self, dim: int) -> None:
        raise NotImplementedError

    @property
    def is_built(self) -> bool:
        raise NotImplementedError


class UserHead(StateHead):
    """Per-user affine correction h + hW + b (W, b start at zero). Adapted per user, the bias is a
    user preference vector learned from the support items and W re-weights the state's features."""

    def __init__(self):
        super().__init__()
        self.linear: nn.Linear | None = None

    def build(self, dim: int) -> None:
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @property
    def is_built(self) -> bool:
        return self.linear is not None

    def forward(self, state: torch.Tensor, latest: torch.Tensor) -> torch.Tensor:
        return state + self.linear(state)


class Adapter(StateHead):
    """Bottleneck residual adapter h + up(gelu(down(h))), `up` zero-initialised: few parameters,
    non-linear, cheap to adapt per user or segment."""

    def __init__(self, bottleneck: int = 16):
        super().__init__()
        self.bottleneck = bottleneck
        self.down: nn.Linear | None = None
        self.up: nn.Linear | None = None

    def build(self, dim: int) -> None:
        self.down = nn.Linear(dim, self.bottleneck)
        self.up = nn.Linear(self.bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    @property
    def is_built(self) -> bool:
        return self.down is not None

    def forward(self, state: torch.Tensor, latest: torch.Tensor) -> torch.Tensor:
        return state + self.up(nn.functional.gelu(self.down(state)))

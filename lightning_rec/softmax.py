"""Catalogue-sized softmax arithmetic that stays fast on CPUs.

exp() of arguments below about -87 underflows, and the vectorised exp of the CPU math libraries
takes a much slower path for every such element (seen in torch.profiler on this project's PPO update).
Full-catalogue logits, above all at a sampling temperature below 1, put most items there. So
terms below exp(-80) of the largest one are set to exactly 0 before exp() sees them: each changes
the normaliser by less than 1e-34 of it, and its gradient, which would be as small, becomes 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FLOOR = -80.0


def logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """log sum exp over the last dimension [..., 1] (kept), as torch.logsumexp but for the terms
    below the floor; -inf entries (masked items) count as 0, an all -inf row gives -inf."""
    top = logits.detach().amax(-1, keepdim=True).clamp(min=torch.finfo(logits.dtype).min)  # all -inf: no NaN
    return F.threshold(logits - top, FLOOR, float("-inf")).exp().sum(-1, keepdim=True).log() + top


def log_probs_at(logits: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[items] [..., M] without building the log-softmax [..., N + 1]."""
    return logits.gather(-1, items) - logsumexp(logits)

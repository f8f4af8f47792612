"""Slates as actions: sampling K items without replacement from a softmax, their probabilities,
and the top-K off-policy correction of Chen et al. (WSDM 2019)."""

from __future__ import annotations

import torch


def sample_slates(logits: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """K distinct items per row [..., K], drawn one after another from softmax(logits) restricted
    to the items not yet drawn (Plackett-Luce), by the Gumbel top-k trick. Items with logit -inf
    (masked) are never drawn while others remain."""
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-20)))
    return (logits + gumbel).topk(k, dim=-1).indices


def slate_log_probs(logits: torch.Tensor, slates: torch.Tensor) -> torch.Tensor:
    """log P(slate[j] | state, slate[:j]) for each position j [..., K]; their sum is the slate's log
    probability under `sample_slates`. Each term renormalises the softmax over the items not yet drawn."""
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, slates)
    probs = log_probs.exp()
    drawn_before = probs.cumsum(-1) - probs
    return log_probs - torch.log1p(-drawn_before.clamp(max=1 - 1e-6))


def clicked_log_probs(log_probs: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
    """log pi(clicked item) [...] from log-softmaxes [..., N + 1]; 0 where nothing was clicked (item 0)."""
    picked = log_probs.gather(-1, clicked.unsqueeze(-1)).squeeze(-1)
    return torch.where(clicked != 0, picked, 0.0)


def topk_correction(pi: torch.Tensor, k: int) -> torch.Tensor:
    """lambda_K = K (1 - pi)^(K - 1): the derivative of alpha = 1 - (1 - pi)^K, the chance that an item
    of softmax probability pi appears in a slate of K independent draws. Multiplying the REINFORCE
    term of a clicked item by it optimises the slate's reward instead of the single item's: it pushes
    up items still unlikely to be shown (small pi) and stops pushing items already sure to be (pi -> 1)."""
    return k * (1 - pi).pow(k - 1)


def masked_entropy(log_probs: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """Entropy of each softmax [...] whose blocked items have probability 0 (log -inf). The -inf
    entries are replaced before any product: 0 * -inf would make the gradient NaN even where masked."""
    log_probs = log_probs.masked_fill(blocked, 0.0)
    return -(log_probs.exp() * log_probs).masked_fill(blocked, 0.0).sum(-1)


def masked_kl(log_probs: torch.Tensor, reference_log_probs: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """KL(p || reference) of each pair of softmaxes [...] over the items not blocked in either
    (-inf entries replaced first, as in masked_entropy)."""
    log_probs, reference_log_probs = log_probs.masked_fill(blocked, 0.0), reference_log_probs.masked_fill(blocked, 0.0)
    return (log_probs.exp() * (log_probs - reference_log_probs)).masked_fill(blocked, 0.0).sum(-1)

"""Slates as actions: sampling K items without replacement from a softmax, their probabilities,
the top-K off-policy correction of Chen et al. (WSDM 2019), and the KL anchor and entropy of a
catalogue-sized softmax computed on a few candidates.

Everything here reads catalogue-sized logits [..., N + 1] at most once or twice: a policy update
touches millions of them per minibatch, so log-probabilities are gathered (logit - logsumexp)
instead of materialising log-softmaxes."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from lightning_rec.softmax import FLOOR, log_probs_at, logsumexp


def sample_slates(
    logits: torch.Tensor, k: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """K distinct items per row [..., K], drawn one after another from softmax(logits) restricted
    to the items not yet drawn (Plackett-Luce), and their log-probabilities under softmax(logits)
    [..., K] (`log_probs_at`'s numbers, from the same pass over the catalogue). Items with logit -inf
    (masked) are never drawn; a row with fewer than K others gets empty positions (item 0) after them.

    The slate is the first K distinct items of a stream of independent draws from the softmax,
    which has exactly that distribution: a draw with replacement is one binary search in the
    cumulative probabilities (torch.multinomial), where the Gumbel top-k trick needs two logarithms
    of a random number for every item of the catalogue. Each round draws 2K per unfinished row,
    keeps the new items in order of first appearance, and removes them from the softmax. The
    log-probabilities reuse the sampling pass's normaliser (no second pass over the catalogue), and
    a round that draws for every row reads the probabilities in place instead of copying them.
    """
    shape = logits.shape
    logits = logits.reshape(-1, shape[-1])
    top = logits.amax(-1, keepdim=True).clamp(min=torch.finfo(logits.dtype).min)  # as softmax.logsumexp
    probs = F.threshold(logits - top, FLOOR, float("-inf")).exp_()
    log_normaliser = probs.sum(-1, keepdim=True).log() + top
    slates = torch.zeros(len(probs), k, dtype=torch.long, device=logits.device)
    filled = torch.zeros(len(probs), dtype=torch.long, device=logits.device)
    earlier = torch.ones(2 * k, 2 * k, dtype=torch.bool, device=logits.device).tril(-1)
    while True:
        rows = torch.nonzero((filled < k) & (probs.sum(-1) > 0)).squeeze(1)
        if not len(rows):
            break
        draws = torch.multinomial(probs if len(rows) == len(probs) else probs[rows], 2 * k, True, generator=generator)
        new = ~((draws.unsqueeze(2) == draws.unsqueeze(1)) & earlier).any(2)
        position = filled[rows].unsqueeze(1) + new.cumsum(1) - 1
        keep = new & (position < k)
        row_of = rows.unsqueeze(1).expand_as(draws)[keep]
        slates[row_of, position[keep]] = draws[keep]
        probs[row_of, draws[keep]] = 0.0
        filled[rows] += keep.sum(1)
    log_probs = logits.gather(-1, slates) - log_normaliser
    return slates.reshape(*shape[:-1], k), log_probs.reshape(*shape[:-1], k)


def slate_log_probs(item_log_probs: torch.Tensor) -> torch.Tensor:
    """log P(slate[j] | state, slate[:j]) for each position j [..., K], from the softmax
    log-probabilities of the slate's items in draw order; their sum is the slate's log probability
    under `sample_slates`. Each term renormalises the softmax over the items not yet drawn."""
    probs = item_log_probs.exp()
    drawn_before = probs.cumsum(-1) - probs
    return item_log_probs - torch.log1p(-drawn_before.clamp(max=1 - 1e-6))


def clicked_log_probs(logits: torch.Tensor, clicked: torch.Tensor) -> torch.Tensor:
    """log pi(clicked item) [...] under softmax(logits [..., N + 1]); 0 where nothing was clicked (item 0)."""
    picked = log_probs_at(logits, clicked.unsqueeze(-1)).squeeze(-1)
    return torch.where(clicked != 0, picked, 0.0)


def topk_correction(pi: torch.Tensor, k: int) -> torch.Tensor:
    """lambda_K = K (1 - pi)^(K - 1): the derivative of alpha = 1 - (1 - pi)^K, the chance that an item
    of softmax probability pi appears in a slate of K independent draws. Multiplying the REINFORCE
    term of a clicked item by it optimises the slate's reward instead of the single item's: it pushes
    up items still unlikely to be shown (small pi) and stops pushing items already sure to be (pi -> 1)."""
    return k * (1 - pi).pow(k - 1)


@dataclasses.dataclass
class Anchor:
    """A reference softmax reduced to its `C` most likely items and one outcome for all the others.

    KL(policy || reference) and the policy's entropy are computed on this partition (C + 1
    outcomes) instead of the whole catalogue: by the data-processing inequality the coarse KL is a
    lower bound of the full one, equal when the two softmaxes agree on how they share the rest; it
    still charges every bit of probability the policy moves between the reference's top items and
    the long tail, which is what a ranking's top-K is made of. It costs [..., C] instead of [..., N + 1]
    per update pass."""

    items: torch.Tensor  # LongTensor[..., C]: the reference's most likely items (masked ones last)
    log_probs: torch.Tensor  # FloatTensor[..., C]: their reference log-probabilities (-inf if masked)
    rest: torch.Tensor  # FloatTensor[...]: the reference's probability of every other item

    @classmethod
    @torch.no_grad()
    def of(cls, logits: torch.Tensor, candidates: int) -> Anchor:
        """The anchor of softmax(logits [..., N + 1]), masked items at -inf."""
        top, items = logits.topk(min(candidates, logits.shape[-1]), dim=-1)
        log_probs = top - logsumexp(logits)
        return cls(items, log_probs, (1 - log_probs.exp().sum(-1)).clamp(min=0))

    @classmethod
    def cat(cls, anchors: list[Anchor]) -> Anchor:
        """Anchors of consecutive row blocks joined along the first dimension."""
        return cls(*(torch.cat([getattr(a, f.name) for a in anchors]) for f in dataclasses.fields(cls)))

    def __getitem__(self, rows) -> Anchor:
        return Anchor(self.items[rows], self.log_probs[rows], self.rest[rows])

    def kl_and_entropy(self, policy_log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL(policy || reference), policy entropy) [...] on the partition, from the policy's
        log-probabilities of `items` [..., C]. Masked candidates (-inf in both: the policy masks the
        same items) are replaced before any product, so gradients stay finite."""
        live = torch.isfinite(self.log_probs)
        log_p = policy_log_probs.masked_fill(~live, 0.0)
        log_q = self.log_probs.masked_fill(~live, 0.0)
        p = log_p.exp() * live
        p_rest = (1 - p.sum(-1)).clamp(min=1e-12)
        q_rest = self.rest.clamp(min=1e-12)
        kl = (p * (log_p - log_q)).sum(-1) + p_rest * (p_rest.log() - q_rest.log())
        entropy = -(p * log_p).sum(-1) - p_rest * p_rest.log()
        return kl, entropy

"""PPO for slate policies: clipped surrogate, value head with GAE, entropy bonus, and a KL penalty
that keeps the policy near the frozen pretrained one (so next-item accuracy is not thrown away)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Literal

import torch

from lightning_rec.rl.advantages import generalized_advantages
from lightning_rec.rl.algorithm import Gradient, PolicyAlgorithm, PolicyContext
from lightning_rec.rl.slates import Anchor, slate_log_probs, topk_correction
from lightning_rec.rl.value_heads import ValueHead
from lightning_rec.softmax import log_probs_at

PER_ACTION = ("policy_loss", "clipped_share")  # loss terms averaged over actions; the rest over live steps


class PPO(PolicyAlgorithm):
    """Proximal policy optimisation on episodes sampled in the training environment.

    The action of a step is a slate drawn without replacement. With `credit="slate"` each of its K
    draws is a sub-action with its own probability ratio (its Plackett-Luce term under the new and
    the sampling policy), clipped to [1 - clip, 1 + clip] and weighted by the step's GAE advantage.
    With `credit="click"` the action is the clicked item, as in Reinforce (Chen et al.): its ratio
    pi(item) / pi_old(item) under the softmax, times the advantage and the top-K correction
    lambda_K(pi_old); steps without a click add no policy term (their rewards still shape the
    advantages of the steps before). A user clicks one item per slate and the reward comes with it,
    so this credits the item that earned it instead of spreading it over K draws. The loss adds
    value_coef * the value error, subtracts entropy_coef * the softmax entropy and adds kl_coef *
    KL(policy || pretrained policy), both on the pretrained policy's `kl_candidates` most likely
    items of each state plus one outcome for the rest of the unmasked catalogue (slates.Anchor: a
    lower bound of the full KL that keeps each pass over the catalogue to one logsumexp). `epochs`
    passes over the episodes in minibatches of `minibatch_users` users, one optimiser step each;
    a minibatch whose [users, steps, N + 1] logits would exceed `max_logits` floats (200 MB by
    default) is processed in chunks of users whose gradients add up to the same step, so large
    catalogues need no hand-tuned minibatch size.
    """

    def __init__(
        self,
        clip: float = 0.2,
        epochs: int = 2,
        minibatch_users: int = 256,
        gamma: float = 0.9,
        gae_lambda: float = 0.95,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        kl_coef: float = 0.1,
        normalize_advantages: bool = True,
        credit: Literal["slate", "click"] = "slate",
        kl_candidates: int = 100,
        max_logits: int = 50_000_000,
    ):
        super().__init__()
        if credit not in ("slate", "click"):
            raise ValueError(f"PPO.credit must be 'slate' or 'click', got {credit!r}")
        self.credit = credit
        self.clip, self.epochs, self.minibatch_users = clip, epochs, minibatch_users
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.value_coef, self.entropy_coef, self.kl_coef = value_coef, entropy_coef, kl_coef
        self.normalize_advantages = normalize_advantages
        if kl_candidates < 1:
            raise ValueError(f"PPO.kl_candidates must be >= 1, got {kl_candidates}")
        self.kl_candidates = kl_candidates
        self.max_logits = max_logits

    def build(self, context: PolicyContext) -> None:
        self.value = ValueHead(context.state_dim)
        self.reference = copy.deepcopy(context.recommender).eval().requires_grad_(False)

    def update(self, context: PolicyContext, batch: dict) -> Iterator[Gradient]:
        episodes, logs = context.play(batch)
        valid = episodes.valid
        steps = valid.shape[1]
        progress = context.progress(steps)
        chunk_users = max(1, self.max_logits // (steps * (context.recommender.num_items + 1)))
        with torch.no_grad():  # fixed during the update: values, the sampling probabilities, anchors
            values = self.value(episodes.states, progress.expand(len(valid), -1))
            old_click = episodes.clicked_log_probs
            old_slate = slate_log_probs(episodes.log_probs)
            anchor = Anchor.cat(
                [
                    Anchor.of(context.episode_logits(episodes, rows, self.reference)[1], self.kl_candidates)
                    for rows in context.minibatches(len(valid), min(self.minibatch_users, chunk_users), shuffle=False)
                ]
            )
        advantages, returns = generalized_advantages(episodes.rewards, values, valid, self.gamma, self.gae_lambda)
        if self.normalize_advantages:
            mean, std = advantages[valid].mean(), advantages[valid].std().clamp(min=1e-6)
            advantages = (advantages - mean) / std * valid
        updates = self.epochs * math.ceil(len(valid) / self.minibatch_users)  # the logs average over them
        for _ in range(self.epochs):
            for rows in context.minibatches(len(valid), self.minibatch_users, shuffle=True):
                live_steps, actions = (
                    valid[rows].sum().clamp(min=1),
                    self._actions(episodes, rows)[1].sum().clamp(min=1),
                )
                chunks = rows.split(chunk_users)
                for index, chunk in enumerate(chunks):  # one optimiser step per minibatch, in chunks that fit
                    terms = self._terms(
                        context, episodes, chunk, advantages, returns, old_click, old_slate, anchor[chunk], progress
                    )
                    terms = {
                        key: value / (actions if key in PER_ACTION else live_steps) for key, value in terms.items()
                    }
                    loss = (
                        terms["policy_loss"]
                        + self.value_coef * terms["value_loss"]
                        - self.entropy_coef * terms["entropy"]
                        + self.kl_coef * terms["kl"]
                    )
                    logs.update({key: float(number.detach()) / updates for key, number in terms.items()})
                    yield Gradient(loss, logs, step=index == len(chunks) - 1)
                    logs = {}

    def _actions(self, episodes, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(actions [b, T, A], acted [b, T, A]): the slates' draws or the clicked item of users
        `rows`, and which of them count (a live step's real draw, or a click)."""
        # every drawn item is an action under slate credit (empty positions, item 0, are not)
        actions = episodes.slates[rows] if self.credit == "slate" else episodes.clicked[rows].unsqueeze(-1)
        return actions, episodes.valid[rows].unsqueeze(-1) & (actions != 0)

    def _terms(
        self,
        context: PolicyContext,
        episodes,
        rows,
        advantages,
        returns,
        old_click,
        old_slate,
        anchor: Anchor,
        progress,
    ) -> dict[str, torch.Tensor]:
        """Sums over users `rows` of the loss terms: policy_loss and clipped_share over actions,
        value_loss, kl and entropy over live steps (the caller divides by the minibatch's counts)."""
        hidden, logits = context.episode_logits(episodes, rows)
        mask = episodes.valid[rows]
        actions, acted = self._actions(episodes, rows)
        log_probs = log_probs_at(logits, torch.cat([actions, anchor.items], -1))  # one catalogue pass for both
        action_log_probs, candidate_log_probs = log_probs.split([actions.shape[-1], anchor.items.shape[-1]], -1)
        if self.credit == "slate":
            correction = 1.0
            log_ratio = slate_log_probs(action_log_probs) - old_slate[rows]
        else:
            correction = topk_correction(old_click[rows].exp(), context.slate_size).unsqueeze(-1)
            log_ratio = action_log_probs - old_click[rows].unsqueeze(-1)
        ratio = torch.where(acted, log_ratio, 0.0).exp()  # no action: ratio 1, no inf * 0
        advantage = advantages[rows].unsqueeze(-1)
        surrogate = torch.min(ratio * advantage, ratio.clamp(1 - self.clip, 1 + self.clip) * advantage) * correction
        kl, entropy = anchor.kl_and_entropy(candidate_log_probs)
        value = self.value(hidden, progress.expand(len(rows), -1))
        return {
            "policy_loss": -(surrogate * acted).sum(),
            "clipped_share": (((ratio - 1).abs() > self.clip) * acted).sum(),
            "value_loss": ((value - returns[rows]).pow(2) * mask).sum(),
            "kl": (kl * mask).sum(),
            "entropy": (entropy * mask).sum(),
        }

"""REINFORCE for slates (Chen et al., "Top-K Off-Policy Correction for a REINFORCE Recommender
System", WSDM 2019): on-policy in the simulator, or off-policy from the logs alone."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from lightning_rec.rl.advantages import discounted_returns
from lightning_rec.rl.algorithm import Gradient, PolicyAlgorithm, PolicyContext
from lightning_rec.rl.slates import clicked_log_probs, topk_correction
from lightning_rec.rl.value_heads import LoggingPolicyHead, ValueHead
from lightning_rec.softmax import log_probs_at


def reinforce_loss(
    log_pi: torch.Tensor, advantages: torch.Tensor, acted: torch.Tensor, count, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """-sum over the actions that happened (`acted`) of weight x advantage x log pi(action), / `count`:
    the surrogate whose gradient is the policy gradient (advantages and weights are constants).
    log pi comes from `log_probs_at` on the catalogue-sized logits, never from a full log-softmax."""
    terms = advantages * log_pi if weights is None else weights * advantages * log_pi
    return -torch.where(acted, terms, 0.0).sum() / count


class Reinforce(PolicyAlgorithm):
    """On-policy REINFORCE with a learned baseline and the top-K slate correction.

    Slates are sampled from the policy in the training environment; the clicked item of each step
    is the action whose log-probability is pushed by lambda_K(pi) * (G_t - V(s_t)), where G_t is
    the discounted return from that step (later clicks and a longer session count). Steps without
    a click teach the policy only through the returns of the clicks before them.
    """

    def __init__(
        self, gamma: float = 0.9, value_coef: float = 0.5, topk_correction: bool = True, minibatch_users: int = 256
    ):
        super().__init__()
        self.gamma, self.value_coef, self.correct, self.minibatch_users = (
            gamma,
            value_coef,
            topk_correction,
            minibatch_users,
        )

    def build(self, context: PolicyContext) -> None:
        self.value = ValueHead(context.state_dim)

    def update(self, context: PolicyContext, batch: dict) -> Iterator[Gradient]:
        episodes, logs = context.play(batch)
        returns = discounted_returns(episodes.rewards, episodes.valid, self.gamma)
        clicked = episodes.clicked
        num_clicks, num_steps = int((clicked != 0).sum()), int(episodes.valid.sum())
        k = context.slate_size
        minibatches = context.minibatches(len(clicked), self.minibatch_users, shuffle=False)
        for index, rows in enumerate(minibatches):
            hidden, logits = context.episode_logits(episodes, rows)
            value = self.value(hidden, context.progress(hidden.shape[1]).expand(len(rows), -1))
            log_pi = clicked_log_probs(logits, clicked[rows])
            weight = topk_correction(log_pi.detach().exp(), k) if self.correct else None
            policy_loss = reinforce_loss(
                log_pi, returns[rows] - value.detach(), clicked[rows] != 0, max(num_clicks, 1), weight
            )
            valid = episodes.valid[rows]
            value_loss = (value - returns[rows]).pow(2)[valid].sum() / max(num_steps, 1)
            logs.update(policy_loss=float(policy_loss), value_loss=float(value_loss))
            yield Gradient(policy_loss + self.value_coef * value_loss, logs, step=index == len(minibatches) - 1)
            logs = {}


class OffPolicyReinforce(PolicyAlgorithm):
    """REINFORCE from logged windows only: each logged next item is an action, its reward the
    rating-based satisfaction of the logged rating (1 without ratings), G_t the discounted return
    of the rest of the window. The logging policy beta is learned alongside (LoggingPolicyHead); each
    term is weighted by the importance weight pi / beta, capped at `weight_cap`, times lambda_K(pi).
    """

    def __init__(
        self, gamma: float = 0.9, weight_cap: float = 10.0, value_coef: float = 0.5, topk_correction: bool = True
    ):
        super().__init__()
        self.gamma, self.weight_cap, self.value_coef, self.correct = gamma, weight_cap, value_coef, topk_correction

    def build(self, context: PolicyContext) -> None:
        self.value = ValueHead(context.state_dim)
        self.behaviour = LoggingPolicyHead(context.state_dim)

    def update(self, context: PolicyContext, batch: dict) -> Iterator[Gradient]:
        target = batch["target"]
        valid = target != 0
        returns = discounted_returns(context.logged_rewards(batch), valid, self.gamma)
        recommender = context.recommender
        items = recommender.item_encoder()
        hidden_all = recommender.encode(batch["input"], items)
        hidden, action = hidden_all[valid], target[valid]
        length = target.shape[1]
        progress = (torch.arange(length, device=target.device) / length).expand_as(target)[valid]
        logits = hidden @ items.T
        logits[:, 0] = float("-inf")
        log_pi = log_probs_at(logits, action.unsqueeze(1)).squeeze(1)
        behaviour_logits = self.behaviour(hidden, items)
        log_beta = log_probs_at(behaviour_logits, action.unsqueeze(1)).squeeze(1)
        importance = (log_pi - log_beta).detach().exp().clamp(max=self.weight_cap)
        weight = importance * (topk_correction(log_pi.detach().exp(), context.slate_size) if self.correct else 1.0)
        value = self.value(hidden, progress)
        advantage = returns[valid] - value.detach()
        policy_loss = reinforce_loss(log_pi, advantage, torch.ones_like(valid[valid]), len(log_pi), weight)
        value_loss = F.mse_loss(value, returns[valid])
        behaviour_loss = F.cross_entropy(behaviour_logits, action)
        logs = {
            "policy_loss": float(policy_loss),
            "value_loss": float(value_loss),
            "behaviour_loss": float(behaviour_loss),
            "importance_weight": float(importance.mean()),
            "capped_share": float((importance >= self.weight_cap).float().mean()),
        }
        yield Gradient(policy_loss + self.value_coef * value_loss + behaviour_loss, logs)

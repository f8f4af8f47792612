"""What a policy-gradient algorithm is to the PolicyFineTuner: a component chosen in YAML."""

from __future__ import annotations

from torch import nn


class PolicyAlgorithm(nn.Module):
    """One policy update per training batch.

    `build(tuner)` creates what the algorithm adds to the policy (value head, behaviour head,
    frozen reference), sized from the tuner's recommender; `update(tuner, batch)` gathers its
    experience (episodes in the training environment, or the batch's logged windows), takes its
    optimiser steps through `tuner.add_gradients` / `tuner.apply_gradients`, and returns numbers to log. Parameters
    it owns are trained with the tuner's `head_lr`.
    """

    def build(self, tuner) -> None:
        raise NotImplementedError

    def update(self, tuner, batch: dict) -> dict[str, float]:
        raise NotImplementedError

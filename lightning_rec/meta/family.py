"""An environment family: simulated populations whose session dynamics differ, for meta-learning
across environments (a policy that adapts in a few episodes to a population it has not met)."""

from __future__ import annotations

import torch

from lightning_rec.rl.behaviour import UserBehaviour


class EnvironmentFamily:
    """Named populations, each a UserBehaviour (quit rule, temper, patience, reward...), in two
    lists: `train`, the environments meta-training plays, and `held_out`, the ones only the
    meta-test plays (values between and outside the training ones). Every environment is played by
    the same learned response model, "train" and "eval" simulators kept apart as everywhere: only
    the session dynamics differ. A task's environment is its index in `behaviours` (train ones
    first); the family's environments must agree on whether repeats are masked (one rollout's
    bookkeeping), and whatever they differ in is the hidden parameter adaptation must find."""

    def __init__(self, train: dict[str, UserBehaviour], held_out: dict[str, UserBehaviour]):
        if not train or not held_out:
            raise ValueError("an EnvironmentFamily needs at least one train and one held_out environment")
        shared = set(train) & set(held_out)
        if shared:
            raise ValueError(f"environment names must differ between train and held_out, both have {sorted(shared)}")
        self.names = [*train, *held_out]
        self.behaviours = [*train.values(), *held_out.values()]
        self.num_train = len(train)
        if len({behaviour.masks_repeats for behaviour in self.behaviours}) > 1:
            raise ValueError(
                "an EnvironmentFamily's environments must all mask repeats or all allow them (FreeB with other modes)"
            )

    @property
    def held_out(self) -> range:
        """The held-out environments' indices."""
        return range(self.num_train, len(self.behaviours))

    def draw_train(self, tasks: int, generator: torch.Generator) -> torch.Tensor:
        """A training environment for each of `tasks` tasks [T], uniformly."""
        return torch.randint(self.num_train, (tasks,), generator=generator)

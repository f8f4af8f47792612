"""Where the RL stages' simulated users come from, as a YAML component (`environment:`): a learned
simulator's checkpoint (the default) or a ground-truth reward matrix. Both give a UserSimulator, so
the rollout, the behaviour (modes, quit rule, temper) and every table are the same."""

from __future__ import annotations

import abc
from typing import Literal

import torch

from lightning_rec.data.datamodule import SequenceDataModule
from lightning_rec.data.sources.base import DataSource
from lightning_rec.rl.behaviour import UserBehaviour
from lightning_rec.rl.reward_matrix import MatrixResponse, reward_matrix
from lightning_rec.rl.simulator import UserSimulator
from lightning_rec.rl.simulator_artifact import load_simulators


class Environment(abc.ABC):
    """Builds the UserSimulator a stage plays, over the stage's data module."""

    @abc.abstractmethod
    def simulator(
        self,
        role: Literal["train", "eval"],
        datamodule: SequenceDataModule,
        behaviour: UserBehaviour,
        seed: int,
        device: torch.device | str,
    ) -> UserSimulator:
        """The simulator of `role` (the fine-tuning stage trains in "train", evaluation judges in "eval")."""


class LearnedSimulator(Environment):
    """The SimulatorTraining checkpoint's response model of each role (rl/simulator_artifact.py)."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint

    def simulator(self, role, datamodule, behaviour, seed, device) -> UserSimulator:
        data, train_end, categories = datamodule.data, datamodule.split.train_end, datamodule.catalog.categories
        return load_simulators(self.checkpoint, data, train_end, behaviour, seed, device, categories)[role]


class GroundTruth(Environment):
    """A reward matrix read from `source` (a DataSource whose events carry the value as their rating:
    KuaiRec's small_matrix with watch_ratio, Coat's test part), matched to the data module's users and
    items by their original ids: its users (those of the data; episodes start after their training
    history, as in a learned simulator) are the simulated users, its items the only ones shown, and
    each shown item's value its rating and, through `click_threshold` and `click_scale`, its click
    utility (MatrixResponse). `clip`, `missing` ("mf": complete the unobserved pairs by matrix
    factorisation, for randomly exposed ratings) and the MF options: `reward_matrix`. Both roles get
    the same users, so as a stage's only environment it would train (and tune baselines) on the
    users it judges: pair it with a learned simulator in `Roles`.
    """

    def __init__(
        self,
        source: DataSource,
        clip: tuple[float, float] | None = None,
        missing: float | Literal["mf"] = 0.0,
        click_threshold: float = 0.0,
        click_scale: float = 1.0,
        mf_dim: int = 16,
        mf_l2: float = 0.1,
        history_len: int = 50,
    ):
        self.source, self.clip, self.missing = source, clip, missing
        self.click_threshold, self.click_scale = click_threshold, click_scale
        self.mf_dim, self.mf_l2, self.history_len = mf_dim, mf_l2, history_len
        self._built: tuple | None = None  # (data, seed, name, matrix): built once per data, not per mode

    def __getstate__(self) -> dict:
        """Pickled (into a stage's saved hyperparameters) without the built matrix."""
        return {**self.__dict__, "_built": None}

    def simulator(self, role, datamodule, behaviour, seed, device) -> UserSimulator:
        data, train_end = datamodule.data, datamodule.split.train_end
        if self._built is None or self._built[0] is not data or self._built[1] != seed:
            raw = self.source.load()
            matrix = reward_matrix(
                raw.interactions, data, raw.name, self.clip, self.missing, self.mf_dim, self.mf_l2, seed
            )
            self._built = (data, seed, raw.name, matrix)
        _, _, name, (values, rows, available) = self._built
        users = torch.nonzero((rows >= 0) & (train_end >= 1)).squeeze(1)
        if len(users) == 0:
            raise ValueError(f"{name}: no user of the reward matrix has a logged event in the data to start from")
        shown = values[:, available]
        low, high = self.clip if self.clip is not None else (float(shown.min()), float(shown.max()))
        response = MatrixResponse(values, rows, (low, high), self.click_threshold, self.click_scale).to(device)
        categories = datamodule.catalog.categories
        return UserSimulator(response, behaviour, data, train_end, users, self.history_len, seed, categories, available)


class Roles(Environment):
    """One environment per role: e.g. the learned simulator as "train" (where policies are trained
    and baselines tuned) and a GroundTruth as "eval" (where they are judged), so that nothing is
    tuned on the ground truth."""

    def __init__(self, train: Environment, eval: Environment):
        self.roles = {"train": train, "eval": eval}

    def simulator(self, role, datamodule, behaviour, seed, device) -> UserSimulator:
        return self.roles[role].simulator(role, datamodule, behaviour, seed, device)


def stage_environment(environment: Environment | None, simulator: str | None) -> Environment:
    """A stage's environment: `environment`, or the learned simulator checkpoint `simulator`."""
    if (environment is None) == (simulator is None):
        raise ValueError("set exactly one of `simulator` (a simulation checkpoint) and `environment`")
    return environment if environment is not None else LearnedSimulator(simulator)

"""Reinforcement learning against learned user simulators: environments, rollouts, advantages."""

from lightning_rec.rl.behaviour import UserBehaviour
from lightning_rec.rl.data import LoggedDataModule
from lightning_rec.rl.response_model import ResponseModel
from lightning_rec.rl.simulator import SimulatorState, UserSimulator

__all__ = ["LoggedDataModule", "ResponseModel", "SimulatorState", "UserBehaviour", "UserSimulator"]

"""Reinforcement learning against learned user simulators: environments, agents, rollouts, advantages
and the policy-gradient algorithms the PolicyFineTuner runs (docs/rl.md)."""

from lightning_rec.rl.agents import PopularityAgent, RandomAgent, RecommenderAgent, SlateAgent
from lightning_rec.rl.algorithm import PolicyAlgorithm
from lightning_rec.rl.behaviour import QuitRule, Temper, UserBehaviour
from lightning_rec.rl.ppo import PPO
from lightning_rec.rl.reinforce import OffPolicyReinforce, Reinforce
from lightning_rec.rl.response_model import ResponseModel
from lightning_rec.rl.rollout import Episodes, rollout
from lightning_rec.rl.session_head import CategoryRecency
from lightning_rec.rl.simulator import SimulatorState, UserSimulator

__all__ = [
    "PPO",
    "CategoryRecency",
    "Episodes",
    "OffPolicyReinforce",
    "PolicyAlgorithm",
    "PopularityAgent",
    "QuitRule",
    "RandomAgent",
    "RecommenderAgent",
    "Reinforce",
    "ResponseModel",
    "SimulatorState",
    "SlateAgent",
    "Temper",
    "UserBehaviour",
    "UserSimulator",
    "rollout",
]

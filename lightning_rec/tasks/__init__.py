"""The LightningModules of each stage (and the objectives the recommender trains with)."""

from lightning_rec.tasks.baselines import PopularityRecommender, RandomRecommender
from lightning_rec.tasks.cloze import MaskedItemObjective
from lightning_rec.tasks.meta import MetaPolicyOptimizer
from lightning_rec.tasks.objectives import FullSoftmax, Objective, SampledSoftmax
from lightning_rec.tasks.policy import PolicyFineTuner
from lightning_rec.tasks.policy_evaluation import PolicyEvaluation
from lightning_rec.tasks.recommender import RankingRecommender, SequentialRecommender
from lightning_rec.tasks.simulator_training import SimulatorTraining
from lightning_rec.tasks.text_encoding import ItemTextEncoder

__all__ = [
    "FullSoftmax",
    "ItemTextEncoder",
    "MaskedItemObjective",
    "MetaPolicyOptimizer",
    "Objective",
    "PolicyEvaluation",
    "PolicyFineTuner",
    "PopularityRecommender",
    "RandomRecommender",
    "RankingRecommender",
    "SampledSoftmax",
    "SequentialRecommender",
    "SimulatorTraining",
]

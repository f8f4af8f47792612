"""One LightningModule per pipeline stage: encode item text, pretrain, simulate users, fine-tune the
policy with RL, evaluate policies, meta-train (docs/architecture.md)."""

from lightning_rec.stages.baselines import PopularityRecommender, RandomRecommender
from lightning_rec.stages.fine_tuning import PolicyFineTuner
from lightning_rec.stages.meta_training import MetaPolicyOptimizer
from lightning_rec.stages.policy_evaluation import PolicyEvaluation
from lightning_rec.stages.pretraining import RankingRecommender, SequentialRecommender
from lightning_rec.stages.simulation import SimulatorTraining
from lightning_rec.stages.text_encoding import ItemTextEncoder

__all__ = [
    "ItemTextEncoder",
    "MetaPolicyOptimizer",
    "PolicyEvaluation",
    "PolicyFineTuner",
    "PopularityRecommender",
    "RandomRecommender",
    "RankingRecommender",
    "SequentialRecommender",
    "SimulatorTraining",
]

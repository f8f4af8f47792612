"""The LightningModules of each stage."""

from lightning_rec.tasks.objectives import FullSoftmax, Objective, SampledSoftmax
from lightning_rec.tasks.recommender import SequentialRecommender

__all__ = ["FullSoftmax", "Objective", "SampledSoftmax", "SequentialRecommender"]

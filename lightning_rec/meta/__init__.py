"""Meta-learning across users: tasks (cold-start users, user segments), inner loops, outer loops."""

from lightning_rec.meta.adaptive_heads import Adapter, StateHead, UserHead
from lightning_rec.meta.adaptive_policy import AdaptivePolicy
from lightning_rec.meta.algorithms import FOMAML, MetaAlgorithm, Reptile
from lightning_rec.meta.context import ContextHead, ContextLoop
from lightning_rec.meta.datamodule import MetaDataModule
from lightning_rec.meta.inner import InnerLoop
from lightning_rec.meta.kmeans import kmeans
from lightning_rec.meta.task_batch import TaskBatch, cold_start_tasks, segment_tasks

__all__ = [
    "AdaptivePolicy",
    "Adapter",
    "ContextHead",
    "ContextLoop",
    "FOMAML",
    "InnerLoop",
    "MetaAlgorithm",
    "MetaDataModule",
    "Reptile",
    "StateHead",
    "TaskBatch",
    "UserHead",
    "cold_start_tasks",
    "kmeans",
    "segment_tasks",
]

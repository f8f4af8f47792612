"""The losses a SequentialRecommender pretrains with: next-item softmax (full or sampled) and cloze."""

from lightning_rec.objectives.cloze import MaskedItemObjective
from lightning_rec.objectives.next_item import FullSoftmax, Objective, SampledSoftmax

__all__ = ["FullSoftmax", "MaskedItemObjective", "Objective", "SampledSoftmax"]

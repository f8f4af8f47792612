"""Data sources: where interactions and item metadata come from, chosen in YAML by class_path.

Every source returns `RawData` with the dataset's original ids; preprocessing takes it from there.
"""

from lightning_rec.data.sources.base import DataSource, RawData
from lightning_rec.data.sources.bundled import MovieLensLatestSmall
from lightning_rec.data.sources.coat import Coat
from lightning_rec.data.sources.interaction_file import InteractionFile
from lightning_rec.data.sources.kuairand import KuaiRand
from lightning_rec.data.sources.kuairec import KuaiRec
from lightning_rec.data.sources.movielens import MovieLens
from lightning_rec.data.sources.recbole import RecBoleAtomic
from lightning_rec.data.sources.user_per_line import UserPerLineFile

__all__ = [
    "Coat",
    "DataSource",
    "InteractionFile",
    "KuaiRand",
    "KuaiRec",
    "MovieLens",
    "MovieLensLatestSmall",
    "RawData",
    "RecBoleAtomic",
    "UserPerLineFile",
]

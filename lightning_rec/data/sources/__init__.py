"""Data sources: where interactions and item metadata come from, chosen in YAML by class_path.

Every source returns `RawData` with the dataset's original ids; preprocessing takes it from there.
"""

from lightning_rec.data.sources.base import DataSource, RawData
from lightning_rec.data.sources.bundled import MovieLensLatestSmall

__all__ = ["DataSource", "MovieLensLatestSmall", "RawData"]

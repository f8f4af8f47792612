"""Data sources: every loader on tiny files, each bad-input error, and fingerprint stability."""

from __future__ import annotations

import pandas as pd
import pytest

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources import MovieLensLatestSmall


def test_bundled_movielens_loads_with_verified_contents():
    raw = MovieLensLatestSmall().load()
    inter = raw.interactions
    assert raw.name == "ml-latest-small"
    assert len(inter) == 100836 and inter["user"].nunique() == 610
    assert inter.dtypes.to_dict() == {"user": "int64", "item": "int64", "timestamp": "int64", "rating": "float64"}
    toy = raw.items.set_index("item").loc[1]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995
    assert toy["genres"] == "Adventure, Animation, Children, Comedy, Fantasy"
    assert toy["tags"] == "pixar, fun"
    assert len(raw.items) == 9742 and (raw.items["tags"] == "").sum() > 0
    assert raw.items.set_index("item").loc[171749, "genres"] == ""

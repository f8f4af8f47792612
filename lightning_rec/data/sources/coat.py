"""Coat (Schnabel et al., ICML 2016): ratings of self-selected coats and of randomly shown ones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.columns import require_file

PARTS = ("train", "test")


class Coat(DataSource):
    """`<directory>/<part>.ascii`: a users x items matrix of ratings 1-5 (0 = not rated), one
    whitespace-separated row per user. `train` holds the ratings of coats the users chose
    themselves (biased), `test` those of 16 coats per user shown at random (missing at random).

    Users are the row numbers 0..289 and items the column numbers 0..299 (ints, the same in both
    parts). The data has no times: an event's timestamp is its item's column, so a user's
    "sequence" is in catalogue order, which only the ratings and not the order should be read for.
    With `user_item_features/item_features.ascii` and its `item_features_map.txt` beside the
    matrices, items get the text columns gender, jackettype, color and onfrontpage (e.g.
    `category: {column: jackettype}`).
    """

    def __init__(self, directory: str, part: Literal["train", "test"] = "train") -> None:
        if part not in PARTS:
            raise DataError(f"Coat: unknown part {part!r}; choose one of {', '.join(PARTS)}")
        self.directory = Path(directory).expanduser()
        self.part = part

    @property
    def path(self) -> Path:
        return self.directory / f"{self.part}.ascii"

    @property
    def feature_paths(self) -> tuple[Path, Path]:
        folder = self.directory / "user_item_features"
        return folder / "item_features.ascii", folder / "item_features_map.txt"

    def load(self) -> RawData:
        ratings = read_matrix(self.path)
        bad = (ratings < 0) | (ratings > 5) | (ratings % 1 != 0)
        if bad.any():
            line, column = np.argwhere(bad)[0]
            raise DataError(
                f"{self.path}: line {line + 1}, field {column + 1}: {ratings[line, column]:g} is not a rating 0-5"
            )
        users, items = np.nonzero(ratings)
        if len(users) == 0:
            raise DataError(f"{self.path}: no ratings (every entry is 0)")
        interactions = pd.DataFrame(
            {"user": users, "item": items, "timestamp": items, "rating": ratings[users, items].astype("float64")}
        )
        features, names = self.feature_paths
        items_table = item_features(features, names, ratings.shape[1]) if features.is_file() else None
        return RawData(interactions=interactions, items=items_table, name=f"coat-{self.part}")

    def fingerprint(self) -> str:
        features = [path for path in self.feature_paths if path.is_file()]
        return fingerprint_of(
            self, {"part": self.part, "features": len(features)}, [require_file(self.path), *features]
        )


def read_matrix(path: Path) -> np.ndarray:
    """A whitespace-separated numeric matrix, or DataError naming the line and field that is wrong."""
    require_file(path)
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = [line.split() for line in lines]
    width = len(rows[0]) if rows else 0
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise DataError(f"{path}: line {number}: {len(row)} fields, but line 1 has {width}")
    frame = pd.DataFrame(rows)
    values = frame.apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        line, column = np.argwhere(values.isna().to_numpy())[0]
        raise DataError(f"{path}: line {line + 1}, field {column + 1}: {rows[line][column]!r} is not a number")
    return values.to_numpy(dtype="float64")


def item_features(path: Path, names_path: Path, num_items: int) -> pd.DataFrame:
    """One text column per feature group of Coat's one-hot item features ("jackettype:bomber"
    in the map names group and value): the value whose column holds the item's 1."""
    flags = read_matrix(path)
    names = [line.strip() for line in require_file(names_path).read_text(encoding="utf-8").splitlines()]
    names = [name for name in names if name]
    if flags.shape != (num_items, len(names)):
        raise DataError(
            f"{path}: {flags.shape[0]} rows x {flags.shape[1]} columns, expected {num_items} items x "
            f"{len(names)} features (the lines of {names_path.name})"
        )
    groups = pd.Series([name.partition(":")[0] for name in names])
    values = np.array([name.partition(":")[2] for name in names], dtype=object)
    table = {"item": np.arange(num_items)}
    for group in dict.fromkeys(groups):
        columns = np.flatnonzero(groups == group)
        hot = flags[:, columns] == 1
        if not (hot.sum(1) == 1).all():
            line = int(np.flatnonzero(hot.sum(1) != 1)[0]) + 1
            raise DataError(f"{path}: line {line}: feature group {group!r} must hold exactly one 1")
        table[group] = values[columns][hot.argmax(1)]
    return pd.DataFrame(table)

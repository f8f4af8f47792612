"""KuaiRec (Gao et al., CIKM 2022): a short-video feed with a fully observed user x video matrix.

The published files (KuaiRec 2.0, `data/`): `big_matrix.csv` (7,176 users x 10,728 videos, the
feed's own logs) and `small_matrix.csv` (1,411 x 3,327, every video shown to every user), both
with columns user_id, video_id, play_duration, video_duration, time, date, timestamp,
watch_ratio; `item_categories.csv` (video_id, feat: a list of tag ids such as "[27, 9]").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.columns import (
    integer_id_column,
    number_column,
    read_lines_table,
    require_columns,
    require_file,
)

MATRICES = ("big_matrix", "small_matrix")
_TAGS = r"\s*(\d+\s*(,\s*\d+\s*)*)?"


class KuaiRec(DataSource):
    """`<directory>/<matrix>.csv` as events: user_id, video_id, timestamp (Unix seconds) and
    watch_ratio as the rating (the play time over the video's length; the reward of EasyRL4Rec's
    KuaiRec environment). Rows without a time (in small_matrix, the pairs collected by showing the
    missing videos afterwards) get a NaN timestamp and sort after their user's timed events. With
    `item_categories.csv` beside it, items get the text column `categories` ("27, 9", the tag ids
    in the file's order): `category: {column: categories, pick: first}`. With `max_watch_ratio`,
    larger watch ratios (a few are in the hundreds: replays of short videos) are set to it, as
    EasyRL4Rec sets them to 5.
    """

    def __init__(
        self,
        directory: str,
        matrix: Literal["big_matrix", "small_matrix"] = "big_matrix",
        max_watch_ratio: float | None = None,
    ) -> None:
        if matrix not in MATRICES:
            raise DataError(f"KuaiRec: unknown matrix {matrix!r}; choose one of {', '.join(MATRICES)}")
        if max_watch_ratio is not None and not max_watch_ratio > 0:
            raise DataError(f"KuaiRec: max_watch_ratio must be > 0, got {max_watch_ratio}")
        self.directory = Path(directory).expanduser()
        self.matrix = matrix
        self.max_watch_ratio = max_watch_ratio

    @property
    def path(self) -> Path:
        return self.directory / f"{self.matrix}.csv"

    @property
    def categories_path(self) -> Path:
        return self.directory / "item_categories.csv"

    def load(self) -> RawData:
        where = str(require_file(self.path))
        frame = read_lines_table(self.path, where, sep=",", dtype={"user_id": str, "video_id": str})
        require_columns(frame, ["user_id", "video_id", "timestamp", "watch_ratio"], where)
        interactions = pd.DataFrame(
            {
                "user": integer_id_column(frame["user_id"], where, "user_id"),
                "item": integer_id_column(frame["video_id"], where, "video_id"),
                "timestamp": number_column(frame["timestamp"], where, "timestamp", missing_ok=True),
                "rating": number_column(frame["watch_ratio"], where, "watch_ratio").clip(upper=self.max_watch_ratio),
            }
        )
        items = video_categories(self.categories_path) if self.categories_path.is_file() else None
        return RawData(interactions=interactions.reset_index(drop=True), items=items, name=f"kuairec-{self.matrix}")

    def fingerprint(self) -> str:
        has_categories = self.categories_path.is_file()
        files = [require_file(self.path)] + ([self.categories_path] if has_categories else [])
        options = {"matrix": self.matrix, "categories": has_categories, "max_watch_ratio": self.max_watch_ratio}
        return fingerprint_of(self, options, files)


def video_categories(path: Path, field: str = "feat", bracketed: bool = True) -> pd.DataFrame:
    """A video file (video_id, `field` of category ids: KuaiRec's item_categories.csv feat "[27, 9]",
    KuaiRand's video_features_basic tag "12,65") as items with a `categories` text column."""
    where = str(require_file(path))
    frame = read_lines_table(path, where, sep=",", dtype={"video_id": str, field: str})
    require_columns(frame, ["video_id", field], where)
    ids = integer_id_column(frame["video_id"], where, "video_id")
    categories = tag_list_column(frame[field], where, field, bracketed=bracketed)
    return pd.DataFrame({"item": ids, "categories": categories}).reset_index(drop=True)


def tag_list_column(values: pd.Series, where: str, field: str, bracketed: bool) -> pd.Series:
    """Lists of integer tag ids, "[27, 9]" (bracketed) or "27,9", as text "27, 9" ("" for an empty
    or missing list); DataError at the first cell that is not such a list."""
    text = values.fillna("[]" if bracketed else "").str.strip()
    pattern = rf"\[{_TAGS}\]" if bracketed else _TAGS
    bad = ~text.str.fullmatch(pattern)
    if bad.any():
        line = bad.idxmax()
        example = "[27, 9]" if bracketed else "27,9"
        raise DataError(
            f"{where}: line {line}, field {field!r}: {text.loc[line]!r} is not a list of tag ids like {example}"
        )
    if bracketed:
        text = text.str.slice(1, -1)
    return text.str.replace(r"\s*,\s*", ", ", regex=True).str.strip()

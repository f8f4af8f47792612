"""KuaiRand (Gao et al., CIKM 2022): Kuaishou feed logs with randomly exposed videos inserted.

The published files (`data/` of KuaiRand-Pure, -1K or -27K; the suffix names the version):
`log_standard_4_08_to_4_21_<v>.csv` and `log_standard_4_22_to_5_08_<v>.csv` (the feed's own
recommendations), `log_random_4_22_to_5_08_<v>.csv` (videos shown at random), with columns
user_id, video_id, date, hourmin, time_ms, is_click, is_like, is_follow, is_comment, is_forward,
is_hate, long_view, play_time_ms, duration_ms, profile_stay_time, comment_stay_time,
is_profile_enter, is_rand, tab; and `video_features_basic_<v>.csv` (video_id, author_id,
video_type, upload_dt, upload_type, visible_status, video_duration, server_width, server_height,
music_id, music_type, tag: "12,65").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
from lightning_rec.data.sources.kuairec import video_categories

STANDARD_LOGS = ["log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv"]
WATCH_RATIO = "watch_ratio"


class KuaiRand(DataSource):
    """The events of `logs` (file names under `directory`, read in turn; default: KuaiRand-Pure's
    two standard logs): user_id, video_id,
    time_ms as the timestamp and the log column `rating` (is_click, long_view, is_like, ... or
    "watch_ratio": play_time_ms / duration_ms, 1 where the duration is 0, as EasyRL4Rec computes
    it) as the rating. With `video_features` (a file name, or None), items get the text column
    `categories` (the tag ids, "12, 65"): `category: {column: categories, pick: first}`.
    """

    def __init__(
        self,
        directory: str,
        logs: list[str] | None = None,
        video_features: str | None = "video_features_basic_pure.csv",
        rating: str = "is_click",
    ) -> None:
        logs = list(STANDARD_LOGS if logs is None else logs)
        if not logs:
            raise DataError("KuaiRand: `logs` names no log file")
        self.directory = Path(directory).expanduser()
        self.logs = logs
        self.video_features = video_features
        self.rating = rating

    @property
    def paths(self) -> list[Path]:
        return [self.directory / name for name in self.logs]

    @property
    def features_path(self) -> Path | None:
        return self.directory / self.video_features if self.video_features is not None else None

    def load(self) -> RawData:
        interactions = pd.concat([self._log(path) for path in self.paths], ignore_index=True)
        items = video_categories(self.features_path, "tag", bracketed=False) if self.features_path is not None else None
        return RawData(interactions=interactions, items=items, name="kuairand")

    def _log(self, path: Path) -> pd.DataFrame:
        where = str(require_file(path))
        frame = read_lines_table(path, where, sep=",", dtype={"user_id": str, "video_id": str})
        needed = ["play_time_ms", "duration_ms"] if self.rating == WATCH_RATIO else [self.rating]
        require_columns(frame, ["user_id", "video_id", "time_ms", *needed], where)
        if self.rating == WATCH_RATIO:
            played = number_column(frame["play_time_ms"], where, "play_time_ms")
            duration = number_column(frame["duration_ms"], where, "duration_ms")
            rating = (played / duration).replace([np.inf, -np.inf], 1.0).fillna(1.0)
        else:
            rating = number_column(frame[self.rating], where, self.rating)
        return pd.DataFrame(
            {
                "user": integer_id_column(frame["user_id"], where, "user_id"),
                "item": integer_id_column(frame["video_id"], where, "video_id"),
                "timestamp": number_column(frame["time_ms"], where, "time_ms"),
                "rating": rating,
            }
        ).reset_index(drop=True)

    def fingerprint(self) -> str:
        files = [require_file(path) for path in self.paths]
        if self.features_path is not None:
            files.append(require_file(self.features_path))
        options = {"logs": self.logs, "video_features": self.video_features is not None, "rating": self.rating}
        return fingerprint_of(self, options, files)

""" "One user per line" files (`user item item ...`), the format of SASRec and S3Rec data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.columns import require_file


class UserPerLineFile(DataSource):
    """Each non-blank line is a user id followed by that user's items in time order, separated by
    whitespace. The timestamp of an item is its position on the line (0, 1, 2, ...). Ids stay the
    strings written in the file; there is no item metadata.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()

    def load(self) -> RawData:
        require_file(self.path)
        try:
            text = self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{self.path}: not valid utf-8 text ({error.reason} at byte {error.start})") from error
        lines = pd.Series(text.split("\n"), dtype=str)
        lines.index = pd.RangeIndex(1, len(lines) + 1)
        tokens = lines.str.split()
        counts = tokens.str.len()
        tokens = tokens[counts > 0]
        if tokens.empty:
            raise DataError(f"{self.path}: file has no non-blank lines")
        single = counts[counts == 1]
        if not single.empty:
            line = single.index[0]
            raise DataError(
                f"{self.path}: line {line}: only one token {lines[line].strip()!r}; expected 'user item [item ...]'"
            )
        users = tokens.str[0]
        repeated = users[users.duplicated(keep=False)]
        if not repeated.empty:
            lines_of_first = repeated.index[repeated == repeated.iloc[0]].tolist()
            raise DataError(
                f"{self.path}: user {repeated.iloc[0]!r} starts more than one line "
                f"(lines {', '.join(map(str, lines_of_first))}); put all of a user's items on one line"
            )
        items = tokens.str[1:].explode()
        interactions = pd.DataFrame({"user": users.loc[items.index], "item": items.astype(str)})
        interactions["timestamp"] = interactions.groupby(level=0).cumcount().astype("int64")
        return RawData(interactions=interactions.reset_index(drop=True), items=None, name=self.path.stem)

    def fingerprint(self) -> str:
        return fingerprint_of(self, {}, [require_file(self.path)])

"""Your own interactions as one CSV/TSV or Parquet file, with an optional item metadata file."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.columns import (
    id_column,
    number_column,
    number_rows,
    read_lines_table,
    require_columns,
    require_file,
    timestamp_column,
)

_PARQUET = {".parquet", ".pq"}
_SNIFF_BYTES = 1 << 16


class InteractionFile(DataSource):
    """One row per event in a delimited text file (separator sniffed unless `sep` is set) or a
    Parquet file (chosen by the suffix .parquet/.pq).

    Column names are options, so no renaming is needed. Timestamps may be numbers, datetimes
    (Parquet) or ISO 8601 strings; with timestamp_col=None the file order within each user is
    the time order. `item_path` names a CSV/Parquet item file whose `item_id_col` matches the
    interactions' items; all its other columns become item text columns (e.g. title, description).
    Ids are kept exactly as written: in text files they are strings ("007" stays "007").
    """

    def __init__(
        self,
        path: str,
        item_path: str | None = None,
        user_col: str = "user",
        item_col: str = "item",
        timestamp_col: str | None = "timestamp",
        rating_col: str | None = None,
        item_id_col: str = "item",
        sep: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.item_path = Path(item_path).expanduser() if item_path is not None else None
        self.user_col = user_col
        self.item_col = item_col
        self.timestamp_col = timestamp_col
        self.rating_col = rating_col
        self.item_id_col = item_id_col
        self.sep = sep

    def load(self) -> RawData:
        where = str(self.path)
        frame, unit = read_table(self.path, self.sep, [self.user_col, self.item_col])
        required = [self.user_col, self.item_col, self.timestamp_col, self.rating_col]
        require_columns(frame, [name for name in required if name is not None], where)
        interactions = pd.DataFrame(
            {
                "user": id_column(frame[self.user_col], where, self.user_col, unit),
                "item": id_column(frame[self.item_col], where, self.item_col, unit),
            }
        )
        if self.timestamp_col is None:
            interactions["timestamp"] = interactions.groupby("user", sort=False).cumcount().astype("int64")
        else:
            interactions["timestamp"] = timestamp_column(frame[self.timestamp_col], where, self.timestamp_col, unit)
        if self.rating_col is not None:
            interactions["rating"] = number_column(frame[self.rating_col], where, self.rating_col, unit)
        interactions = interactions.reset_index(drop=True)
        items = self._items(self.item_path) if self.item_path is not None else None
        if items is not None and _is_text(items["item"]) != _is_text(interactions["item"]):
            items["item"] = items["item"].astype(str)
            interactions["item"] = interactions["item"].astype(str)
        return RawData(interactions=interactions, items=items, name=self.path.stem)

    def _items(self, path: Path) -> pd.DataFrame:
        where = str(path)
        frame, unit = read_table(path, None, [self.item_id_col])
        require_columns(frame, [self.item_id_col], where)
        ids = id_column(frame[self.item_id_col], where, self.item_id_col, unit)
        repeated = ids[ids.duplicated(keep=False)]
        if not repeated.empty:
            lines = repeated.index[repeated == repeated.iloc[0]].tolist()
            raise DataError(
                f"{where}: field {self.item_id_col!r}: item {repeated.iloc[0]!r} appears more than once "
                f"({unit}s {', '.join(map(str, lines))})"
            )
        text = frame.drop(columns=[self.item_id_col])
        if "item" in text.columns:
            raise DataError(f"{where}: column 'item' clashes with the id column {self.item_id_col!r}; rename one")
        return pd.concat([ids.rename("item"), text], axis=1).reset_index(drop=True)

    def fingerprint(self) -> str:
        """Both files' bytes and the column options; where the files live does not matter."""
        options = {
            "has_items": self.item_path is not None,
            "columns": [self.user_col, self.item_col, self.timestamp_col, self.rating_col, self.item_id_col],
            "sep": self.sep,
        }
        files = [require_file(self.path)] + ([require_file(self.item_path)] if self.item_path is not None else [])
        return fingerprint_of(self, options, files)


def _is_text(ids: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(ids)


def read_table(path: Path, sep: str | None, id_columns: list[str]) -> tuple[pd.DataFrame, str]:
    """A CSV/TSV or Parquet file as a frame indexed by line (text) or row (Parquet) number.

    Returns the frame and the unit its index counts ("line" or "row"), for error messages.
    """
    require_file(path)
    if path.suffix.lower() in _PARQUET:
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"{path}: cannot read as Parquet: {error}") from error
        if frame.empty:
            raise DataError(f"{path}: no data rows")
        return number_rows(frame), "row"
    separator = sep if sep is not None else sniff_separator(path)
    return read_lines_table(path, str(path), sep=separator, dtype={name: str for name in id_columns}), "line"


def sniff_separator(path: Path) -> str:
    """Tab for .tsv, else the delimiter csv.Sniffer finds among , tab ; | (comma if none)."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with path.open("rb") as handle:
        sample = handle.read(_SNIFF_BYTES)
    if len(sample) == _SNIFF_BYTES and b"\n" in sample:
        sample = sample[: sample.rfind(b"\n") + 1]
    try:
        return csv.Sniffer().sniff(sample.decode("utf-8", errors="replace"), delimiters=",\t;|").delimiter
    except csv.Error:
        return ","

"""RecBole atomic files: `<dataset>.inter` and optional `<dataset>.item`, tab-separated with
`name:type` headers (https://recbole.io/docs/user_guide/data/atomic_files.html)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.columns import (
    id_column,
    number_column,
    read_lines_table,
    require_columns,
    require_file,
    timestamp_column,
)

FIELD_TYPES = ("token", "float", "token_seq", "float_seq")


class RecBoleAtomic(DataSource):
    """`<directory>/<dataset>.inter` (+ `<dataset>.item` when present) in RecBole's atomic format.

    The user, item, timestamp and rating fields are found by name (RecBole's defaults below);
    rating is read when the file has it. With timestamp_field=None the file order within each
    user is the time order. Every other field of the .item file becomes an item text column
    (token/token_seq/float_seq as written, float as float64). Ids stay strings, as RecBole reads them.
    """

    def __init__(
        self,
        directory: str,
        dataset: str,
        user_field: str = "user_id",
        item_field: str = "item_id",
        timestamp_field: str | None = "timestamp",
        rating_field: str = "rating",
    ) -> None:
        self.directory = Path(directory).expanduser()
        self.dataset = dataset
        self.user_field = user_field
        self.item_field = item_field
        self.timestamp_field = timestamp_field
        self.rating_field = rating_field

    @property
    def inter_path(self) -> Path:
        return self.directory / f"{self.dataset}.inter"

    @property
    def item_path(self) -> Path:
        return self.directory / f"{self.dataset}.item"

    def load(self) -> RawData:
        where = str(self.inter_path)
        frame, _ = read_atomic(self.inter_path)
        required = [self.user_field, self.item_field] + ([self.timestamp_field] if self.timestamp_field else [])
        require_columns(frame, required, where)
        interactions = pd.DataFrame(
            {
                "user": id_column(frame[self.user_field], where, self.user_field),
                "item": id_column(frame[self.item_field], where, self.item_field),
            }
        )
        if self.timestamp_field is None:
            interactions["timestamp"] = interactions.groupby("user", sort=False).cumcount().astype("int64")
        else:
            interactions["timestamp"] = timestamp_column(frame[self.timestamp_field], where, self.timestamp_field)
        if self.rating_field in frame.columns:
            interactions["rating"] = number_column(frame[self.rating_field], where, self.rating_field)
        items = self._items() if self.item_path.is_file() else None
        return RawData(interactions=interactions.reset_index(drop=True), items=items, name=self.dataset)

    def _items(self) -> pd.DataFrame:
        where = str(self.item_path)
        frame, types = read_atomic(self.item_path)
        require_columns(frame, [self.item_field], where)
        columns = {"item": id_column(frame[self.item_field], where, self.item_field)}
        for name, kind in types.items():
            if name != self.item_field:
                columns[name] = (
                    number_column(frame[name], where, name, missing_ok=True) if kind == "float" else frame[name]
                )
        return pd.DataFrame(columns).reset_index(drop=True)

    def fingerprint(self) -> str:
        """Both files' bytes and the field names; the .item file counts only when it exists."""
        options = {
            "fields": [self.user_field, self.item_field, self.timestamp_field, self.rating_field],
            "has_items": self.item_path.is_file(),
        }
        files = [require_file(self.inter_path)] + ([self.item_path] if self.item_path.is_file() else [])
        return fingerprint_of(self, options, files)


def read_atomic(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """The file as strings indexed by line, columns renamed to bare field names, plus each field's type."""
    require_file(path)
    where = str(path)
    frame = read_lines_table(path, where, sep="\t", dtype=str, quoting=csv.QUOTE_NONE)
    types: dict[str, str] = {}
    for header in frame.columns:
        name, _, kind = str(header).rpartition(":")
        if not name or kind not in FIELD_TYPES:
            raise DataError(
                f"{where}: line 1, field {str(header)!r}: expected 'name:type' "
                f"with type one of {', '.join(FIELD_TYPES)}"
            )
        types[name] = kind
    frame.columns = list(types)
    return frame, types

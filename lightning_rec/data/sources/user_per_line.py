""" "One user per line" files (`user item item ...`), the format of SASRec and S3Rec data, with
S3-Rec's optional `item2attributes.json` as item metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from lightning_rec.data.errors import DataError
from lightning_rec.data.sources.base import DataSource, RawData, fingerprint_of
from lightning_rec.data.sources.columns import require_file


class UserPerLineFile(DataSource):
    """Each non-blank line is a user id followed by that user's items in time order, separated by
    whitespace. The timestamp of an item is its position on the line (0, 1, 2, ...). Ids stay the
    strings written in the file.

    `attributes_path` names an S3-Rec `<name>_item2attributes.json`, `{"item": [attribute ids]}`,
    read as the item column `attributes` ("7, 2, 8, 9", in the file's order: brand, then the category
    path from the root down, so `pick: last` is the most specific category).
    """

    def __init__(self, path: str, attributes_path: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.attributes_path = Path(attributes_path).expanduser() if attributes_path is not None else None

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
        items = item_attributes(self.attributes_path) if self.attributes_path is not None else None
        return RawData(interactions=interactions.reset_index(drop=True), items=items, name=self.path.stem)

    def fingerprint(self) -> str:
        files = [require_file(self.path)]
        if self.attributes_path is not None:
            files.append(require_file(self.attributes_path))
        return fingerprint_of(self, {"has_attributes": self.attributes_path is not None}, files)


def item_attributes(path: Path) -> pd.DataFrame:
    """Items ("item", "attributes") from an S3-Rec item2attributes.json; DataError naming the line
    and column of bad JSON, or the item whose value is not a list of integer ids."""
    require_file(path)
    try:
        table = json.loads(path.read_bytes())
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid utf-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: line {error.lineno}, column {error.colno}: not valid JSON ({error.msg})") from error
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected an object {{item: [attribute ids]}}, found a JSON {type(table).__name__}")
    values = pd.Series(table, dtype=object)
    is_ids = values.map(lambda ids: isinstance(ids, list) and all(type(i) is int for i in ids))
    if not is_ids.all():
        item = values.index[~is_ids.to_numpy()][0]
        raise DataError(f"{path}: item {item!r}: {table[item]!r} is not a list of integer attribute ids")
    attributes = values.map(lambda ids: ", ".join(map(str, ids))).astype(str)
    return pd.DataFrame({"item": values.index.astype(str), "attributes": attributes.to_numpy()})

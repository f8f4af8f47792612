"""Item categories: one id per item from a column of the item table, for session rules that count
how often a kind of item was shown (the field's quit rule) or spread slates over kinds."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pandas as pd
import torch

from lightning_rec.data.errors import DataError

Pick = Literal["whole", "first", "last"]


@dataclasses.dataclass(frozen=True)
class CategoryField:
    """Which item column is the category, and how a list-valued cell gives one category.

    column: any column of the item table (e.g. MovieLens `genres`, S3-Rec `attributes`, KuaiRec
        `categories`, or your own item file's column).
    pick: "whole" takes the cell as it is; "first" / "last" split it on `sep` and take the first
        (MovieLens' first genre) or the last entry (S3-Rec's most specific category).
    """

    column: str
    pick: Pick = "whole"
    sep: str = ","

    def __post_init__(self) -> None:
        if self.pick not in ("whole", "first", "last"):
            raise ValueError(f"CategoryField.pick must be 'whole', 'first' or 'last', got {self.pick!r}")
        if self.pick != "whole" and not self.sep:
            raise ValueError("CategoryField.sep must not be empty when pick is 'first' or 'last'")


def category_ids(info: pd.DataFrame, field: CategoryField) -> tuple[torch.Tensor, list[str]]:
    """LongTensor[N + 1] of category ids (0 for padding and for items without a category) for the
    item table `info` (row i-1 = item i), and the category names (id c is names[c - 1], sorted)."""
    if field.column not in info.columns:
        raise DataError(
            f"category column {field.column!r}: the item table has no such column "
            f"(columns: {', '.join(map(repr, map(str, info.columns)))})"
        )
    values = info[field.column].astype("string").str.strip()
    if field.pick != "whole":
        parts = values.str.split(field.sep, regex=False)
        values = parts.str[0 if field.pick == "first" else -1].str.strip()
    values = values.mask(values == "")
    codes, names = pd.factorize(values, sort=True)
    ids = torch.zeros(len(info) + 1, dtype=torch.long)
    ids[1:] = torch.as_tensor(codes + 1, dtype=torch.long)  # factorize gives -1 for missing: id 0
    return ids, [str(name) for name in names]

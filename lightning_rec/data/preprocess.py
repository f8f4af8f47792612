"""Raw interactions -> compact user sequences (CSR: one flat item tensor plus per-user offsets).

Sequences are stored flat rather than as a [users, longest history] padded matrix, so memory scales
with the number of interactions, not with users x the longest history (MovieLens-20M has users with
thousands of events). Every split and window is then built from this with tensor indexing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lightning_rec.atomic import atomic_path
from lightning_rec.data.errors import DataError
from lightning_rec.data.sources import DataSource, RawData


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """What turns raw events into sequences; part of the cache key."""

    min_rating: float | None = None
    """Implicit feedback: keep only events with rating >= this (needs a rating column)."""
    min_user_interactions: int = 0
    """k-core: users with fewer events are removed (iterated together with the item bound)."""
    min_item_interactions: int = 0
    """k-core: items with fewer events are removed."""
    deduplicate: bool = False
    """Keep only the first event of each (user, item) pair."""
    max_history: int | None = None
    """Keep only each user's most recent events (None: all of them)."""
    items_without_events: bool = False
    """Items of the item file without an event (new items) join the catalogue too, after the items
    with events, in the file's order: one more row in the item file is then one more index at the end,
    every other item keeps its index, and a trained model ranks the new item by its text."""


@dataclasses.dataclass
class SequenceData:
    """All users' chronological sequences; items are 1..N, 0 is padding."""

    items: torch.Tensor  # LongTensor[total events], user by user, oldest first
    timestamps: torch.Tensor  # float64 Tensor[total events]
    ratings: torch.Tensor | None  # FloatTensor[total events] when the data has ratings
    offsets: torch.Tensor  # LongTensor[num_users + 1]; user u owns items[offsets[u]:offsets[u+1]]
    user_ids: list  # original user id of each user index
    item_ids: list  # original item id of item index i is item_ids[i - 1]
    item_info: pd.DataFrame  # one row per item index 1..N (row i-1), text columns from the source

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def user_history(self, user: int) -> torch.Tensor:
        return self.items[self.offsets[user] : self.offsets[user + 1]]


def build_sequences(raw: RawData, options: PreprocessOptions) -> SequenceData:
    """Filter, order and re-index events. Ties in time keep the source's row order (stable sort)."""
    df = raw.interactions
    if len(df) == 0:
        raise DataError(f"dataset {raw.name!r} has no interactions")
    missing = {"user", "item", "timestamp"} - set(df.columns)
    if missing:
        raise DataError(f"dataset {raw.name!r}: interactions lack columns {sorted(missing)}")
    if options.min_rating is not None:
        if "rating" not in df.columns:
            raise DataError(f"min_rating={options.min_rating} needs ratings, but dataset {raw.name!r} has none")
        df = df[df["rating"] >= options.min_rating]
    df = df.reset_index(drop=True)
    df["_row"] = np.arange(len(df))
    df = df.sort_values(["user", "timestamp", "_row"], kind="stable")
    if options.deduplicate:
        df = df.drop_duplicates(["user", "item"], keep="first")
    df = _k_core(df, options.min_user_interactions, options.min_item_interactions)
    if options.max_history is not None:
        df = df.groupby("user", sort=False).tail(options.max_history)
    if len(df) == 0:
        raise DataError(f"dataset {raw.name!r}: no interactions left after filtering with {options}")

    item_codes, item_ids = pd.factorize(df["item"], sort=True)
    if options.items_without_events and raw.items is not None:
        listed = pd.Index(raw.items["item"].drop_duplicates())
        item_ids = item_ids.append(listed[~listed.isin(item_ids)])
    user_codes, user_ids = pd.factorize(df["user"], sort=False)  # already grouped by the sort above
    counts = np.bincount(user_codes, minlength=len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    ratings = None
    if "rating" in df.columns:
        ratings = torch.as_tensor(df["rating"].to_numpy(dtype=np.float32))
    return SequenceData(
        items=torch.as_tensor(item_codes + 1, dtype=torch.long),
        timestamps=torch.as_tensor(df["timestamp"].to_numpy(dtype=np.float64)),
        ratings=ratings,
        offsets=torch.as_tensor(offsets, dtype=torch.long),
        user_ids=list(user_ids),
        item_ids=list(item_ids),
        item_info=_item_info(raw.items, item_ids),
    )


def _k_core(df: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Iterate user and item count filters until both hold (each removal can break the other)."""
    while min_user > 1 or min_item > 1:
        user_counts = df.groupby("user")["item"].transform("size")
        item_counts = df.groupby("item")["user"].transform("size")
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            break
        df = df[keep]
    return df


def _item_info(items: pd.DataFrame | None, item_ids: pd.Index) -> pd.DataFrame:
    """Metadata aligned with item index 1..N; items the metadata lacks get empty text."""
    if items is None:
        return pd.DataFrame({"item": item_ids, "title": [str(i) for i in item_ids]})
    info = items.drop_duplicates("item").set_index("item").reindex(item_ids)
    info.index.name = "item"
    info = info.reset_index()
    if "title" not in info.columns:
        info["title"] = info["item"].astype(str)
    info["title"] = info["title"].where(info["title"].notna(), info["item"].astype(str))
    return info


def cache_key(source: DataSource, options: PreprocessOptions) -> str:
    payload = json.dumps({"source": source.fingerprint(), "options": dataclasses.asdict(options), "v": 1})
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def load_or_build(source: DataSource, options: PreprocessOptions, cache_dir: str | None) -> SequenceData:
    """Preprocess once per (inputs, options); the cache file is written atomically, so an interrupted
    run never leaves a half-written cache, and an unreadable one is rebuilt."""
    if cache_dir is None:
        return build_sequences(source.load(), options)
    path = Path(cache_dir).expanduser() / f"sequences-{cache_key(source, options)}.pt"
    if path.exists():
        try:
            return SequenceData(**torch.load(path, weights_only=False))
        except Exception:  # corrupt or from an incompatible version: rebuild below
            pass
    data = build_sequences(source.load(), options)
    with atomic_path(path) as tmp:
        torch.save(dataclasses.asdict(data), tmp)
    return data

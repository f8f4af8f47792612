"""Torch datasets over the flat sequences. Each fetches a whole batch by tensor indexing
(`__getitems__`), so there is no per-user Python work while training or evaluating."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from lightning_rec.data.preprocess import SequenceData
from lightning_rec.data.splits import TrainingSequences


def gather_windows(items: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, length: int) -> torch.Tensor:
    """Rows of `length` events ending (exclusive) at flat position `ends`, never reaching before
    `starts`, left-padded with 0."""
    idx = ends.unsqueeze(1) - length + torch.arange(length)
    valid = idx >= starts.unsqueeze(1)
    return items[idx.clamp(min=0)] * valid


def window_ends(train_end: torch.Tensor, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the training windows lie: each user's training prefix is cut into windows of max_len + 1
    events, from the most recent backwards, overlapping by one event, so that every event but a
    user's first is a target exactly once with up to max_len events of context. Returns (user, end)
    per window, `end` an exclusive position within the user's sequence."""
    per_user = torch.div(train_end - 1 + max_len - 1, max_len, rounding_mode="floor").clamp(min=0)
    user = torch.repeat_interleave(torch.arange(len(train_end)), per_user)
    k = torch.arange(len(user)) - (torch.cumsum(per_user, 0) - per_user)[user]
    return user, train_end[user] - k * max_len


def training_windows(sequences: TrainingSequences, max_len: int) -> dict[str, torch.Tensor]:
    """The windows of `window_ends` over the `sequences` training sees: "items"
    LongTensor[num_windows, max_len + 1] (left-padded with 0), each window's "user", each event's
    "position" in its user's full sequence (-1 on padding) and, when the data has ratings, each
    event's "ratings" (0 on padding)."""
    data, train_end, positions = sequences
    user, end = window_ends(train_end, max_len)
    starts = data.offsets[user]
    ends = starts + end
    windows = {
        "user": user,
        "items": gather_windows(data.items, starts, ends, max_len + 1),
        "position": gather_windows(positions + 1, starts, ends, max_len + 1) - 1,
    }
    if data.ratings is not None:
        windows["ratings"] = gather_windows(data.ratings, starts, ends, max_len + 1)
    return windows


def keep_batch(batch):
    """collate_fn for datasets that already return whole batches."""
    return batch


class WindowDataset(Dataset):
    """Training windows of `training_windows`; the model predicts window[t + 1] from window[: t + 1].
    Batches {"user", "input", "target", "position"[, "rating"]}: the window's user, and each target's
    position in the user's sequence and rating (-1 and 0 where there is no target), which the
    simulator and the RL stages read and the recommender ignores."""

    def __init__(self, windows: dict[str, torch.Tensor]):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows["user"])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        items = self.windows["items"][idx]
        batch = {
            "user": self.windows["user"][idx],
            "input": items[:, :-1],
            "target": items[:, 1:],
            "position": self.windows["position"][idx, 1:],
        }
        if "ratings" in self.windows:
            batch["rating"] = self.windows["ratings"][idx, 1:]
        return batch


class UserDataset(Dataset):
    """One row per (user, position): the input is the max_len events before the position and the
    history mask all of them; the target is the event at the position (absent when predicting)."""

    def __init__(
        self, data: SequenceData, users: torch.Tensor, positions: torch.Tensor, max_len: int, with_target: bool = True
    ):
        self.data, self.users, self.positions = data, users, positions
        self.max_len, self.with_target = max_len, with_target

    def __len__(self) -> int:
        return len(self.users)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        users, positions = self.users[idx], self.positions[idx]
        starts = self.data.offsets[users]
        ends = starts + positions
        batch = {
            "user": users,
            "input": gather_windows(self.data.items, starts, ends, self.max_len),
            "history": gather_windows(self.data.items, starts, ends, max(int(positions.max()), 1)),
        }
        if self.with_target:
            batch["target"] = self.data.items[ends]
        return batch

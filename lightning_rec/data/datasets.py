"""Torch datasets over the flat sequences. Each fetches a whole batch by tensor indexing
(`__getitems__`), so there is no per-user Python work while training or evaluating."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from lightning_rec.data.preprocess import SequenceData


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


def training_windows(data: SequenceData, train_end: torch.Tensor, max_len: int) -> torch.Tensor:
    """The windows of `window_ends` as LongTensor[num_windows, max_len + 1], left-padded."""
    user, end = window_ends(train_end, max_len)
    starts = data.offsets[user]
    return gather_windows(data.items, starts, starts + end, max_len + 1)


def keep_batch(batch):
    """collate_fn for datasets that already return whole batches."""
    return batch


class WindowDataset(Dataset):
    """Training windows; the model predicts window[t + 1] from window[: t + 1]."""

    def __init__(self, windows: torch.Tensor):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        rows = self.windows[torch.as_tensor(indices)]
        return {"input": rows[:, :-1], "target": rows[:, 1:]}


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

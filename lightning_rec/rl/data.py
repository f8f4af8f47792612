"""Logged data for the RL stages: training windows that also say whose they are and how rated.

The simulator fits one response model per environment on disjoint users, and off-policy REINFORCE
weighs logged events by their rating, so both need each window's user and its events' ratings,
which the plain SequenceDataModule's windows do not carry. Validation and test are unchanged.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_rec.data.datamodule import SequenceDataModule
from lightning_rec.data.datasets import gather_windows, window_ends
from lightning_rec.data.preprocess import SequenceData


def user_windows(data: SequenceData, train_end: torch.Tensor, max_len: int) -> dict[str, torch.Tensor]:
    """The windows of `training_windows` with their user, their end (a position within the user)
    and, when the data has ratings, each event's rating (0 on padding)."""
    user, end = window_ends(train_end, max_len)
    starts = data.offsets[user]
    windows = {"user": user, "end": end, "items": gather_windows(data.items, starts, starts + end, max_len + 1)}
    if data.ratings is not None:
        windows["ratings"] = gather_windows(data.ratings, starts, starts + end, max_len + 1)
    return windows


class LoggedWindowDataset(Dataset):
    """Batches {"user", "end", "input", "target"[, "rating"]}: as WindowDataset, plus the owner of
    each window, where it ends and the rating of each target (0 where there is no target)."""

    def __init__(self, windows: dict[str, torch.Tensor]):
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows["user"])

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices)
        items = self.windows["items"][idx]
        batch = {
            "user": self.windows["user"][idx],
            "end": self.windows["end"][idx],
            "input": items[:, :-1],
            "target": items[:, 1:],
        }
        if "ratings" in self.windows:
            batch["rating"] = self.windows["ratings"][idx, 1:]
        return batch


class LoggedDataModule(SequenceDataModule):
    """SequenceDataModule whose training batches are LoggedWindowDataset batches (same windows,
    same validation and test), for the simulator and the RL policy stages."""

    def train_dataloader(self) -> DataLoader:
        windows = user_windows(self.data, self.split.train_end, self.hparams.max_len)
        return self._loader(LoggedWindowDataset(windows), self.hparams.batch_size, shuffle=True)

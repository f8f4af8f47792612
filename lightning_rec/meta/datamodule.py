"""MetaDataModule: the shared SequenceDataModule, with users split into meta-train, validation and
test users and into segments, serving batches of meta-learning tasks instead of windows."""

from __future__ import annotations

from typing import Literal

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_rec.data.datamodule import SequenceDataModule
from lightning_rec.data.errors import DataError
from lightning_rec.meta.kmeans import kmeans
from lightning_rec.meta.task_batch import (
    ColdStartTaskDataset,
    Segments,
    SegmentTaskDataset,
    TaskBatch,
    cold_start_tasks,
    segment_tasks,
)
from lightning_rec.meta.users import genre_taste


class FixedTaskDataset(Dataset):
    """Tasks built once (evaluation): a batch of indices selects rows of every tensor."""

    def __init__(self, tasks: TaskBatch):
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitems__(self, indices: list[int]) -> TaskBatch:
        idx = torch.as_tensor(indices)
        return self.tasks.apply(lambda t: t[idx])


class OnlineReplayDataset(Dataset):
    """Users replayed event by event: a batch is one cold-start TaskBatch per time step t (support =
    the first t events, query = event t), for t = start .. start + horizon - 1."""

    def __init__(self, data, users: torch.Tensor, start: int, horizon: int):
        self.data, self.users = data, users[data.lengths[users] > start]
        self.start, self.horizon = start, horizon

    def __len__(self) -> int:
        return len(self.users)

    def __getitems__(self, indices: list[int]) -> list[TaskBatch]:
        users = self.users[torch.as_tensor(indices)]
        max_k = self.start + self.horizon - 1
        return [
            cold_start_tasks(self.data, users, torch.full((len(users),), t), 1, max_k, f"online/{t}")
            for t in range(self.start, self.start + self.horizon)
        ]


class MetaDataModule(SequenceDataModule):
    """Meta-learning tasks over one dataset (all SequenceDataModule arguments apply).

    Users are clustered into `num_segments` segments (k-means of genre taste, or with `segment_by:
    encoder` of the user states of the policy being meta-trained, which the stage hands over through
    `segment`: a data module loads no model); `held_out_segments` of them are never trained on and make the
    segment meta-test. The other users are split into meta-train, validation and test users; the
    latter two only ever appear as cold-start tasks (first k events known, the next `num_query` to
    predict); with `cold_start_users: unseen` they are instead the users without any training
    event (a temporal split's users who arrive after the cut: unseen by a pretraining on the same
    split too). Meta-training only reads training events (before each user's `train_end`).
    Meta-training cold-start tasks start at a random event of a meta-train user (`train_anywhere`:
    many more tasks than users, so the outer loop does not overfit a few hundred users' first
    events) or at their first event. Training batches are {"cold_start": TaskBatch, "segment":
    TaskBatch} (a kind is left out when it has no tasks); validation is cold-start at `val_k`; test is
    cold-start at each of `test_ks`, then the held-out segments; predict is the online replay of the test users.
    Segment tasks' windows are `segment_window` events long (default: `max_len`, what the
    pretrained encoder reads).
    """

    def __init__(
        self,
        segment_by: Literal["encoder", "genre"] = "genre",
        num_segments: int = 8,
        held_out_segments: int = 2,
        val_fraction_users: float = 0.1,
        test_fraction_users: float = 0.2,
        train_ks: list[int] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        train_anywhere: bool = True,
        cold_start_users: Literal["random", "unseen"] = "random",
        test_ks: list[int] = [1, 3, 5, 10],
        val_k: int = 5,
        num_query: int = 10,
        tasks_per_batch: int = 16,
        eval_tasks_per_batch: int = 64,
        segment_tasks_per_epoch: int = 0,
        support_windows: int = 8,
        segment_window: int | None = None,
        segment_query: int = 32,
        online_start: int = 1,
        online_horizon: int = 20,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["source"])
        if not 0 <= held_out_segments < num_segments:
            raise ValueError(f"held_out_segments={held_out_segments} must be in [0, num_segments={num_segments})")
        if not (0 < val_fraction_users and 0 < test_fraction_users and val_fraction_users + test_fraction_users < 1):
            raise ValueError(
                f"user fractions must be positive with a sum < 1, got {val_fraction_users}, {test_fraction_users}"
            )
        self.max_k = max([*train_ks, *test_ks, val_k])
        self.segment_window = (
            segment_window if segment_window is not None else self.hparams.max_len
        )  # what the encoder reads
        self.users: dict[str, torch.Tensor] | None = None

    # -- who is in which part --------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.users is None and self.hparams.segment_by == "genre":
            self.segment(genre_taste(self.data, self.split.train_end))

    def segment(self, representations: torch.Tensor) -> None:
        """Cluster the users by `representations` [num_users, D] and deal them into meta-train,
        validation, test and held-out-segment users."""
        hp, generator = self.hparams, torch.Generator().manual_seed(self.hparams.seed)
        eligible = torch.nonzero(self.split.train_end >= 2).squeeze(1)
        if len(eligible) < hp.num_segments:
            raise DataError(
                f"only {len(eligible)} users have 2 or more training events; "
                f"need at least num_segments={hp.num_segments}"
            )
        self.assignment = torch.full((self.data.num_users,), -1, dtype=torch.long)
        self.assignment[eligible] = kmeans(representations[eligible], hp.num_segments, seed=hp.seed)[0]
        order = torch.randperm(hp.num_segments, generator=generator)
        self.held_out, self.train_segments = order[: hp.held_out_segments], order[hp.held_out_segments :]
        in_held_out = torch.isin(self.assignment[eligible], self.held_out)
        rest = eligible[~in_held_out][torch.randperm(int((~in_held_out).sum()), generator=generator)]
        share = hp.val_fraction_users / (hp.val_fraction_users + hp.test_fraction_users)
        if hp.cold_start_users == "unseen":  # users with no training event at all: new to the pretrained model too
            unseen = torch.nonzero((self.split.train_end == 0) & (self.data.lengths > self.max_k)).squeeze(1)
            unseen = unseen[torch.randperm(len(unseen), generator=generator)]
            n_val = int(len(unseen) * share)
            val, test, train = unseen[:n_val], unseen[n_val:], rest
        else:
            n_val, n_test = int(len(rest) * hp.val_fraction_users), int(len(rest) * hp.test_fraction_users)
            val, test, train = rest[:n_val], rest[n_val : n_val + n_test], rest[n_val + n_test :]
        self.users = {"val": val, "test": test, "train": train, "held_out": eligible[in_held_out]}
        for part, users in self.users.items():
            if len(users) == 0 and (part != "held_out" or hp.held_out_segments > 0):
                raise DataError(f"no {part} users: {len(eligible)} eligible users are too few for the requested split")

    # -- loaders ---------------------------------------------------------------------------------
    def train_dataloader(self) -> dict[str, DataLoader]:
        hp = self.hparams
        loaders = {
            "cold_start": self._tasks(
                ColdStartTaskDataset(
                    self.data,
                    self.users["train"],
                    hp.train_ks,
                    hp.num_query,
                    self.max_k,
                    anywhere=hp.train_anywhere,
                    end=self.split.train_end,
                ),
                shuffle=True,
            )
        }
        if hp.segment_tasks_per_epoch > 0:
            segments = Segments(self.assignment, self.users["train"])
            dataset = SegmentTaskDataset(
                self.data,
                self.split.train_end,
                segments,
                self.train_segments,
                hp.segment_tasks_per_epoch,
                hp.support_windows,
                hp.segment_query,
                self.segment_window,
            )
            loaders["segment"] = self._tasks(dataset, shuffle=True, stream=1)  # its tasks' randomness: resume.py
        return loaders

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = ColdStartTaskDataset(
            self.data, self.users["val"], [hp.val_k], hp.num_query, self.max_k, f"cold_start/k{hp.val_k}"
        )
        return self._tasks(dataset, eval=True)

    def test_dataloader(self) -> list[DataLoader]:
        hp = self.hparams
        loaders = [
            self._tasks(
                ColdStartTaskDataset(self.data, self.users["test"], [k], hp.num_query, self.max_k, f"cold_start/k{k}"),
                eval=True,
            )
            for k in hp.test_ks
        ]
        if hp.held_out_segments > 0:
            loaders.append(self._tasks(FixedTaskDataset(self.held_out_segment_tasks()), eval=True))
        return loaders

    def predict_dataloader(self) -> DataLoader:
        dataset = OnlineReplayDataset(
            self.data, self.users["test"], self.hparams.online_start, self.hparams.online_horizon
        )
        return self._tasks(dataset, eval=True)

    def held_out_segment_tasks(self) -> TaskBatch:
        """One task per held-out segment: support = `support_windows` of its users' most recent
        training windows, query = every member's test event (rows padded with user -1)."""
        hp = self.hparams
        generator = torch.Generator().manual_seed(hp.seed + 1)
        segments = Segments(self.assignment, self.users["held_out"])
        support_users = segments.sample(self.held_out, hp.support_windows, generator)
        members = [
            segments.members[segments.first[s] : segments.first[s] + segments.counts[s]] for s in self.held_out.tolist()
        ]
        query_users = torch.nn.utils.rnn.pad_sequence(members, batch_first=True, padding_value=-1)
        test_position = torch.zeros(self.data.num_users, dtype=torch.long)
        test_position[self.split.test_users] = self.split.test_positions
        query_positions = torch.where(query_users >= 0, test_position[query_users.clamp(min=0)], 1)
        query_users = torch.where(query_positions > 0, query_users, -1)  # users without a test event
        return segment_tasks(
            self.data,
            self.held_out,
            support_users,
            self.split.train_end[support_users],
            query_users,
            query_positions.clamp(min=1),
            self.segment_window,
            "segment/held_out",
        )

    def _tasks(self, dataset: Dataset, shuffle: bool = False, eval: bool = False, stream: int = 0) -> DataLoader:
        size = self.hparams.eval_tasks_per_batch if eval else self.hparams.tasks_per_batch
        return self._loader(dataset, min(size, max(len(dataset), 1)), shuffle=shuffle, stream=stream)
